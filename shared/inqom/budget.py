"""One Inqom rate budget for every process of every instance: time slots handed out from one Table row.

    budget = InqomBudget.from_services(services)     # Services wires it as the Inqom HttpClient's throttle
    with priority("poll"):                           # the poller's calls draw on the poll lane
        services.inqom.get_document(folder, doc_id)  # HttpClient → budget.acquire() before every attempt

Inqom answers 429 above about 15 requests/s per client id and user, whatever the number of callers.
``INQOM_RATE_LIMIT`` (requests/s) is the budget of the whole fleet for one Inqom credential; it is
split into two **lanes**, each a schedule of call times (slots) spaced ``1/lane rate`` apart:

- ``poll`` gets ``INQOM_POLL_SHARE`` of the rate (default 0.3: 3.6 of 12 requests/s), ``upload`` the
  rest. Callers choose their lane with ``priority("poll")`` (a context variable; the default lane is
  ``upload``). When both lanes are busy each keeps its share, so archiving never waits behind a flood
  of uploads; a lane whose schedule is idle (its next free slot is already in the past) is borrowed
  by the other, so one busy lane alone gets the whole rate.
- The schedules live in one row of the ledger table (partition ``budget``, row key = a hash of the
  Inqom user name and client id, never the values): ``UploadNext`` and ``PollNext`` (epoch seconds of
  each lane's next unreserved slot) and ``HoldUntil``. A process that runs out of slots *reserves* a
  batch: it reads the row, takes the next ``calls_per_reservation`` (24) slots of its lane (its
  first batch is 8 slots, or a full one when other processes hold batches of the lane and it waits
  behind them anyway) — plus the other lane's schedule over the same span when that lane is idle —
  and writes the row back with an ETag condition (a conflicting writer waits a random moment and
  reads again). Its threads then spend those slots at their times, no earlier; a slot not used
  within one slot interval of its time is dropped, never spent late. While a process uses its
  batches up and no other process holds the lane (its last batch started within a span), the
  thread that takes a batch's last slot reserves the next one as it waits for that slot, so the
  batches follow one another without a gap; when others hold the lane, their batches fill that
  gap, and a process reserves only when it needs a slot, so it never holds a far batch it may not
  use. Two processes never own the same slot, so the fleet never sends faster than the schedule,
  whatever the number of processes.
- Coordination is amortised: one read and one conditional write per batch (one write when the row
  has not changed since this process wrote it), i.e. about 2/24 ≈ 0.08 storage calls per Inqom call
  once batches are full, whatever the number of processes (measured: 0.03 with one busy process,
  0.08–0.09 with seven each busy for a minute, first and last batches included).
- A process that dies holding slots loses only them: they lapse when their time passes (at most one
  batch, about 2 to 7 s of one lane at the default rate). Nothing needs releasing or expiring.
- **429 as a shared signal**: ``hold_off(seconds)`` (HttpClient calls it on a ``Retry-After``) drops
  this process's slots before the end of the hold and records ``HoldUntil`` in the row: no process
  reserves a slot before it (one answer holds the fleet ``MAX_SHARED_HOLD``, 300 s, at most). Processes
  already holding slots inside the hold (the one or two whose batch spans it) learn it at their own
  next 429 or reservation. The same write cuts the fleet's rate (``RateFactor``, ``FactorAt``): × 0.7
  per 429 episode (a 429 whose hold the row already shows is the same episode), never below 25 % of
  the budget, then recovering by 2 % of the budget per second (additive increase, multiplicative
  decrease, as the AWS SDKs' adaptive retry mode and the SRE book's client-side throttling do), so
  other tools on the same Inqom account that take part of the 15/s push the fleet down instead of
  into a 429 per hold.
- **Never longer than the caller can wait**: when the next slot (or a hold) is further away than
  ``HTTP_BACKOFF_CAP_SECONDS`` (and a second), ``acquire`` raises ``ThrottledError`` (``retry_after`` = that wait)
  instead of sleeping, so an upload is handed back to the ledger (not a failed attempt) and a poll
  tick stops; under a caller's ``shared.http.deadline`` a wait past it raises ``DeadlineExceeded``.
- **Store unreachable** (any storage error, a missing table, missing rights): the process falls back
  to a local ``RateLimiter`` at ``INQOM_MAX_REQUESTS_PER_SECOND``, logs one warning, and tries the
  store again every ``store_retry`` seconds (30); never a stop, never unbounded. Every budget storage
  call has short timeouts and no SDK retries, so an outage costs one short wait per retry period.

Why slots on one row, not rate slots held as blob leases (the other design in issue 11), measured
against Azurite (``bench/scale.py``, ``tests/test_budget.py``; figures in bench/README.md): the cost
of this design is per *batch of Inqom calls* (≈0.08 storage calls per Inqom call with 1 or 8 busy
processes alike, once batches are full), while leases cost a renewal per held slot per renewal
period for every process (8 processes renewing every 5 s = 1.6 storage calls/s, 0.13 per Inqom
call at 12/s, growing with the fleet) and need a fairness protocol (who gives slots back when
another process gets busy); a dead holder's leases block their share for the whole lease time
(15–60 s for blob leases) where a dead holder's slots here lapse within one batch; and a 429 hold
is one column here, where leases would need a second mechanism. The price: with ``n`` processes
busy on one lane, a process waits about ``n`` batches (n × 2.9 s on the upload lane at the default
rate) for its next batch; past ``HTTP_BACKOFF_CAP_SECONDS`` its uploads are handed back (not failed)
rather than kept waiting.

Times are wall-clock epoch seconds (``time.time``), the same on every instance (the ledger's
clock, which tests move ahead to make documents due, plays no part: slots are real time); clock
skew between instances of tens of ms shifts a few slots, well within the headroom under Inqom's
limit. Each lane's schedule and the hold also record their writer's clock (``UploadAt``, ``PollAt``,
``FactorAt``): times set more than ``CLOCK_SKEW_BOUND`` (1 s) ahead of the reader's clock are suspect,
moved back by as much (the lead their writer gave is kept) with one warning, and the next write stores
them so; a fast clock cannot stall the fleet.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import math
import random
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.http import DeadlineExceeded, RateLimiter, ThrottledError, time_left
from shared.storage import TIMEOUTS

log = logging.getLogger(__name__)

UPLOAD = "upload"
POLL = "poll"
LANES = (UPLOAD, POLL)
BUDGET_PARTITION = "budget"  # in the ledger table; a system partition, not documents
_NEXT = {UPLOAD: "UploadNext", POLL: "PollNext"}  # next unreserved slot of each lane's schedule
_OWNED = {UPLOAD: "UploadOwned", POLL: "PollOwned"}  # end of the last batch a lane reserved for itself
_AT = {UPLOAD: "UploadAt", POLL: "PollAt"}  # the writer's clock when it last set the lane's schedule
_OTHER = {UPLOAD: POLL, POLL: UPLOAD}
#: Budget storage calls stay short: a slow store delays Inqom calls, so fall back early instead.
STORAGE_CALL = {"connection_timeout": min(3, TIMEOUTS["connection_timeout"]),
                "read_timeout": min(10, TIMEOUTS["read_timeout"]), "retry_total": 0}
_SERVER_TIMEOUT = 10  # seconds, the service side of every budget storage call
_MAX_CONFLICTS = 8  # conditional writes lost in a row before the caller backs off and tries again
FIRST_BATCH = 8  # slots of a process's first batch unless others hold its lane (then a full batch)
MIN_PATIENCE = 1.0  # seconds: a shorter wait for a slot is always waited out, whatever the backoff cap
#: Adaptive rate (AIMD): each 429 episode multiplies the fleet's rate by ADAPT_DECREASE (not below
#: ADAPT_FLOOR of the budget); it then recovers by ADAPT_RECOVERY of the budget per second.
ADAPT_DECREASE = 0.7
ADAPT_FLOOR = 0.25
ADAPT_RECOVERY = 0.02
#: The longest one ``Retry-After`` holds the fleet (here and in the row): 5 minutes honour any real rate
#: window; a longer (or bogus) one costs one refused call per 5 minutes, each renewing the hold, not a day.
MAX_SHARED_HOLD = 300.0
#: How far the instances' clocks are assumed to agree (NTP keeps them within milliseconds): a time the row
#: says was set further ahead of the reader's clock is suspect (``InqomBudget._trusted``).
CLOCK_SKEW_BOUND = 1.0

_lane: contextvars.ContextVar[str] = contextvars.ContextVar("inqom_budget_lane", default=UPLOAD)


@contextmanager
def priority(lane: str) -> Iterator[None]:
    """Inqom calls in this block (and in threads started with a copy of this context) use ``lane``."""
    if lane not in LANES:
        raise ValueError(f"unknown budget lane {lane!r}; valid: {', '.join(LANES)}")
    token = _lane.set(lane)
    try:
        yield
    finally:
        _lane.reset(token)


def current_lane() -> str:
    return _lane.get()


def credential_key(username: str, client_id: str) -> str:
    """Row key of one Inqom credential: a hash, so neither the user name nor the client id is stored."""
    text = f"inqom-budget\n{username.strip().lower()}\n{client_id.strip()}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class BudgetStats:
    """What one process's budget did (``InqomBudget.stats()``): storage work and slot use."""

    reads: int = 0  # budget row reads
    writes: int = 0  # conditional writes, lost ones included
    conflicts: int = 0  # conditional writes lost to another process
    store_errors: int = 0
    reservations: int = 0
    slots_reserved: int = 0
    slots_borrowed: int = 0  # of which from the other lane's idle schedule
    slots_expired: int = 0  # reserved, not used in time, dropped
    slots_held_off: int = 0  # dropped because a hold-off covered them
    calls: int = 0  # acquire() returned on a reserved slot
    fallback_calls: int = 0  # acquire() returned on the local fallback rate
    holds: int = 0  # hold-offs received
    holds_shared: int = 0  # hold-offs written to the store
    throttled: int = 0  # ThrottledError / DeadlineExceeded raised instead of waiting

    @property
    def storage_calls(self) -> int:
        return self.reads + self.writes


@dataclass
class _Row:
    next: dict[str, float]
    owned: dict[str, float]
    hold_until: float
    etag: str | None  # None: the row does not exist yet
    factor: float = 1.0  # share of INQOM_RATE_LIMIT in force when it was set (``factor_at``)
    factor_at: float = 0.0  # the writer's clock when it set the factor and the hold
    at: dict[str, float] = field(default_factory=lambda: {UPLOAD: 0.0, POLL: 0.0})
    rebased: bool = False  # times from a fast clock were moved back on reading: write them back (never copied)

    def copy(self, **changes: Any) -> "_Row":
        fields = {"next": dict(self.next), "owned": dict(self.owned), "hold_until": self.hold_until,
                  "etag": self.etag, "factor": self.factor, "factor_at": self.factor_at, "at": dict(self.at)}
        fields.update(changes)
        return _Row(**fields)

    def factor_now(self, now: float) -> float:
        """The rate factor in force at ``now``: cut on each 429 episode, recovering linearly since."""
        return min(1.0, self.factor + max(now - self.factor_at, 0.0) * ADAPT_RECOVERY)


@dataclass
class _Plan:
    row: _Row
    slots: list[float]
    borrowed: int
    span: float
    start: float  # the batch's first own-lane slot


@dataclass
class _LaneState:
    slots: deque = field(default_factory=deque)  # epoch seconds, ascending
    reserving: bool = False
    blocked_until: float = 0.0  # the lane's schedule is taken until then (beyond the wait we accept)
    span: float = 0.0  # seconds of schedule the next batch covers: grows while used up, shrinks when slots lapse
    reserved: int = 0  # slots of the last batch
    lead: float = 0.0  # how far ahead the last batch started: more than a span means others hold the lane
    expired: int = 0  # slots dropped unused since the last batch


class InqomBudget:
    """Drop-in for ``shared.http.RateLimiter`` in ``HttpClient``: ``acquire``, ``hold_off``, ``held_off``.

    Thread-safe. ``table`` and ``credential`` are factories, called when first needed (and the table
    again after a storage error), so building the budget touches neither storage nor secrets.
    """

    def __init__(
        self,
        table: Callable[[], TableClient],
        credential: Callable[[], tuple[str, str]],
        *,
        rate: float,
        poll_share: float,
        fallback_rate: float,
        max_wait: float,
        calls_per_reservation: int = 24,
        min_span: float = 2.0,
        store_retry: float = 30.0,
        service: str = "inqom",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (0 < rate < math.inf and 0 <= poll_share <= 1 and 0 < fallback_rate):
            raise ValueError("rate and fallback_rate must be positive, poll_share within [0, 1]")
        self.rate = rate
        self.rates = {POLL: rate * poll_share, UPLOAD: rate * (1 - poll_share)}
        self.max_wait = max_wait
        self.calls_per_reservation = calls_per_reservation
        self.min_span = min_span
        self.store_retry = store_retry
        self.service = service
        self.grace = max(1.0 / rate, 0.01)  # a slot may be used this late, no later
        self._write_time = 0.01  # recent duration of a conditional write (EWMA): new slots start after it
        self._reserve_time = 0.05  # recent duration of a whole reservation (EWMA): how early to reserve ahead
        self._table_factory = table
        self._credential = credential
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._store_lock = threading.Lock()  # one store conversation at a time per process
        self._lanes = {lane: _LaneState() for lane in LANES}
        self._hold_until = 0.0  # local: from our own 429s and from the row
        self._shared_hold = 0.0  # the HoldUntil this process last saw or wrote in the row
        self._table: TableClient | None = None
        self._key: str | None = None
        self._cached: _Row | None = None  # the row as this process last wrote it
        self._trust_cache = False  # write without reading first: the last read found our own last write
        self._fallback = RateLimiter(fallback_rate, sleep=sleep)
        self._fallback_rate = fallback_rate
        self._fallback_until = 0.0
        self._outage_logged = False
        self._skew_logged = False
        self._stats = BudgetStats()

    @classmethod
    def from_services(cls, services: Any, **overrides: Any) -> "InqomBudget":
        """The budget ``Services`` wires: its settings, the ledger table, the Inqom credential, wall-clock time."""
        from shared.secrets import INQOM_CLIENT_ID, INQOM_USERNAME

        s = services.settings
        options: dict[str, Any] = dict(
            rate=s.inqom_rate_limit, poll_share=s.inqom_poll_share, fallback_rate=s.inqom_max_rps,
            max_wait=s.http_backoff_cap,
        )
        options.update(overrides)
        return cls(lambda: services.stores.table(s.ledger_table),
                   lambda: (services.secrets.get(INQOM_USERNAME), services.secrets.get(INQOM_CLIENT_ID)),
                   **options)

    # ------------------------------------------------------------------ the RateLimiter interface

    def acquire(self) -> None:
        """Wait for this caller's next slot (its lane: ``priority``); raise instead of a wait too long."""
        lane = _lane.get()
        while True:
            if self._clock() < self._fallback_until:
                held = self._fallback.held_off()
                if held > self._allowed_wait():
                    self._count("throttled")
                    self._raise_too_long(held)
                self._fallback.acquire()
                self._count("fallback_calls")
                return
            reserve = ahead = False
            with self._cond:
                state = self._lanes[lane]
                slot = self._take(state)
                if (slot is not None and not state.slots and not state.reserving and state.reserved > 1
                        and state.expired <= state.reserved // 10 and state.lead < state.span
                        and slot - self._clock() > self._reserve_time):
                    state.reserving = ahead = True  # the lane's last slot: fetch the next batch while we wait
                if slot is None:
                    now = self._clock()
                    if state.blocked_until - now > self._allowed_wait():
                        self._stats.throttled += 1
                        self._raise_too_long(state.blocked_until - now)
                    if state.reserving:
                        self._cond.wait(0.5)
                        continue
                    state.reserving = reserve = True
            if reserve:
                try:
                    self._reserve(lane)
                except (ThrottledError, DeadlineExceeded):
                    self._count("throttled")
                    raise
                finally:
                    with self._cond:
                        self._lanes[lane].reserving = False
                        self._cond.notify_all()
                continue
            if ahead:
                self._reserve_ahead(lane)
            wait = slot - self._clock()
            if wait > 0:
                if wait > self._allowed_wait():  # a hold or a far batch: give the slot back, hand the work back
                    with self._cond:
                        self._lanes[lane].slots.appendleft(slot)
                        self._stats.throttled += 1
                    self._raise_too_long(wait)
                self._sleep(wait)
            with self._cond:
                if slot < self._hold_until:  # a hold-off arrived while we waited for the slot
                    self._stats.slots_held_off += 1
                    continue
                self._stats.calls += 1
            return

    def hold_off(self, seconds: float) -> None:
        """Inqom said wait (``Retry-After``): nothing is sent before then (``MAX_SHARED_HOLD`` at most), here
        or (via the row) elsewhere."""
        if seconds > MAX_SHARED_HOLD:
            log.warning("Inqom asked to wait %.0fs; the fleet holds off %.0fs at most (MAX_SHARED_HOLD)",
                        seconds, MAX_SHARED_HOLD)
        seconds = min(max(seconds, 0.0), MAX_SHARED_HOLD)
        now = self._clock()
        until = now + seconds
        with self._cond:
            self._stats.holds += 1
            self._apply_hold(until)
        self._fallback.hold_off(seconds)
        if now < self._fallback_until or self._shared_hold >= until - 0.05:
            return  # no store, or the row already says so
        self._share_hold(until)

    def held_off(self) -> float:
        """Seconds left of the longest hold-off known here (ours, or another process's seen in the row)."""
        with self._lock:
            held = self._hold_until - self._clock()
        return max(held, self._fallback.held_off(), 0.0)

    # ------------------------------------------------------------------ reporting

    def stats(self) -> BudgetStats:
        with self._lock:
            return BudgetStats(**asdict(self._stats))

    @property
    def in_fallback(self) -> bool:
        return self._clock() < self._fallback_until

    # ------------------------------------------------------------------ local slots

    def _take(self, state: _LaneState) -> float | None:
        """The lane's next usable slot (under the lock); slots already past are dropped."""
        floor = max(self._clock() - self.grace, self._hold_until)
        while state.slots and state.slots[0] < floor:
            state.slots.popleft()
            state.expired += 1
            self._stats.slots_expired += 1
        return state.slots.popleft() if state.slots else None

    def _apply_hold(self, until: float) -> None:
        """Under the lock: no local slot before ``until`` survives."""
        if until <= self._hold_until:
            return
        self._hold_until = until
        for state in self._lanes.values():
            while state.slots and state.slots[0] < until:
                state.slots.popleft()
                self._stats.slots_held_off += 1

    def _allowed_wait(self) -> float:
        """How long a caller may wait for a slot: the HTTP backoff cap (never under a second), or its deadline."""
        left = time_left()
        patience = max(self.max_wait, MIN_PATIENCE)
        return patience if left is None else min(patience, left)

    def _raise_too_long(self, wait: float) -> None:
        left = time_left()
        if left is not None and wait > left and left < max(self.max_wait, MIN_PATIENCE):
            raise DeadlineExceeded(self.service, f"Inqom budget: next slot in {wait:.1f}s, after the caller's deadline")
        raise ThrottledError(self.service, f"Inqom budget: no request slot for {wait:.1f}s (fleet-wide limit "
                             f"{self.rate:g}/s, or Inqom asked to wait); handed back", retry_after=wait)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + 1)

    # ------------------------------------------------------------------ the store

    def _reserve(self, lane: str) -> None:
        """Take a batch of slots for ``lane`` from the row (ETag-conditional); store errors → fallback."""
        with self._store_lock:
            began = time.monotonic()
            try:
                plan = self._reserve_in_store(lane)
            except (ThrottledError, DeadlineExceeded):
                raise
            except Exception as exc:  # noqa: BLE001 — storage, rights, secrets: any of them means "no store"
                self._enter_fallback(exc)
                return
            self._reserve_time = min(0.7 * self._reserve_time + 0.3 * (time.monotonic() - began), 1.0)
        if plan is None:  # lost every race: let the others' batches run, then try again
            self._sleep(random.uniform(0.005, 0.05))
            return
        with self._cond:
            self._apply_hold(plan.row.hold_until)
            state = self._lanes[lane]
            merged = sorted([*state.slots, *plan.slots])
            state.slots = deque(s for s in merged if s >= self._hold_until)
            state.blocked_until = 0.0
            state.span, state.reserved, state.expired = plan.span, len(plan.slots), 0
            state.lead = plan.start - self._clock()
            self._stats.reservations += 1
            self._stats.slots_reserved += len(plan.slots)
            self._stats.slots_borrowed += plan.borrowed

    def _reserve_ahead(self, lane: str) -> None:
        """Reserve the lane's next batch before its last slot is spent, so batches follow without a gap.

        The caller already holds its slot: a next batch too far away only blocks the lane (the next
        caller without a slot hears of it), it does not concern this caller.
        """
        try:
            self._reserve(lane)
        except (ThrottledError, DeadlineExceeded):
            pass
        finally:
            with self._cond:
                self._lanes[lane].reserving = False
                self._cond.notify_all()

    def _rows(self, table: TableClient, key: str) -> Iterator[_Row]:
        """The row to base each conditional write on (our own last write when nobody wrote since), up to
        ``_MAX_CONFLICTS`` times; after a lost write a random wait, or the losers race each other again."""
        for attempt in range(_MAX_CONFLICTS):
            if attempt:
                self._sleep(random.uniform(0, attempt * self._reserve_time))
            yield self._cached if self._trust_cache and self._cached is not None else self._read(table, key)

    def _reserve_in_store(self, lane: str) -> _Plan | None:
        table, key = self._store()
        for row in self._rows(table, key):
            now = self._clock()
            try:
                plan = self._plan(row, lane, now)
            except (ThrottledError, DeadlineExceeded):
                if row.rebased:  # written back at our time, or every reader moves it again on each read
                    self._write(table, key, row, row.copy())
                raise
            if self._write(table, key, row, plan.row):
                if self._outage_logged:
                    log.info("Inqom budget store reachable again; the fleet-wide budget applies")
                    self._outage_logged = False
                return plan
        return None

    def _plan(self, row: _Row, lane: str, now: float) -> _Plan:
        """The next batch of ``lane`` (and of the other lane when idle), or raise when it is too far away.

        The batch covers ``span`` seconds of the schedule: at first ``FIRST_BATCH`` slots (a full batch
        when other processes hold batches of the lane: this process waits behind them anyway, and a
        second batch soon after would cost another read and write), growing fourfold while this
        process uses its batches up, cut to what was used when more than a quarter of one lapsed
        unused (a process calling now and then reserves single slots), between one slot and about
        ``calls_per_reservation`` calls of its own lane (at least ``min_span`` seconds), so that a
        batch is worth its read and write whoever else is busy. The other lane is borrowed when its
        owners hold nothing ahead (``owned`` in the past) and at most one span is lent already.
        """
        own = lane if self.rates[lane] > 0 else _OTHER[lane]
        other = _OTHER[own]
        self._shared_hold = max(self._shared_hold, row.hold_until)
        ready = now + self._write_time  # the batch is ours only once the write has returned
        start = max(row.next[own], ready, row.hold_until)
        if start - now > self._allowed_wait():
            with self._cond:
                self._apply_hold(row.hold_until)
                self._lanes[lane].blocked_until = start
            self._raise_too_long(start - now)
        factor = row.factor_now(now)
        r_own, r_other = self.rates[own] * factor, self.rates[other] * factor
        borrow = (r_other > 0 and row.owned[other] <= now and row.hold_until <= now
                  and row.next[other] <= now + max(self.min_span, self.calls_per_reservation / self.rate))
        longest = max(self.min_span, self.calls_per_reservation / r_own)
        with self._lock:
            state = self._lanes[lane]
            span = state.span or (longest if row.owned[own] > ready else min(longest, FIRST_BATCH / r_own))
            if state.reserved and state.expired > state.reserved / 4:  # fit the next batch to what was used
                span *= max(state.reserved - state.expired, 1) / state.reserved
            elif state.reserved and state.expired <= state.reserved / 10:
                span *= 4
        span = min(max(span, 1 / r_own), longest)
        count = max(1, round(span * r_own))
        span = count / r_own
        slots = [start + i / r_own for i in range(count)]
        new = row.copy()
        new.next[own] = new.owned[own] = start + span
        new.at[own] = now
        borrowed = 0
        if borrow:
            lent = max(row.next[other], ready)  # the idle lane's schedule up to the end of our batch
            borrowed = max(0, math.ceil((start + span - lent) * r_other - 1e-9))
            slots += [lent + i / r_other for i in range(borrowed)]
            new.next[other] = lent + borrowed / r_other
            new.at[other] = now  # its older ``owned`` moves with it if found suspect: it only decides borrowing
        return _Plan(new, sorted(slots), borrowed, span, start)

    def _share_hold(self, until: float) -> None:
        with self._store_lock:
            try:
                table, key = self._store()
                for row in self._rows(table, key):
                    if row.hold_until >= until - 0.05:
                        self._shared_hold = max(self._shared_hold, row.hold_until)
                        return
                    now = self._clock()
                    factor = max(ADAPT_FLOOR, row.factor_now(now) * ADAPT_DECREASE)
                    if self._write(table, key, row, row.copy(hold_until=until, factor=factor, factor_at=now)):
                        self._shared_hold = until
                        self._count("holds_shared")
                        log.warning("Inqom asked to wait %.1fs: hold-off recorded for every instance, fleet "
                                    "rate cut to %.1f/s (recovering by %.2f/s each second)", until - now,
                                    self.rate * factor, self.rate * ADAPT_RECOVERY)
                        return
            except Exception as exc:  # noqa: BLE001
                self._enter_fallback(exc)

    def _store(self) -> tuple[TableClient, str]:
        if self._key is None:
            self._key = credential_key(*self._credential())
        if self._table is None:
            self._table = self._table_factory()
        return self._table, self._key

    def _read(self, table: TableClient, key: str) -> _Row:
        self._count("reads")
        try:
            entity = table.get_entity(BUDGET_PARTITION, key, timeout=_SERVER_TIMEOUT, **STORAGE_CALL)
        except ResourceNotFoundError:
            return _Row({UPLOAD: 0.0, POLL: 0.0}, {UPLOAD: 0.0, POLL: 0.0}, 0.0, None)
        row = _Row({lane: float(entity.get(column) or 0.0) for lane, column in _NEXT.items()},
                   {lane: float(entity.get(column) or 0.0) for lane, column in _OWNED.items()},
                   float(entity.get("HoldUntil") or 0.0), entity.metadata.get("etag"),
                   float(entity.get("RateFactor") or 1.0), float(entity.get("FactorAt") or 0.0),
                   {lane: float(entity.get(column) or 0.0) for lane, column in _AT.items()})
        self._trust_cache = self._cached is not None and row.etag == self._cached.etag
        stamp = entity.metadata.get("timestamp")  # the store's clock at the last write
        return self._trusted(row, stamp.timestamp() if stamp else None)

    def _trusted(self, row: _Row, stamp: float | None) -> _Row:
        """``row`` with the times set by a clock over ``CLOCK_SKEW_BOUND`` ahead of ours moved back (invariant 9).

        Each lane's schedule and the hold carry their writer's clock (``UploadAt``/``PollAt``, ``FactorAt``;
        one ``WrittenAt`` would not tell which times its writer set and which it copied from others). That
        clock was at least ``at - now`` ahead, so moving its times back by as much keeps the lead it gave
        (its batch, its hold), now counted from our clock: never earlier than its writer spends them. The
        moved times are to be written back (``rebased``) unless the store's clock says ours is the late one.
        """
        now = self._clock()
        behind = stamp is not None and stamp - now > CLOCK_SKEW_BOUND
        shifts = {lane: row.at[lane] - now for lane in LANES if row.at[lane] - now > CLOCK_SKEW_BOUND}
        for lane, shift in shifts.items():
            row.next[lane] -= shift
            row.owned[lane] -= shift
            row.at[lane] = now
        hold_shift = row.factor_at - now
        if hold_shift > CLOCK_SKEW_BOUND:
            row.hold_until -= hold_shift
            row.factor_at = now
            shifts["hold"] = hold_shift
        row.hold_until = min(row.hold_until, row.factor_at + MAX_SHARED_HOLD)  # a hold written before the cap
        if shifts:
            row.rebased = not behind
            worst = max(shifts.values())
            if not self._skew_logged:
                self._skew_logged = True
                log.warning("Inqom budget row set %.1fs ahead of this instance's clock (more than "
                            "CLOCK_SKEW_BOUND = %gs; %s): its slots and hold are counted from now instead",
                            worst, CLOCK_SKEW_BOUND, "this clock is behind the store's" if behind
                            else "another instance's clock is fast")
            else:
                log.debug("Inqom budget row set %.1fs ahead of this instance's clock", worst)
        return row

    def _write(self, table: TableClient, key: str, old: _Row, new: _Row) -> bool:
        """Conditional on ``old``'s ETag (create when the row is new); False when another process won."""
        entity = {"PartitionKey": BUDGET_PARTITION, "RowKey": key, "HoldUntil": float(new.hold_until),
                  "RateFactor": float(new.factor), "FactorAt": float(new.factor_at),
                  "Rate": float(self.rate), "PollRate": float(self.rates[POLL]),
                  "UpdatedAt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                  **{column: float(new.next[lane]) for lane, column in _NEXT.items()},
                  **{column: float(new.owned[lane]) for lane, column in _OWNED.items()},
                  **{column: float(new.at[lane]) for lane, column in _AT.items()}}
        self._count("writes")
        began = time.monotonic()
        try:
            if old.etag is None:
                metadata = table.create_entity(entity, timeout=_SERVER_TIMEOUT, **STORAGE_CALL)
            else:
                metadata = table.update_entity(entity, mode=UpdateMode.REPLACE, etag=old.etag,
                                               match_condition=MatchConditions.IfNotModified,
                                               timeout=_SERVER_TIMEOUT, **STORAGE_CALL)
        except (ResourceModifiedError, ResourceExistsError) as exc:
            self._lost(exc)
            return False
        except ResourceNotFoundError as exc:
            if old.etag is None:
                raise  # the table itself is missing: that is no race
            self._lost(exc)
            return False
        self._write_time = min(0.7 * self._write_time + 0.3 * (time.monotonic() - began), 1.0)
        self._cached = new.copy(etag=metadata.get("etag"))  # trusted only once a read shows nobody else writes
        return True

    def _lost(self, exc: Exception) -> None:
        self._count("conflicts")
        self._trust_cache = False
        self._cached = None

    def _enter_fallback(self, exc: Exception) -> None:
        now = self._clock()
        with self._cond:
            self._stats.store_errors += 1
            self._fallback_until = now + self.store_retry
            self._table = None  # built afresh on the next try
            self._cached, self._trust_cache = None, False
            self._cond.notify_all()
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("Inqom budget store unreachable (%s); this process now sends at most %g requests/s "
                        "(INQOM_MAX_REQUESTS_PER_SECOND) and tries the store again every %.0fs",
                        type(exc).__name__, self._fallback_rate, self.store_retry)
        else:
            log.debug("Inqom budget store still unreachable (%s)", type(exc).__name__)


__all__ = ["BUDGET_PARTITION", "LANES", "POLL", "UPLOAD", "BudgetStats", "InqomBudget", "credential_key",
           "current_lane", "priority"]
