"""One Inqom rate budget for every process of every instance: time slots handed out from one Table row.

    budget = InqomBudget.from_services(services)     # Services wires it as the Inqom HttpClient's throttle
    with priority("poll"):                           # the poller's calls draw on the poll lane
        services.inqom.get_document(folder, doc_id)  # HttpClient → budget.acquire() before every attempt

``acquire`` waits for this process's next slot of the caller's lane (or raises ``ThrottledError`` rather
than wait past the backoff cap), ``hold_off`` shares a ``Retry-After`` with the fleet. The row protocol
is ``shared.inqom.budget_row``, the arithmetic ``shared.inqom.schedule``; how it works, its guarantees,
sizing and measurements: ``docs/rate-budget.md``.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
import threading
import time
from collections import deque
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, NoReturn

from azure.data.tables import TableClient

from shared.http import DeadlineExceeded, RateLimiter, ThrottledError, time_left
from shared.inqom.budget_row import BUDGET_PARTITION, BudgetRow, credential_key
from shared.inqom.schedule import (FIRST_BATCH, LANES, MAX_SHARED_HOLD, POLL, UPLOAD, LaneUsage, Plan, Row, Settings,
                                   plan)

log = logging.getLogger(__name__)

MIN_PATIENCE = 1.0  # seconds: a shorter wait for a slot is always waited out, whatever the backoff cap

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
class _LaneState:
    slots: deque = field(default_factory=deque)  # epoch seconds, ascending
    reserving: bool = False
    blocked_until: float = 0.0  # the lane's schedule is taken until then (beyond the wait we accept)
    span: float = 0.0  # seconds of schedule the next batch covers: grows while used up, shrinks when slots lapse
    reserved: int = 0  # slots of the last batch
    lead: float = 0.0  # how far ahead the last batch started: more than a span means others hold the lane
    expired: int = 0  # slots dropped unused since the last batch


class _LocalSlots:
    """This process's reserved slots of each lane and its local hold; used under the budget's lock."""

    def __init__(self, stats: BudgetStats, grace: float) -> None:
        self.lanes = {lane: _LaneState() for lane in LANES}
        self.hold_until = 0.0  # from our own 429s and from the row
        self._stats = stats
        self._grace = grace  # a slot may be used this late, no later

    def take(self, lane: str, now: float) -> float | None:
        """The lane's next usable slot; slots already past are dropped."""
        state = self.lanes[lane]
        floor = max(now - self._grace, self.hold_until)
        while state.slots and state.slots[0] < floor:
            state.slots.popleft()
            state.expired += 1
            self._stats.slots_expired += 1
        return state.slots.popleft() if state.slots else None

    def hold(self, until: float) -> None:
        """No slot before ``until`` survives."""
        if until <= self.hold_until:
            return
        self.hold_until = until
        for state in self.lanes.values():
            while state.slots and state.slots[0] < until:
                state.slots.popleft()
                self._stats.slots_held_off += 1

    def add(self, lane: str, batch: Plan, now: float) -> None:
        """A batch the row gave this process, less its slots inside a hold."""
        self.hold(batch.row.hold_until)
        state = self.lanes[lane]
        merged = sorted([*state.slots, *batch.slots])
        state.slots = deque(s for s in merged if s >= self.hold_until)
        state.blocked_until = 0.0
        state.span, state.reserved, state.expired = batch.span, len(batch.slots), 0
        state.lead = batch.start - now
        self._stats.reservations += 1
        self._stats.slots_reserved += len(batch.slots)
        self._stats.slots_borrowed += batch.borrowed

    def usage(self, lane: str) -> LaneUsage:
        state = self.lanes[lane]
        return LaneUsage(state.span, state.reserved, state.expired)


@dataclass(frozen=True)
class _Patience:
    """How long a caller may wait for a slot, and what it is told when the slot is further away."""

    max_wait: float  # the HTTP backoff cap
    service: str
    rate: float

    def allowed(self) -> float:
        """The backoff cap (never under a second), or the caller's deadline when sooner."""
        left = time_left()
        patience = max(self.max_wait, MIN_PATIENCE)
        return patience if left is None else min(patience, left)

    def refuse(self, wait: float) -> NoReturn:
        left = time_left()
        if left is not None and wait > left and left < max(self.max_wait, MIN_PATIENCE):
            raise DeadlineExceeded(self.service, f"Inqom budget: next slot in {wait:.1f}s, after the caller's deadline")
        raise ThrottledError(self.service, f"Inqom budget: no request slot for {wait:.1f}s (fleet-wide limit "
                             f"{self.rate:g}/s, or Inqom asked to wait); handed back", retry_after=wait)


class _Outage:
    """While the store is unreachable: the local fallback rate applies until ``until``; logged once per outage."""

    def __init__(self, retry: float, fallback_rate: float) -> None:
        self.until = 0.0
        self._retry, self._fallback_rate = retry, fallback_rate
        self._logged = False

    def begin(self, exc: Exception) -> None:
        if not self._logged:
            self._logged = True
            log.warning("Inqom budget store unreachable (%s); this process now sends at most %g requests/s "
                        "(INQOM_MAX_REQUESTS_PER_SECOND) and tries the store again every %.0fs",
                        type(exc).__name__, self._fallback_rate, self._retry)
        else:
            log.debug("Inqom budget store still unreachable (%s)", type(exc).__name__)

    def end(self) -> None:
        if self._logged:
            log.info("Inqom budget store reachable again; the fleet-wide budget applies")
            self._logged = False


class InqomBudget:
    """Drop-in for ``shared.http.RateLimiter`` in ``HttpClient``: ``acquire``, ``hold_off``, ``held_off``.

    Thread-safe. ``table`` and ``credential`` are factories, called when first needed (and the table
    again after a storage error), so building the budget touches neither storage nor secrets.
    """

    def __init__(self, table: Callable[[], TableClient], credential: Callable[[], tuple[str, str]], *,
                 rate: float, poll_share: float, fallback_rate: float, max_wait: float,
                 calls_per_reservation: int = 24, min_span: float = 2.0, store_retry: float = 30.0,
                 service: str = "inqom", clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (0 < rate < math.inf and 0 <= poll_share <= 1 and 0 < fallback_rate):
            raise ValueError("rate and fallback_rate must be positive, poll_share within [0, 1]")
        self.settings = Settings(rate, poll_share, calls_per_reservation, min_span)
        self.rate = rate
        self.rates = self.settings.rates
        self.max_wait = max_wait
        self.store_retry = store_retry
        self.service = service
        self._patience = _Patience(max_wait, service, rate)
        self._reserve_time = 0.05  # recent duration of a whole reservation (EWMA): how early to reserve ahead
        self._table_factory = table
        self._clock = clock
        self._sleep = sleep
        # The row reads this budget's clock at each call: a simulation swaps ``_clock`` after building.
        self._row = BudgetRow(table, credential, rate=rate, poll_rate=self.rates[POLL],
                              clock=lambda: self._clock(), sleep=sleep)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._store_lock = threading.Lock()  # one store conversation at a time per process
        self._shared_hold = 0.0  # the HoldUntil this process last saw or wrote in the row
        self._fallback = RateLimiter(fallback_rate, sleep=sleep)
        self._outage = _Outage(store_retry, fallback_rate)
        self._stats = BudgetStats()
        self._slots = _LocalSlots(self._stats, grace=max(1.0 / rate, 0.01))

    @classmethod
    def from_services(cls, services: Any, **overrides: Any) -> "InqomBudget":
        """The budget ``Services`` wires: its settings, the ledger table, the Inqom credential, wall-clock time."""
        from shared.secrets import INQOM_CLIENT_ID, INQOM_USERNAME

        s = services.settings
        options: dict[str, Any] = {"rate": s.inqom_rate_limit, "poll_share": s.inqom_poll_share,
                                   "fallback_rate": s.inqom_max_rps, "max_wait": s.http_backoff_cap, **overrides}
        return cls(lambda: services.stores.table(s.ledger_table),
                   lambda: (services.secrets.get(INQOM_USERNAME), services.secrets.get(INQOM_CLIENT_ID)),
                   **options)

    # ------------------------------------------------------------------ the RateLimiter interface

    def acquire(self) -> None:
        """Wait for this caller's next slot (its lane: ``priority``); raise instead of a wait too long."""
        lane = _lane.get()
        while True:
            if self._clock() < self._outage.until:
                held = self._fallback.held_off()
                if held > self._patience.allowed():
                    self._count("throttled")
                    self._patience.refuse(held)
                self._fallback.acquire()
                self._count("fallback_calls")
                return
            reserve = ahead = False
            with self._cond:
                state = self._slots.lanes[lane]
                slot = self._slots.take(lane, self._clock())
                if (slot is not None and not state.slots and not state.reserving and state.reserved > 1
                        and state.expired <= state.reserved // 10 and state.lead < state.span
                        and slot - self._clock() > self._reserve_time):
                    state.reserving = ahead = True  # the lane's last slot: fetch the next batch while we wait
                if slot is None:
                    now = self._clock()
                    if state.blocked_until - now > self._patience.allowed():
                        self._stats.throttled += 1
                        self._patience.refuse(state.blocked_until - now)
                    if state.reserving:
                        self._cond.wait(0.5)
                        continue
                    state.reserving = reserve = True
            if reserve:
                try:
                    self._reserve_marked(lane)
                except (ThrottledError, DeadlineExceeded):
                    self._count("throttled")
                    raise
                continue
            if ahead:  # our slot is held already: a next batch too far away only blocks the lane for the next caller
                with suppress(ThrottledError, DeadlineExceeded):
                    self._reserve_marked(lane)
            wait = slot - self._clock()
            if wait > 0:
                if wait > self._patience.allowed():  # a hold or a far batch: give the slot back, hand the work back
                    with self._cond:
                        self._slots.lanes[lane].slots.appendleft(slot)
                        self._stats.throttled += 1
                    self._patience.refuse(wait)
                self._sleep(wait)
            with self._cond:
                if slot < self._slots.hold_until:  # a hold-off arrived while we waited for the slot
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
            self._slots.hold(until)
        self._fallback.hold_off(seconds)
        if now < self._outage.until or self._shared_hold >= until - 0.05:
            return  # no store, or the row already says so
        self._share_hold(until)

    def held_off(self) -> float:
        """Seconds left of the longest hold-off known here (ours, or another process's seen in the row)."""
        with self._lock:
            held = self._slots.hold_until - self._clock()
        return max(held, self._fallback.held_off(), 0.0)

    # ------------------------------------------------------------------ reporting

    def stats(self) -> BudgetStats:
        with self._lock:
            counts = asdict(self._stats)
        return BudgetStats(**{**counts, **self._row.counts()})

    @property
    def in_fallback(self) -> bool:
        return self._clock() < self._outage.until

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + 1)

    # ------------------------------------------------------------------ the store

    def _reserve(self, lane: str) -> None:
        """Take a batch of slots for ``lane`` from the row (ETag-conditional); store errors → fallback."""
        with self._store_lock:
            began = time.monotonic()
            try:
                batch = self._row.reserve(lambda row: self._batch(row, lane), pause=self._reserve_time)
            except (ThrottledError, DeadlineExceeded):
                raise
            except Exception as exc:  # noqa: BLE001 — storage, rights, secrets: any of them means "no store"
                self._enter_fallback(exc)
                return
            if batch is not None:
                self._outage.end()
            self._reserve_time = min(0.7 * self._reserve_time + 0.3 * (time.monotonic() - began), 1.0)
        if batch is None:  # lost every race: let the others' batches run, then try again
            self._sleep(random.uniform(0.005, 0.05))
            return
        with self._cond:
            self._slots.add(lane, batch, self._clock())

    def _reserve_marked(self, lane: str) -> None:
        """``_reserve`` by the caller that marked the lane ``reserving``: the mark is cleared after, waiters woken."""
        try:
            self._reserve(lane)
        finally:
            with self._cond:
                self._slots.lanes[lane].reserving = False
                self._cond.notify_all()

    def _batch(self, row: Row, lane: str) -> Plan:
        """The next batch of ``lane`` planned on ``row`` (``schedule.plan``), or raise when it starts too late."""
        now = self._clock()
        self._shared_hold = max(self._shared_hold, row.hold_until)
        with self._lock:
            usage = self._slots.usage(lane)
        # the batch is ours only once the write has returned
        batch = plan(row, lane, now, now + self._row.write_time, usage, self.settings)
        if batch.start - now > self._patience.allowed():
            with self._cond:
                self._slots.hold(row.hold_until)
                self._slots.lanes[lane].blocked_until = batch.start
            self._patience.refuse(batch.start - now)
        return batch

    def _share_hold(self, until: float) -> None:
        with self._store_lock:
            try:
                recorded = self._row.record_hold(until, pause=self._reserve_time)
            except Exception as exc:  # noqa: BLE001
                self._enter_fallback(exc)
                return
            if recorded is not None:
                hold, wrote = recorded
                self._shared_hold = hold if wrote else max(self._shared_hold, hold)
                if wrote:
                    self._count("holds_shared")

    def _enter_fallback(self, exc: Exception) -> None:
        now = self._clock()
        with self._cond:
            self._stats.store_errors += 1
            self._outage.until = now + self.store_retry
            self._row.reset()
            self._cond.notify_all()
        self._outage.begin(exc)


__all__ = ["BUDGET_PARTITION", "FIRST_BATCH", "LANES", "MAX_SHARED_HOLD", "POLL", "UPLOAD", "BudgetStats",
           "InqomBudget", "credential_key", "current_lane", "priority"]
