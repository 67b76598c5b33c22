"""Deterministic crash and interleaving simulation of every document path (tests only).

In the spirit of FoundationDB's simulation testing and Jepsen's invariant checks, but on the real
parts: the registered functions (``devtools.host.LocalHost``), Azurite and the loopback emulators.

    world = World.create(azurite)                        # fresh containers, table, queue, emulators
    world.drop("11287/supplier/a.pdf", data)
    world.interceptor.arm(7, "after")                    # crash point #7 (from 0): the process dies
    world.run()                                          # deliveries, queue, pushes, ticks until settled
    problems = world.check()                             # the invariants; [] when they hold

``Interceptor`` sits under every HTTP call the app makes (Azure SDK and ``requests`` share
``requests.Session.send``). It names each call (``tests.support.calls``: the app functions on the
stack, the service and the operation) and can raise ``SimulatedCrash`` (a ``BaseException``:
nothing in the app catches it) before a call leaves or after its answer came back. Every storage
write and every Inqom or enFact call is a *crash point*. ``World.run`` then recovers as Azure
would (``AzureRecovery``): a failed or crashed blob delivery is redelivered up to host.json's
``poisonBlobThreshold``; a queue message reappears after its visibility timeout up to
``maxDequeueCount``, then goes to the poison queue; a push sender retries until it gets a 2xx;
timers keep ticking while the ledger clock advances, so claims and leases lapse. A crashed
process is a new process: services are rebuilt.

Each invocation is one *process* (``Process``, held in a context variable, so the threads a
function starts with ``contextvars.copy_context()`` — the poll tick's workers — belong to it):
when one of its threads crashes, the whole process is dead and its other threads die at their next
call. The interceptor also keeps what the invariants need, all from what it saw on the wire:
every upload POST and the blob version it sent (``Send``), the Inqom ids answered, the crashes
that came after a process sent something, every takeover of an upload claim and whether the claim
had lapsed (``Takeover``), and the invoices enFact listed.

``Scheduler`` steps several invocations (threads) through the orders of their calls: at each
call, one runnable actor is chosen by a seeded random generator (a clock advance is an actor too),
or by seeded priorities with a stall at a drawn step (PCT), the clock jumping while one stalls.
Tasks an actor starts through a ``ThreadPoolExecutor`` (the poll tick's workers) are actors too,
named after their parent (``tick/0``): the parent waiting on them is at rest while they run.

``after_equals_next_before`` says, from a clean trace, which "crash after #i" runs provably end as
"crash before #i+1" does, so the enumeration runs only one of the two.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextvars
import hashlib
import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import requests

from shared.config import get_settings
from shared.ledger.rows import FINAL_STATES, ledger_key, parse_iso, partition_for
from shared.observability import ContextFilter
from shared.services import Services, get_services
from shared.enfact.webhook import sign
from tests.emulators.enfact import EnfactEmulator
from tests.emulators.inqom import InqomEmulator
from tests.support.appsettings import (
    ENFACT_COMPANY, ENFACT_SESSION_KEY, INQOM_CREDENTIALS, WEBHOOK_SECRET, app_settings,
)
from tests.support.calls import Call, Classifier, VersionKey
from tests.support.invariants import Invariants

REPO = Path(__file__).resolve().parents[2]
_HOST = json.loads((REPO / "host.json").read_text())
POISON_BLOB_THRESHOLD = int(_HOST["extensions"]["blobs"]["poisonBlobThreshold"])
MAX_DEQUEUE_COUNT = int(_HOST["extensions"]["queues"]["maxDequeueCount"])
PUSH_ATTEMPTS = 5
_UPLOADING = "Uploading"



class SimulatedCrash(BaseException):
    """The process dies here (not an ``Exception``: no handler in the app sees it)."""


@dataclass
class Process:
    """One invocation: a process of its own, with every thread it starts in a copied context."""

    serial: int
    label: str
    told: list[int] = field(default_factory=list)  # Inqom ids answered to its uploads
    sent: set[VersionKey] = field(default_factory=set)  # blob versions it POSTed (Inqom may hold them)
    dead: bool = False
    ended: bool = False


_PROCESS: contextvars.ContextVar[Process | None] = contextvars.ContextVar("simulated_process", default=None)




@dataclass(frozen=True)
class Send:
    """One upload POST as the harness saw it."""

    version: VersionKey | None
    op: str
    status: int | None  # None: no answer came back (connection lost, timeout)
    document_id: int | None  # the id the answer named, when it could be read
    process: int

    @property
    def reached(self) -> bool:
        """Inqom may hold a document for it: answered 2xx, or no answer at all."""
        return self.status is None or self.status < 300


@dataclass(frozen=True)
class Takeover:
    """A claim of an upload written over another worker's ``Uploading`` claim."""

    version: VersionKey
    stalled: bool  # the claim had lapsed (the harness's clock is past its ``ClaimUntil``)
    holder_running: bool  # the worker that held it was alive and still in its invocation
    claim_until: str

    @property
    def allows_resend(self) -> bool:
        """A live worker's lapsed claim: both it and the new claimant may send (and must both be named)."""
        return self.stalled and self.holder_running


@dataclass
class Stats:
    """What the harness ran, for the terminal summary and the README."""

    crash_runs: int = 0
    equivalent_skipped: int = 0
    double_fault_runs: int = 0
    schedules: int = 0
    watchdog_schedules: int = 0
    takeover_schedules: int = 0
    poll_worker_steps: int = 0
    invariant_checks: int = 0
    versions_checked: int = 0
    invoices_checked: int = 0
    violations: int = 0
    crash_points: dict[str, set[str]] = field(default_factory=dict)  # scenario -> point names

    def summary(self) -> str:
        points = sum(len(names) for names in self.crash_points.values())
        lines = [f"simulation: {points} distinct crash points in {len(self.crash_points)} scenarios, "
                 f"{self.crash_runs} crash × recovery runs ({self.equivalent_skipped} 'after' runs skipped as "
                 f"equal to the next 'before'), {self.double_fault_runs} double-fault runs, "
                 f"{self.schedules} interleaving schedules ({self.watchdog_schedules} raced the poller's "
                 f"watchdog upload, {self.takeover_schedules} took over a lapsed claim, "
                 f"{self.poll_worker_steps} poll-worker steps), {self.invariant_checks} invariant checks "
                 f"({self.versions_checked} blob versions and {self.invoices_checked} invoices accounted, "
                 f"sends counted), {self.violations} violations"]
        return "\n".join(lines)


STATS = Stats()


class Interceptor:
    """Names, records and (when armed) crashes the app's outgoing HTTP calls."""

    def __init__(self, ports: dict[int, str], roles: dict[str, str],
                 clock: Callable[[], datetime] | None = None,
                 peek_row: Callable[[str, str], Any] | None = None) -> None:
        self.classifier = Classifier(ports, roles)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.peek_row = peek_row  # (partition, row key) -> the ledger row as stored now (read quietly)
        self.trace: list[Call] = []
        self.crashable: list[Call] = []
        self.overwrites: list[str] = []
        self.crashed: list[tuple[int, str, str]] = []  # (crashable index, mode, point name) of armed crashes
        self.sends: list[Send] = []
        self.answers: dict[int, VersionKey | None] = {}  # Inqom id -> the version whose upload it answered
        self.crashes_after_send: Counter[VersionKey] = Counter()
        self.takeovers: list[Takeover] = []
        self.listed: set[tuple[str, str, str]] = set()  # (company, invoice id, date) enFact listed
        self.processes: dict[int, Process] = {}
        self._claims: dict[tuple[str, str, int], int] = {}  # (partition, key, Attempts) -> holding process
        self._created: set[str] = set()
        self._armed: dict[int, str] = {}
        self._serials = itertools.count(1)
        self._local = threading.local()
        self.scheduler: Scheduler | None = None
        self._lock = threading.Lock()
        #: Per store, bumped after every request that may have changed it (quiet or not): the harness's
        #: reads of blobs, document rows and due index entries stay valid while their count is unchanged.
        self.writes: Counter[str] = Counter()

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """The harness's own storage calls: not recorded, never crashed, never scheduled."""
        previous = getattr(self._local, "quiet", False)
        self._local.quiet = True
        try:
            yield
        finally:
            self._local.quiet = previous

    def new_process(self, label: str) -> Process:
        process = Process(next(self._serials), label)
        with self._lock:
            self.processes[process.serial] = process
        return process

    def arm(self, index: int, mode: str) -> None:
        """Crash the ``index``-th crashable call of the run (``before`` it leaves or ``after`` its answer).
        Arm twice for a double fault."""
        self._armed[index] = mode

    def send(self, original: Callable, session: requests.Session, request: requests.PreparedRequest, **kwargs: Any):
        store = self.classifier.store_written(request)
        if store is None:
            return self._send(original, session, request, **kwargs)
        try:
            return self._send(original, session, request, **kwargs)
        finally:  # after the answer: a read made while the write was in flight is not taken as current
            with self._lock:
                self.writes[store] += 1


    def _send(self, original: Callable, session: requests.Session, request: requests.PreparedRequest, **kwargs: Any):
        if getattr(self._local, "quiet", False):
            return original(session, request, **kwargs)
        process = _PROCESS.get()
        call = self.classifier.call(request, process.serial if process else 0)
        if process is not None and process.dead:  # another thread of this process crashed: this one dies too
            raise SimulatedCrash(f"{call.name} (its process died)")
        if self.scheduler is not None and call.target != "budget":  # the rate budget's own row: plumbing
            self.scheduler.yield_point(call)
        replaced = self._row_before_claim(call)
        with self._lock:
            self.trace.append(call)
            crash_mode = index = None
            if call.crashable:
                index = len(self.crashable)
                self.crashable.append(call)
                crash_mode = self._armed.get(index)
            forced = self.scheduler.take_crash() if self.scheduler is not None else False
        if crash_mode == "before" or forced:
            self._die(process, call, index, crash_mode)
            raise SimulatedCrash(call.name)
        uploading = call.service == "inqom" and call.op.startswith("upload")
        try:
            response = original(session, request, **kwargs)
        except Exception:
            if uploading:  # no answer: Inqom may well have made the document
                self._record_send(call, process, None, None)
            raise
        self._watch_writes(call, request, response)
        if uploading:
            document_id = _document_id(response) if response.status_code < 300 else None
            self._record_send(call, process, response.status_code, document_id)
            if document_id is not None and crash_mode is None and process is not None:
                process.told.append(document_id)
        elif call.service == "table" and response.status_code < 300:
            self._watch_claims(call, request, process, replaced)
        elif call.service == "enfact" and call.op == "list" and response.status_code < 300:
            self._watch_list(request, response)
        if crash_mode == "after":
            response.close()
            self._die(process, call, index, crash_mode)
            raise SimulatedCrash(call.name)
        return response

    # ------------------------------------------------------------ what the harness keeps
    def _die(self, process: Process | None, call: Call, index: int | None, armed: str | None) -> None:
        with self._lock:
            if armed is not None and index is not None:
                self.crashed.append((index, armed, call.name))
            if process is not None and not process.dead:
                process.dead = True
                for version in process.sent:  # a crash after the send: the id may be lost with the process
                    self.crashes_after_send[version] += 1

    def _record_send(self, call: Call, process: Process | None, status: int | None, document_id: int | None) -> None:
        send = Send(call.version, call.op, status, document_id, process.serial if process else 0)
        with self._lock:
            self.sends.append(send)
            if document_id is not None:
                self.answers[document_id] = call.version
            if send.reached and process is not None and call.version is not None:
                process.sent.add(call.version)

    @staticmethod
    def _is_claim(call: Call) -> bool:
        return (call.service == "table" and call.target == "row" and call.op in ("insert", "replace")
                and "rows.claim_upload" in call.chain)

    def _row_before_claim(self, call: Call) -> Any:
        """The row an upload claim is about to replace, as stored now (a successful conditional write replaces it)."""
        if self.peek_row is None or call.op != "replace" or call.keys is None or not self._is_claim(call):
            return None
        return self.peek_row(*call.keys)

    def _watch_claims(self, call: Call, request: requests.PreparedRequest, process: Process | None,
                      replaced: Any) -> None:
        """Who holds each upload claim (its ``Attempts`` number), and every takeover of an ``Uploading`` claim."""
        if not self._is_claim(call):
            return
        body = _json_body(request)
        partition, key = call.keys or (body.get("PartitionKey", ""), body.get("RowKey", ""))
        try:
            attempts = int(body.get("Attempts"))
        except (TypeError, ValueError):
            return
        with self._lock:
            self._claims[(partition, key, attempts)] = process.serial if process else 0
        if replaced is None or replaced.get("State") != _UPLOADING:
            return  # a first claim, or the retry of a failed attempt: nobody else may be sending
        until = parse_iso(replaced.get("ClaimUntil") or None)
        holder = self.processes.get(self._claims.get((partition, key, int(replaced.get("Attempts") or 0)), -1))
        takeover = Takeover(version=(replaced.get("BlobPath") or "", str(replaced.get("BlobETag") or "").strip('"')),
                            stalled=until is None or until <= self.clock(),
                            holder_running=holder is not None and not holder.dead and not holder.ended,
                            claim_until=replaced.get("ClaimUntil") or "")
        with self._lock:
            self.takeovers.append(takeover)

    def _watch_list(self, request: requests.PreparedRequest, response: requests.Response) -> None:
        """The invoices enFact listed to the app (reconcile): each must end up accounted for."""
        try:
            payload = response.json()
        except ValueError:
            return
        items = (payload.get("items") or payload.get("data") or []) if isinstance(payload, dict) else payload
        company = str(request.headers.get("X-COMPANY-UUID", "")).strip().lower()
        with self._lock:
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and item.get("id") not in (None, ""):
                    self.listed.add((company, str(item["id"]), str(item.get("date") or "")[:10]))

    def _watch_writes(self, call: Call, request: requests.PreparedRequest, response: requests.Response) -> None:
        """Invariant 3: an archive or quarantine blob is created once and never deleted by the app."""
        if call.service != "blob" or response.status_code >= 300:
            return
        role, _, path = call.target.partition(":")
        if role not in ("archive", "quarantine"):
            return
        if call.op in ("put", "copy", "commit"):
            with self._lock:
                if path in self._created:
                    self.overwrites.append(f"{role} blob {path} written twice ({call.name})")
                self._created.add(path)
        elif call.op == "delete":
            self.overwrites.append(f"{role} blob {path} deleted ({call.name})")



def _document_id(response: requests.Response) -> int | None:
    """The document id an upload answer names (``Id`` or ``DocumentId``), None when it names none."""
    try:
        payload = response.json()
        payload = payload[0] if isinstance(payload, list) and len(payload) == 1 else payload
        value = payload.get("Id") or payload.get("DocumentId") if isinstance(payload, dict) else None
        return int(value) if value not in (None, "") else None
    except (ValueError, TypeError, AttributeError):
        return None


def _json_body(request: requests.PreparedRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}










@contextmanager
def intercepting(interceptor: Interceptor) -> Iterator[Interceptor]:
    original = requests.Session.send

    def send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any):
        return interceptor.send(original, session, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    try:
        yield interceptor
    finally:
        requests.Session.send = original  # type: ignore[method-assign]


class _WatchedFuture(concurrent.futures.Future):
    """A scheduled actor's pool future: while its parent waits on it, the parent is at rest."""

    _sim_waiting: Callable[[], Any]

    def result(self, timeout: float | None = None) -> Any:
        with self._sim_waiting():
            return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        with self._sim_waiting():
            return super().exception(timeout)


class Scheduler:
    """Steps registered actor threads one call at a time, in an order drawn from ``seed``.

    An actor is at rest when it is parked at a call, done, or waiting on its pool children while
    some of them still run; the next step is chosen only when every actor is at rest, so the order
    depends on the seed alone, not on thread timing.
    """

    def __init__(self, seed: int, crash_probability: float = 0.0, priorities: bool = False,
                 change_points: int = 2, horizon: int = 30, skip: int = 0, not_first: tuple[str, ...] = (),
                 stalls_jump: bool = True) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        # PCT (probabilistic concurrency testing): with ``priorities`` the highest-priority runnable actor
        # always goes, and at ``change_points`` steps drawn below ``horizon`` the one about to go drops to
        # the lowest priority: schedules in which one worker stalls mid-way while the others run on (no
        # change point among the first ``skip`` steps). With ``stalls_jump`` the clock jumps at a stall (it
        # lasts long enough for claims to lapse); without, the clock never jumps (the claims stay live).
        self._priorities = priorities
        self._priority: dict[str, float] = {}
        self._changes = set(self.rng.sample(range(skip, horizon), change_points)) if priorities else set()
        self._lowest = 0.0
        self._decisions = 0
        self._not_first = not_first  # actors never given the highest priority (e.g. a timer that fires later)
        self._stalls_jump = stalls_jump
        self.steps: list[str] = []
        self.crashed_actor: str | None = None
        self._crash_probability = crash_probability
        self._crash_next: str | None = None
        self._crashed = False
        self._local = threading.local()
        self._cond = threading.Condition()
        self._actors: list[str] = []
        self._parked: set[str] = set()
        self._done: set[str] = set()
        self._children: dict[str, set[str]] = {}  # parent -> its pool children still running
        self._waiting: dict[str, int] = {}  # parent -> how many waits on its children it is in
        self._spawned: dict[str, int] = {}
        self._go: str | None = None

    def current(self) -> str | None:
        return getattr(self._local, "actor", None)

    def yield_point(self, call: Call) -> None:
        actor = self.current()
        if actor is None:
            return  # not a scheduled thread (emulators, a claim keeper)
        with self._cond:
            self._parked.add(actor)
            self._cond.notify_all()
            while self._go != actor:
                self._cond.wait()
            self.steps.append(f"{actor}: {call.name}")
            self._go = None
            self._cond.notify_all()

    def pause(self, label: str) -> None:
        """A step that is no call (e.g. before the tick reads the clock): other actors may go first."""
        self.yield_point(Call("sim", label, "", ""))

    def take_crash(self) -> bool:
        actor = self.current()
        if actor is not None and actor == self._crash_next:
            self._crash_next = None
            self.crashed_actor = actor
            return True
        return False

    # ------------------------------------------------------------ pool threads are actors too
    def _finish(self, actor: str, parent: str | None = None) -> None:
        with self._cond:
            self._done.add(actor)
            self._parked.discard(actor)
            if parent is not None:
                self._children.get(parent, set()).discard(actor)
            self._cond.notify_all()

    @contextmanager
    def _waits(self, parent: str) -> Iterator[None]:
        with self._cond:
            self._waiting[parent] = self._waiting.get(parent, 0) + 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._waiting[parent] -= 1
                self._cond.notify_all()

    def _at_rest(self, actor: str) -> bool:
        return (actor in self._parked or actor in self._done
                or (self._waiting.get(actor, 0) > 0 and bool(self._children.get(actor))))

    def _choose(self, runnable: list[str]) -> tuple[str, bool]:
        """The actor to step, and whether one stalled (a change point) just before."""
        if not self._priorities:
            return self.rng.choice(runnable), False
        decision, self._decisions = self._decisions, self._decisions + 1
        first = max(runnable, key=lambda actor: (self._priority[actor], actor))
        if decision not in self._changes:
            return first, False
        self._lowest -= 1
        self._priority[first] = self._lowest  # it stalls: every other actor goes first from now on
        return max(runnable, key=lambda actor: (self._priority[actor], actor)), True

    @contextmanager
    def _pools_scheduled(self) -> Iterator[None]:
        """``ThreadPoolExecutor.submit`` from an actor registers the task as a child actor."""
        pool_class = concurrent.futures.ThreadPoolExecutor
        original_submit, original_shutdown = pool_class.submit, pool_class.shutdown
        scheduler = self

        def submit(pool, fn, /, *args, **kwargs):
            parent = scheduler.current()
            if parent is None:
                return original_submit(pool, fn, *args, **kwargs)
            with scheduler._cond:
                number = scheduler._spawned.get(parent, 0)
                scheduler._spawned[parent] = number + 1
                child = f"{parent}/{number}"
                scheduler._priority[child] = scheduler._priority.get(parent, 0.0) - (number + 1) / 1000
                scheduler._actors.append(child)
                scheduler._children.setdefault(parent, set()).add(child)

            def run():
                scheduler._local.actor = child
                try:
                    scheduler.pause("start")  # one at a time from its first line: which task takes which row
                    return fn(*args, **kwargs)  # is the seed's choice, not the threads' start-up race
                finally:
                    scheduler._local.actor = None
                    scheduler._finish(child, parent)

            future = original_submit(pool, run)
            future.__class__ = _WatchedFuture
            future._sim_waiting = lambda: scheduler._waits(parent)
            return future

        def shutdown(pool, wait=True, *, cancel_futures=False):
            parent = scheduler.current()
            if parent is None or not wait:
                return original_shutdown(pool, wait, cancel_futures=cancel_futures)
            with scheduler._waits(parent):
                return original_shutdown(pool, wait, cancel_futures=cancel_futures)

        pool_class.submit, pool_class.shutdown = submit, shutdown  # type: ignore[method-assign]
        try:
            yield
        finally:
            pool_class.submit, pool_class.shutdown = original_submit, original_shutdown  # type: ignore[method-assign]

    def run(self, actors: dict[str, Callable[[], Any]], clock_events: list[Callable[[], None]],
            clock_not_before: int = 0) -> list[str]:
        """Run ``actors`` to their end; the clock events are runnable once ``clock_not_before`` steps were taken."""

        def body(name: str, fn: Callable[[], Any]) -> None:
            self._local.actor = name
            try:
                fn()
            finally:
                self._local.actor = None
                self._finish(name)

        with self._cond:
            self._actors.extend(actors)
            order = list(actors)
            if self._priorities:
                self.rng.shuffle(order)
                swap = next((i for i, name in enumerate(order) if name not in self._not_first), 0)
                order[0], order[swap] = order[swap], order[0]
            self._priority.update({name: float(len(order) - rank) for rank, name in enumerate(order)})
        threads = [threading.Thread(target=body, args=(n, f), name=f"sim-{n}", daemon=True) for n, f in actors.items()]
        with self._pools_scheduled():
            for thread in threads:
                thread.start()
            pending_clock = list(clock_events)
            while True:
                with self._cond:
                    deadline = time.monotonic() + 10
                    while not all(self._at_rest(a) for a in self._actors) and time.monotonic() < deadline:
                        self._cond.wait(0.05)
                    clock = pending_clock and len(self.steps) >= clock_not_before and not self._priorities
                    runnable = sorted(self._parked) + (["clock"] if clock else [])
                    if not runnable:
                        if set(self._actors) <= self._done:
                            break
                        raise RuntimeError(f"seed {self.seed}: actors neither parked nor done: "
                                           f"{set(self._actors) - self._done}")
                    choice, stalled = self._choose(runnable)
                    if stalled and pending_clock and self._stalls_jump:  # a long stall: the clock jumps
                        self.steps.append("clock: advance")
                        pending_clock.pop(0)()
                    if choice == "clock":
                        self.steps.append("clock: advance")
                        pending_clock.pop(0)()
                        continue
                    if not self._crashed and self.rng.random() < self._crash_probability:
                        self._crashed = True
                        self._crash_next = choice
                    self._parked.discard(choice)
                    self._go = choice
                    self._cond.notify_all()
                    while self._go is not None:  # the chosen actor has taken its turn before the next choice
                        self._cond.wait()
            for thread in threads:
                thread.join(timeout=30)
        return self.steps


@dataclass
class Version:
    name: str
    etag: str
    data: bytes
    event: bool = True
    enfact_id: str | None = None  # the enFact invoice it carries (blob metadata ``enfactid``)
    replaced: bool = False  # its sender overwrote it in the inbox (a scanner reusing a name)

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.data).hexdigest().upper()


class AzureRecovery:
    """What Azure does with a world until it settles: blob events redelivered up to ``poisonBlobThreshold``,
    queue messages up to ``maxDequeueCount`` (then the poison queue), pushes retried until a 2xx, timers.

        recovery = AzureRecovery(world)                  # World builds its own: ``world.recovery``
        recovery.run()                                   # what ``world.run()`` does
        recovery.settled()                               # nothing left to deliver, every row final
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.poisoned: list[str] = []
        self.reconcile_again = False
        self._queue_empty_at = -1  # the queue's write count when it was last seen empty

    def deliver_events(self) -> None:
        world = self.world
        self._discover_inbox()
        for version_key in list(world.events):
            name = version_key[0]
            outcome = world.invoke(f"blob {name}", lambda: world.host.deliver_blob("upload_document", name))
            if outcome == "ok":
                del world.events[version_key]
                continue
            world.events[version_key] += 1
            if world.events[version_key] >= POISON_BLOB_THRESHOLD:
                del world.events[version_key]
                self.poisoned.append(f"blob {name}")

    def _inbox(self) -> list[Any]:
        world = self.world
        inbox = world.services().stores.container(world.services().settings.inbox_container)
        return world.unchanged("inbox", "blob", lambda: list(inbox.list_blobs(include=["metadata"])))

    def _discover_inbox(self) -> None:
        """Blobs the app itself wrote into the inbox (enFact) raise BlobCreated too."""
        world = self.world
        for blob in self._inbox():
            key = (blob.name, blob.etag.strip('"'))
            if key not in world.versions:
                with world.interceptor.quiet():
                    inbox = world.services().stores.container(world.services().settings.inbox_container)
                    data = inbox.get_blob_client(blob.name).download_blob().readall()
                world.versions[key] = Version(blob.name, key[1], data, True, (blob.metadata or {}).get("enfactid"))
                world.events[key] = 0

    def _queue_empty(self) -> bool:
        """Whether the enFact queue held nothing at the last look and nothing was sent to it since."""
        return self._queue_empty_at == self.world.interceptor.writes["queue"]

    def deliver_queue(self) -> None:
        world = self.world
        if self._queue_empty():
            return
        settings = world.services().settings
        writes = world.interceptor.writes["queue"]
        with world.interceptor.quiet():
            queue = world.services().stores.queue(settings.enfact_queue)
            messages = list(queue.receive_messages(messages_per_page=8, visibility_timeout=30))
        if not messages:
            self._queue_empty_at = writes
        for message in messages:
            outcome = world.invoke("queue", lambda: world.host.deliver_queue_message(
                "enfact_fetch", message.content, message.dequeue_count, message.id))
            with world.interceptor.quiet():
                if outcome == "ok":
                    queue.delete_message(message)
                elif message.dequeue_count >= MAX_DEQUEUE_COUNT:
                    world.services().stores.queue(f"{settings.enfact_queue}-poison").send_message(message.content)
                    queue.delete_message(message)
                    self.poisoned.append(f"queue {message.content}")
                else:  # its visibility timeout lapses: it reappears
                    queue.update_message(message, visibility_timeout=0)

    def deliver_pushes(self) -> None:
        world = self.world
        for push in list(world.pushes):
            timestamp = int(time.time())
            headers = {"Content-Type": "application/json", "webhook-id": push["id"],
                       "webhook-timestamp": str(timestamp),
                       "webhook-signature": sign(WEBHOOK_SECRET, push["id"], timestamp, push["body"])}
            answer: dict[str, int] = {}

            def call() -> None:
                response = world.host.call_http("enfact_webhook", "POST", "http://localhost/api/enfact/invoices",
                                                headers, push["body"])
                answer["status"] = response.status_code

            world.invoke("push", call)
            push["attempts"] += 1
            if 200 <= answer.get("status", 500) < 300 or push["attempts"] >= PUSH_ATTEMPTS:
                world.pushes.remove(push)

    def run(self, rounds: int = 30, minutes_per_round: float = 20) -> None:
        """Drive everything until settled: pushes, queue, blob events, ticks, a reconcile now and then."""
        world = self.world
        for round_number in range(rounds):
            self.deliver_pushes()
            self.deliver_queue()
            self.deliver_events()
            world.tick()
            if round_number in world.reconcile_rounds or self.reconcile_again:
                # A reconcile that crashed or failed runs again at the timer's next occurrence.
                outcome = world.invoke("reconcile", lambda: world.host.fire_timer("enfact_reconcile"))
                self.reconcile_again = outcome != "ok"
            if round_number in world.after_round:
                world.after_round.pop(round_number)(world)
            if self.settled():
                return
            world.advance(minutes=minutes_per_round)

    def settled(self) -> bool:
        world = self.world
        if world.pushes or world.events or self.reconcile_again:
            return False
        services = world.services()
        if not self._queue_empty():
            writes = world.interceptor.writes["queue"]
            with world.interceptor.quiet():
                if services.stores.queue(services.settings.enfact_queue).peek_messages(max_messages=1):
                    return False
            self._queue_empty_at = writes
        self._discover_inbox()
        if world.events:
            return False
        rows = world.rows()
        recorded = {(entry.partition, entry.key) for entry in rows}
        inbox = services.settings.inbox_container
        if any((partition_for(blob.name), ledger_key(inbox, blob.name, blob.etag)) not in recorded
               for blob in self._inbox()):
            return False  # a blob nobody was told about waits for the repair sweep
        return all(entry.state in FINAL_STATES for entry in rows)


class World:
    """One fresh deployment: its own containers, table and queue in Azurite, its own emulators."""

    def __init__(self, env: dict[str, str], azurite: Any, inqom: InqomEmulator, enfact: EnfactEmulator) -> None:
        self.env = env
        self.inqom = inqom
        self.enfact = enfact
        self.offset = timedelta(0)
        self.versions: dict[tuple[str, str], Version] = {}
        self.events: dict[tuple[str, str], int] = {}
        self.pushes: list[dict[str, Any]] = []
        self.pushed: list[str] = []  # every invoice id pushed (each must end accounted for)
        self.crashes = 0
        self.failures: list[str] = []
        self.step_problems: list[str] = []
        self.log_lines: list[str] = []
        self.reconcile_rounds: set[int] = set()
        self.after_round: dict[int, Callable[["World"], None]] = {}  # what happens in the world between rounds
        self.must_name: set[int] = set()
        #: One invoice however it arrives (invariant 11): inbox names and enFact invoice ids → the scenario's label.
        self.invoice_of: dict[str, str] = {}
        import function_app
        from devtools.host import LocalHost

        self.host = LocalHost(function_app.app)
        settings = self.services().settings
        roles = {settings.inbox_container: "inbox", settings.archive_container: "archive",
                 settings.quarantine_container: "quarantine", settings.ledger_table: "ledger",
                 settings.enfact_queue: "enfact-queue"}
        ports = {azurite.blob_port: "blob", azurite.table_port: "table", azurite.queue_port: "queue",
                 inqom.port: "inqom", enfact.port: "enfact"}
        self.interceptor = Interceptor(ports, roles, clock=self.now, peek_row=self._peek_row)
        self._reads: dict[str, tuple[int, Any]] = {}  # what -> (its store's write count when read, result)
        self.invariants = Invariants(self, STATS)
        self.recovery = AzureRecovery(self)

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    @contextmanager
    def create(cls, azurite: Any, **overrides: str) -> Iterator["World"]:
        saved = dict(os.environ)
        with InqomEmulator(**INQOM_CREDENTIALS, status_flow=("Received", "Processing", "Done")) as inqom, \
                EnfactEmulator(session_key=ENFACT_SESSION_KEY, companies={ENFACT_COMPANY: []}) as enfact:
            env = app_settings(azurite, inqom, enfact, HTTP_BACKOFF_CAP_SECONDS="0.01", HTTP_READ_TIMEOUT_SECONDS="5",
                               HTTP_MAX_ATTEMPTS="2", REPAIR_GRACE_MINUTES="30", **overrides)
            os.environ.update(env)
            get_settings.cache_clear()
            get_services.cache_clear()
            try:
                world = cls(env, azurite, inqom, enfact)
                queue = world.services().settings.enfact_queue
                world.services().ensure_storage(extra_queues=(f"{queue}-poison",))
                handler = _Capture(world.log_lines)
                root, sdk = logging.getLogger(), logging.getLogger("azure")
                levels = root.level, sdk.level
                root.addHandler(handler)
                root.setLevel(logging.INFO)
                sdk.setLevel(logging.WARNING)  # as host.json sets Azure.Core / Azure.Storage
                try:
                    with intercepting(world.interceptor):
                        yield world
                finally:
                    root.removeHandler(handler)
                    root.setLevel(levels[0])
                    sdk.setLevel(levels[1])
            finally:
                os.environ.clear()
                os.environ.update(saved)
                get_settings.cache_clear()
                get_services.cache_clear()

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)

    def services(self) -> Services:
        services = get_services()
        services.ledger.clock = self.now
        return services

    def _peek_row(self, partition: str, key: str) -> Any:
        with self.interceptor.quiet():
            return self.services().ledger.get(partition, key)

    # ----------------------------------------------------------------- inputs
    def drop(self, name: str, data: bytes, metadata: dict[str, str] | None = None, event: bool = True) -> None:
        with self.interceptor.quiet():
            inbox = self.services().stores.container(self.services().settings.inbox_container)
            etag = inbox.upload_blob(name, data, metadata=metadata, overwrite=True).get_blob_properties().etag
        version = Version(name, etag.strip('"'), data, event, (metadata or {}).get("enfactid"))
        for earlier in self.versions.values():
            if earlier.name == name:
                earlier.replaced = True
        self.versions[(name, version.etag)] = version
        if event:
            self.events[(name, version.etag)] = 0

    def push(self, invoice_id: str, webhook_id: str | None = None, event: str = "invoice.created") -> None:
        body = json.dumps({"type": event,
                           "data": {"invoice_id": invoice_id, "company_uuid": ENFACT_COMPANY}}).encode()
        self.pushes.append({"id": webhook_id or f"msg_{uuid.uuid4().hex[:12]}", "body": body, "attempts": 0})
        self.pushed.append(invoice_id)

    # ----------------------------------------------------------------- processes
    def invoke(self, label: str, fn: Callable[[], Any]) -> str:
        self.services()
        process = self.interceptor.new_process(label)
        token = _PROCESS.set(process)
        try:
            fn()
            outcome = "ok"
        except SimulatedCrash:
            outcome = "crashed"
        except Exception as exc:  # the host logs it and retries as its trigger says
            self.failures.append(f"{label}: {type(exc).__name__}: {exc}")
            outcome = "failed"
        finally:
            process.ended = True
            _PROCESS.reset(token)
        if process.dead:  # one of its threads crashed, whatever the others returned
            outcome = "crashed"
        if outcome == "crashed":
            self.crashes += 1
            get_services.cache_clear()  # the process died: the next invocation runs in a new one
        else:  # a live worker that was told an id must have recorded it
            self.must_name.update(process.told)
        self.step_problems.extend(self.stranded_rows())
        return outcome

    def unchanged(self, what: str, store: str, read: Callable[[], Any]) -> Any:
        """``read()`` (quietly), or its last result when no request has written to ``store`` since."""
        writes = self.interceptor.writes[store]
        seen = self._reads.get(what)
        if seen is None or seen[0] != writes:
            with self.interceptor.quiet():
                seen = self._reads[what] = (writes, read())
        return seen[1]

    def rows(self) -> list[Any]:
        """Every ledger row (``Ledger.scan``), read again only once a request has written rows."""
        return self.unchanged("rows", "rows", lambda: list(self.services().ledger.scan()))

    def tick(self) -> str:
        return self.invoke("tick", lambda: self.host.fire_timer("poll_documents"))

    def run(self, rounds: int = 30, minutes_per_round: float = 20) -> None:
        """Drive everything until settled (``AzureRecovery.run``)."""
        self.recovery.run(rounds, minutes_per_round)

    # ----------------------------------------------------------------- invariants (tests/support/invariants.py)
    def stranded_rows(self) -> list[str]:
        """Invariant 1 and 4 at every step: an unsettled row always has its due index entry."""
        return self.invariants.stranded_rows()

    def check(self, settled: bool = True) -> list[str]:
        """Every invariant of DESIGN.md, after the run; returns the violations."""
        return self.invariants.check(settled)


class _Capture(logging.Handler):
    """Every record, formatted as a log sink would (message, context, traceback), with the app's filter."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.addFilter(ContextFilter())
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))


def crash_points(trace: list[Call]) -> list[str]:
    return [call.name for call in trace if call.crashable]


def after_equals_next_before(trace: list[Call], index: int) -> bool:
    """Whether crashing *after* crash point ``index`` of a clean ``trace`` provably leaves the same stored
    state as crashing *before* point ``index + 1``: both points were made by the same process (invocation)
    and every call between them only reads storage. The process dies either way before anything else it
    does reaches storage or a vendor, and the recovery that follows is the same; so only the 'before' run
    is needed (its log lines are a superset of the other's)."""
    positions = [position for position, call in enumerate(trace) if call.crashable]
    if index + 1 >= len(positions):
        return False
    first, second = positions[index], positions[index + 1]
    process = trace[first].process
    if not process or trace[second].process != process:
        return False
    return all(call.process == process and not call.mutates for call in trace[first + 1:second])


def pdf(tag: str) -> bytes:
    """A small distinct PDF-looking file."""
    return b"%PDF-1.4\n% " + tag.encode() + b"\n" + base64.b64encode(hashlib.sha256(tag.encode()).digest()) + b"\n%%EOF\n"
