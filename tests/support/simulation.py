"""Deterministic crash and interleaving simulation of every document path (tests only).

In the spirit of FoundationDB's simulation testing and Jepsen's invariant checks, but on the real
parts: the registered functions (``devtools.host.LocalHost``), Azurite and the loopback emulators.

    world = World.create(azurite)                        # fresh containers, table, queue, emulators
    world.drop("11287/supplier/a.pdf", data)
    with world.interceptor.crash_at(7, "after"):         # the 7th crashable call: the process dies
        world.run()                                      # deliveries, queue, pushes, ticks until settled
    problems = world.check()                             # the invariants; [] when they hold

``Interceptor`` sits under every HTTP call the app makes (Azure SDK and ``requests`` share
``requests.Session.send``). It names each call — the app functions on the stack, the service and
the operation — and can raise ``SimulatedCrash`` (a ``BaseException``: nothing in the app catches
it) before a call leaves or after its answer came back. Every storage write and every Inqom or
enFact call is a *crash point*. ``World.run`` then recovers as Azure would: a failed or crashed
blob delivery is redelivered up to host.json's ``poisonBlobThreshold``; a queue message reappears
after its visibility timeout up to ``maxDequeueCount``, then goes to the poison queue; a push
sender retries until it gets a 2xx; timers keep ticking while the ledger clock advances, so
claims and leases lapse. A crashed process is a new process: services are rebuilt.

``Scheduler`` steps several invocations (threads) through the orders of their calls: at each
call, one runnable actor is chosen by a seeded random generator; a clock advance is an actor too.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import logging
import os
import random
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from shared.config import get_settings
from shared.ledger import FINAL_STATES, PENDING_PARTITION, SYSTEM_PARTITIONS, ledger_key, partition_for
from shared.observability import ContextFilter
from shared.services import Services, get_services
from shared.webhook import sign
from tests.emulators.enfact import EnfactEmulator
from tests.emulators.inqom import InqomEmulator
from tests.support.appsettings import (
    ENFACT_COMPANY, ENFACT_SESSION_KEY, INQOM_CREDENTIALS, WEBHOOK_SECRET, app_settings,
)

REPO = Path(__file__).resolve().parents[2]
_HOST = json.loads((REPO / "host.json").read_text())
POISON_BLOB_THRESHOLD = int(_HOST["extensions"]["blobs"]["poisonBlobThreshold"])
MAX_DEQUEUE_COUNT = int(_HOST["extensions"]["queues"]["maxDequeueCount"])
PUSH_ATTEMPTS = 5
#: Modules whose frames are plumbing, not the step a crash point is named after.
_PLUMBING = {"http", "storage", "inqom", "enfact", "auth", "secrets", "observability"}


class SimulatedCrash(BaseException):
    """The process dies here (not an ``Exception``: no handler in the app sees it)."""


@dataclass(frozen=True)
class Call:
    service: str  # blob, table, queue, inqom, enfact
    op: str
    target: str
    caller: str

    @property
    def crashable(self) -> bool:
        if self.service in ("inqom", "enfact"):
            return True
        if self.op.startswith("read") or self.op in ("list", "receive"):
            return False
        # The sweep's cursor and the rate budget's row: losing a write costs nothing, and how many of
        # them a run makes depends on timing, which would make crash points shift between runs.
        return not self.target.startswith(("sweep", "budget"))

    @property
    def name(self) -> str:
        return f"{self.caller}: {self.service} {self.op} {self.target}".strip()


@dataclass
class Stats:
    """What the harness ran, for the terminal summary and the README."""

    crash_runs: int = 0
    schedules: int = 0
    invariant_checks: int = 0
    crash_points: dict[str, set[str]] = field(default_factory=dict)  # scenario -> point names

    def summary(self) -> str:
        points = sum(len(names) for names in self.crash_points.values())
        lines = [f"simulation: {points} distinct crash points in {len(self.crash_points)} scenarios, "
                 f"{self.crash_runs} crash × recovery runs, {self.schedules} interleaving schedules, "
                 f"{self.invariant_checks} invariant checks"]
        return "\n".join(lines)


STATS = Stats()


class Interceptor:
    """Names, records and (when armed) crashes the app's outgoing HTTP calls."""

    def __init__(self, ports: dict[int, str], roles: dict[str, str]) -> None:
        self.ports = ports
        self.roles = roles  # container / table / queue name -> role
        self.trace: list[Call] = []
        self.crashable: list[Call] = []
        self.overwrites: list[str] = []
        self._created: set[str] = set()
        self._crash: tuple[int, str] | None = None
        self._local = threading.local()
        self.scheduler: Scheduler | None = None
        self._lock = threading.Lock()

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """The harness's own storage calls: not recorded, never crashed, never scheduled."""
        previous = getattr(self._local, "quiet", False)
        self._local.quiet = True
        try:
            yield
        finally:
            self._local.quiet = previous

    def told(self) -> list[int]:
        """Inqom document ids answered to the app's uploads in this thread (``World.invoke`` takes them)."""
        if not hasattr(self._local, "told"):
            self._local.told = []
        return self._local.told

    def arm(self, index: int, mode: str) -> None:
        self._crash = (index, mode)

    def send(self, original: Callable, session: requests.Session, request: requests.PreparedRequest, **kwargs: Any):
        if getattr(self._local, "quiet", False):
            return original(session, request, **kwargs)
        call = self.classify(request)
        if self.scheduler is not None and call.target != "budget":  # the rate budget's own row: plumbing
            self.scheduler.yield_point(call)
        with self._lock:
            self.trace.append(call)
            crash_mode = None
            if call.crashable:
                self.crashable.append(call)
                if self._crash and self._crash[0] == len(self.crashable) - 1:
                    crash_mode = self._crash[1]
            forced = self.scheduler.take_crash() if self.scheduler is not None else False
        if crash_mode == "before" or forced:
            raise SimulatedCrash(call.name)
        response = original(session, request, **kwargs)
        self._watch_writes(call, request, response)
        if call.service == "inqom" and call.op.startswith("upload") and response.status_code < 300 and crash_mode is None:
            self.told().append(_document_id(response))
        if crash_mode == "after":
            response.close()
            raise SimulatedCrash(call.name)
        return response

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

    def classify(self, request: requests.PreparedRequest) -> Call:
        url = urlsplit(request.url)
        service = self.ports.get(url.port or 0, "other")
        path = unquote(url.path)
        query = parse_qs(url.query)
        method = request.method
        caller = _caller()
        if service == "blob":
            parts = path.split("/", 3)  # '', account, container, blob
            container = parts[2] if len(parts) > 2 else ""
            blob = parts[3] if len(parts) > 3 else ""
            role = self.roles.get(container, container)
            comp = (query.get("comp") or [""])[0]
            if method == "PUT":
                op = ("copy" if request.headers.get("x-ms-copy-source") else
                      {"block": "stage-block", "blocklist": "commit"}.get(comp, "put" if not comp else f"set-{comp}"))
            elif method == "DELETE":
                op = "delete"
            else:
                op = "list" if not blob else f"read-{comp or method.lower()}"
            return Call(service, op, f"{role}:{blob}" if blob else role, caller)
        if service == "table":
            table, _, keys = path.split("/", 2)[-1].partition("(")
            partition = keys.split("'")[1] if "'" in keys else ""
            kind = ("index" if partition == PENDING_PARTITION else partition if partition in SYSTEM_PARTITIONS
                    else "row")
            if method == "GET":
                return Call(service, "read", kind if partition else "query", caller)
            op = {"POST": "insert", "PUT": "replace", "MERGE": "merge", "PATCH": "merge", "DELETE": "delete"}[method]
            if method == "POST":
                kind = _posted_partition(request)
            return Call(service, op, kind, caller)
        if service == "queue":
            name = path.split("/")[2] if path.count("/") >= 2 else ""
            op = {"POST": "send", "GET": "receive", "DELETE": "delete", "PUT": "update"}.get(method, method)
            return Call(service, op, self.roles.get(name, name), caller)
        if service == "inqom":
            if "connect/token" in path:
                op = "token"
            elif path.endswith("/public-url"):
                op = "public-url"
            elif path.startswith("/public/"):
                op = "download"
            elif method == "POST":
                op = "upload-expense" if "expense-bills" in path else "upload"
            else:
                op = "get-document"
            return Call(service, op, "", caller)
        if service == "enfact":
            op = "list" if path.endswith("invoices.json") else ("pdf" if path.endswith(".pdf") else "invoice")
            return Call(service, op, "", caller)
        return Call(service, method, url.netloc, caller)


def _document_id(response: requests.Response) -> int:
    payload = response.json()
    payload = payload[0] if isinstance(payload, list) else payload
    return int(payload.get("Id") or payload.get("DocumentId"))


def _posted_partition(request: requests.PreparedRequest) -> str:
    try:
        partition = json.loads(request.body or b"{}").get("PartitionKey", "")
    except (ValueError, TypeError):
        return "row"
    if partition == PENDING_PARTITION:
        return "index"
    return partition if partition in SYSTEM_PARTITIONS else "row"


def _caller() -> str:
    """The app's own steps on the stack (outermost first), plumbing left out: e.g. 'uploader.upload_inbox_blob > ledger.insert'."""
    names: list[str] = []
    for frame in inspect.stack(0)[2:]:
        path = Path(frame.filename)
        if path.parent.name == "shared" and path.parent.parent == REPO and path.stem not in _PLUMBING:
            name = f"{path.stem}.{frame.function}"
            if not names or names[-1] != name:
                names.append(name)
    return " > ".join(reversed(names[:3]))


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


class Scheduler:
    """Steps registered actor threads one call at a time, in an order drawn from ``seed``."""

    def __init__(self, seed: int, crash_probability: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.steps: list[str] = []
        self._crash_probability = crash_probability
        self._crash_next: str | None = None
        self._crashed = False
        self._local = threading.local()
        self._cond = threading.Condition()
        self._parked: set[str] = set()
        self._go: str | None = None

    def yield_point(self, call: Call) -> None:
        actor = getattr(self._local, "actor", None)
        if actor is None:
            return  # not a scheduled thread (emulators, a claim keeper)
        with self._cond:
            self._parked.add(actor)
            self._cond.notify_all()
            while self._go != actor:
                self._cond.wait()
            self._go = None
            self._cond.notify_all()
        self.steps.append(f"{actor}: {call.name}")

    def take_crash(self) -> bool:
        actor = getattr(self._local, "actor", None)
        if actor is not None and actor == self._crash_next:
            self._crash_next = None
            return True
        return False

    def run(self, actors: dict[str, Callable[[], Any]], clock_events: list[Callable[[], None]]) -> list[str]:
        done: set[str] = set()

        def body(name: str, fn: Callable[[], Any]) -> None:
            self._local.actor = name
            try:
                fn()
            finally:
                with self._cond:
                    done.add(name)
                    self._cond.notify_all()

        threads = [threading.Thread(target=body, args=(n, f), name=f"sim-{n}", daemon=True) for n, f in actors.items()]
        for thread in threads:
            thread.start()
        pending_clock = list(clock_events)
        while True:
            with self._cond:
                deadline = time.monotonic() + 10
                while len(self._parked) + len(done) < len(actors) and time.monotonic() < deadline:
                    self._cond.wait(0.05)
                runnable = sorted(self._parked) + (["clock"] if pending_clock else [])
                if not runnable:
                    if len(done) == len(actors):
                        break
                    raise RuntimeError(f"seed {self.seed}: actors neither parked nor done: {set(actors) - done}")
                choice = self.rng.choice(runnable)
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


class World:
    """One fresh deployment: its own containers, table and queue in Azurite, its own emulators."""

    def __init__(self, env: dict[str, str], azurite: Any, inqom: InqomEmulator, enfact: EnfactEmulator) -> None:
        self.env = env
        self.inqom = inqom
        self.enfact = enfact
        self.offset = timedelta(0)
        self.versions: dict[tuple[str, str], Version] = {}
        self.events: dict[tuple[str, str], int] = {}
        self.poisoned: list[str] = []
        self.pushes: list[dict[str, Any]] = []
        self.crashes = 0
        self.failures: list[str] = []
        self.step_problems: list[str] = []
        self.log_lines: list[str] = []
        self.reconcile_rounds: set[int] = set()
        self.must_name: set[int] = set()
        import function_app
        from devtools.host import LocalHost

        self.host = LocalHost(function_app.app)
        settings = self.services().settings
        roles = {settings.inbox_container: "inbox", settings.archive_container: "archive",
                 settings.quarantine_container: "quarantine", settings.ledger_table: "ledger",
                 settings.enfact_queue: "enfact-queue"}
        ports = {azurite.blob_port: "blob", azurite.table_port: "table", azurite.queue_port: "queue",
                 inqom.port: "inqom", enfact.port: "enfact"}
        self.interceptor = Interceptor(ports, roles)

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

    # ----------------------------------------------------------------- inputs
    def drop(self, name: str, data: bytes, metadata: dict[str, str] | None = None, event: bool = True) -> None:
        with self.interceptor.quiet():
            inbox = self.services().stores.container(self.services().settings.inbox_container)
            etag = inbox.upload_blob(name, data, metadata=metadata, overwrite=True).get_blob_properties().etag
        version = Version(name, etag.strip('"'), data, event)
        self.versions[(name, version.etag)] = version
        if event:
            self.events[(name, version.etag)] = 0

    def push(self, invoice_id: str, webhook_id: str | None = None) -> None:
        body = json.dumps({"type": "invoice.created",
                           "data": {"invoice_id": invoice_id, "company_uuid": ENFACT_COMPANY}}).encode()
        self.pushes.append({"id": webhook_id or f"msg_{uuid.uuid4().hex[:12]}", "body": body, "attempts": 0})

    # ----------------------------------------------------------------- recovery, as Azure would
    def invoke(self, label: str, fn: Callable[[], Any]) -> str:
        self.services()
        told = self.interceptor.told()
        told.clear()
        try:
            fn()
            outcome = "ok"
        except SimulatedCrash:
            self.crashes += 1
            get_services.cache_clear()  # the process died: the next invocation runs in a new one
            outcome = "crashed"
        except Exception as exc:  # the host logs it and retries as its trigger says
            self.failures.append(f"{label}: {type(exc).__name__}: {exc}")
            outcome = "failed"
        if outcome != "crashed":  # a live worker that was told an id must have recorded it
            self.must_name.update(told)
        self.step_problems.extend(self.stranded_rows())
        return outcome

    def deliver_events(self) -> None:
        self._discover_inbox()
        for version_key in list(self.events):
            name = version_key[0]
            outcome = self.invoke(f"blob {name}", lambda: self.host.deliver_blob("upload_document", name))
            if outcome == "ok":
                del self.events[version_key]
                continue
            self.events[version_key] += 1
            if self.events[version_key] >= POISON_BLOB_THRESHOLD:
                del self.events[version_key]
                self.poisoned.append(f"blob {name}")

    def _discover_inbox(self) -> None:
        """Blobs the app itself wrote into the inbox (enFact) raise BlobCreated too."""
        with self.interceptor.quiet():
            inbox = self.services().stores.container(self.services().settings.inbox_container)
            for blob in inbox.list_blobs():
                key = (blob.name, blob.etag.strip('"'))
                if key not in self.versions:
                    data = inbox.get_blob_client(blob.name).download_blob().readall()
                    self.versions[key] = Version(blob.name, key[1], data)
                    self.events[key] = 0

    def deliver_queue(self) -> None:
        settings = self.services().settings
        with self.interceptor.quiet():
            queue = self.services().stores.queue(settings.enfact_queue)
            messages = list(queue.receive_messages(messages_per_page=8, visibility_timeout=30))
        for message in messages:
            outcome = self.invoke("queue", lambda: self.host.deliver_queue_message(
                "enfact_fetch", message.content, message.dequeue_count, message.id))
            with self.interceptor.quiet():
                if outcome == "ok":
                    queue.delete_message(message)
                elif message.dequeue_count >= MAX_DEQUEUE_COUNT:
                    self.services().stores.queue(f"{settings.enfact_queue}-poison").send_message(message.content)
                    queue.delete_message(message)
                    self.poisoned.append(f"queue {message.content}")
                else:  # its visibility timeout lapses: it reappears
                    queue.update_message(message, visibility_timeout=0)

    def deliver_pushes(self) -> None:
        for push in list(self.pushes):
            timestamp = int(time.time())
            headers = {"Content-Type": "application/json", "webhook-id": push["id"],
                       "webhook-timestamp": str(timestamp),
                       "webhook-signature": sign(WEBHOOK_SECRET, push["id"], timestamp, push["body"])}
            answer: dict[str, int] = {}

            def call() -> None:
                response = self.host.call_http("enfact_webhook", "POST", "http://localhost/api/enfact/invoices",
                                               headers, push["body"])
                answer["status"] = response.status_code

            self.invoke("push", call)
            push["attempts"] += 1
            if 200 <= answer.get("status", 500) < 300 or push["attempts"] >= PUSH_ATTEMPTS:
                self.pushes.remove(push)

    def tick(self) -> str:
        return self.invoke("tick", lambda: self.host.fire_timer("poll_documents"))

    def run(self, rounds: int = 30, minutes_per_round: float = 20) -> None:
        """Drive everything until settled: pushes, queue, blob events, ticks, a reconcile now and then."""
        for round_number in range(rounds):
            self.deliver_pushes()
            self.deliver_queue()
            self.deliver_events()
            self.tick()
            if round_number in self.reconcile_rounds:
                self.invoke("reconcile", lambda: self.host.fire_timer("enfact_reconcile"))
            if self.settled():
                return
            self.advance(minutes=minutes_per_round)

    def settled(self) -> bool:
        if self.pushes or self.events:
            return False
        with self.interceptor.quiet():
            services = self.services()
            if services.stores.queue(services.settings.enfact_queue).peek_messages(max_messages=1):
                return False
            self._discover_inbox()
            if self.events:
                return False
            inbox = services.stores.container(services.settings.inbox_container)
            for blob in inbox.list_blobs():  # a blob nobody was told about waits for the repair sweep
                entry = services.ledger.get(partition_for(blob.name),
                                            ledger_key(services.settings.inbox_container, blob.name, blob.etag))
                if entry is None:
                    return False
            return all(entry.state in FINAL_STATES for entry in services.ledger.scan())

    # ----------------------------------------------------------------- invariants
    def stranded_rows(self) -> list[str]:
        """Invariant 1 and 4 at every step: an unsettled row always has its due index entry."""
        STATS.invariant_checks += 1
        with self.interceptor.quiet():
            ledger = self.services().ledger
            return [f"stranded: {e.partition}/{e.key} {e.state} {e.get('BlobPath')!r} has no due index entry"
                    for e in ledger.scan() if e.state not in FINAL_STATES and not ledger.has_index(e)]

    def check(self, settled: bool = True) -> list[str]:
        """Every invariant of DESIGN.md, after the run; returns the violations."""
        STATS.invariant_checks += 1
        with self.interceptor.quiet():
            problems = sorted(set(self.step_problems))
            problems += self._every_version_accounted(settled)
            problems += self._inqom_documents_named()
            problems += list(self.interceptor.overwrites)
            problems += self._no_secrets()
        return problems

    def _every_version_accounted(self, settled: bool) -> list[str]:
        services = self.services()
        settings = services.settings
        ledger = services.ledger
        problems = []
        for (name, etag), version in self.versions.items():
            entry = ledger.get(partition_for(name), ledger_key(settings.inbox_container, name, etag))
            where = f"{name!r} ({etag[-8:]})"
            if entry is None:
                problems.append(f"lost: {where} has no ledger row")
                continue
            if entry.state not in FINAL_STATES:
                if settled or not ledger.has_index(entry):
                    problems.append(f"unsettled: {where} is {entry.state}: {entry.get('LastError')}")
                continue
            if entry.state == "Archived":
                container, _, path = entry.get("ArchivePath").partition("/")
                blob = services.stores.container(container).get_blob_client(path)
                if not blob.exists():
                    problems.append(f"lost: {where} Archived at {path} which does not exist")
                elif hashlib.sha1(blob.download_blob().readall()).hexdigest() != hashlib.sha1(version.data).hexdigest():
                    problems.append(f"corrupt: {where} archive copy differs from the dropped bytes")
                elif blob.get_blob_properties().metadata.get("ledgerkey") != entry.key:
                    problems.append(f"mislinked: {where} archive copy belongs to another row")
            elif entry.state in ("Quarantined", "Deleted"):
                path = (entry.get("QuarantinePath") or "/").partition("/")[2]
                blob = services.stores.container(settings.quarantine_container).get_blob_client(path)
                if not entry.get("QuarantineReason"):
                    problems.append(f"unexplained: {where} {entry.state} without a reason")
                if not path or not blob.exists():
                    problems.append(f"lost: {where} {entry.state} but no blob at {path!r}")
                elif blob.download_blob().readall() != version.data:
                    problems.append(f"corrupt: {where} quarantined copy differs")
                elif not blob.get_blob_properties().metadata.get("reason"):
                    problems.append(f"unexplained: {where} quarantined blob has no reason metadata")
        return problems

    def _inqom_documents_named(self) -> list[str]:
        """Invariant 2: at most one Inqom document per blob version that the ledger cannot name."""
        recorded: set[int] = set()
        linked: set[int] = set()
        for entry in self.services().ledger.scan():
            if entry.get("InqomId") not in (None, ""):
                recorded.add(int(entry.get("InqomId")))
            if entry.get("OriginId") not in (None, ""):
                linked.add(int(entry.get("OriginId")))
            recorded.update(int(x) for x in str(entry.get("ExtraInqomIds") or "").split(",") if x)
        named = recorded | linked
        problems = [f"forgotten: Inqom answered document {doc_id} to a worker that lived on, and no row records it"
                    for doc_id in sorted(self.must_name - recorded)]
        unnamed: dict[str, int] = {}
        for doc_id, document in self.inqom.documents.items():
            if doc_id not in named:
                source = document.get("SourceId") or f"#{doc_id}"
                unnamed[source] = unnamed.get(source, 0) + 1
        return problems + [f"orphaned: {count} Inqom documents of blob version {source} are named by no ledger row"
                           for source, count in unnamed.items() if count > 1]

    def _no_secrets(self) -> list[str]:
        """Invariant 6: no secret in a log record (tracebacks included) or a ledger column."""
        secrets = {"Inqom password": INQOM_CREDENTIALS["password"],
                   "Inqom client secret": INQOM_CREDENTIALS["client_secret"],
                   "enFact session key": ENFACT_SESSION_KEY, "webhook secret": WEBHOOK_SECRET.split("_", 1)[1]}
        secrets.update({f"token {t[:6]}": t for t in self.inqom._tokens})  # noqa: SLF001 (the tokens issued)
        secrets.update({f"sig of {k[:6]}": link.signature for k, link in self.inqom._links.items()})  # noqa: SLF001
        texts = [("log", line) for line in self.log_lines]
        for entry in self.services().ledger.table.list_entities():
            texts.extend(("ledger", str(value)) for value in entry.values() if isinstance(value, str))
        problems = []
        for where, text in texts:
            for label, secret in secrets.items():
                if secret and (secret in text or _urlencoded(secret) in text):
                    problems.append(f"secret leaked: {label} in a {where} line: {text[:120]!r}")
        return sorted(set(problems))


def _urlencoded(secret: str) -> str:
    from urllib.parse import quote

    return quote(secret, safe="")


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


def pdf(tag: str) -> bytes:
    """A small distinct PDF-looking file."""
    return b"%PDF-1.4\n% " + tag.encode() + b"\n" + base64.b64encode(hashlib.sha256(tag.encode()).digest()) + b"\n%%EOF\n"
