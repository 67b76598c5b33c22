"""The budget row's schedule arithmetic, pure: the next batch of slots, the rate factor, clock-skew rebasing.

    settings = Settings(rate=12, poll_share=0.3)
    batch = plan(empty_row(), UPLOAD, now, ready=now + 0.01, usage=LaneUsage(), settings=settings)
    batch.slots  # 8 upload slots (FIRST_BATCH) 1/8.4 s apart from ``ready`` on, and 4 of the idle poll lane
    batch.row    # the row to write back: UploadNext = the end of the batch

No storage and no clock here: ``shared.inqom.budget_row`` reads and writes the row, ``shared.inqom.budget``
spends the slots. The design and its figures: ``docs/rate-budget.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

UPLOAD = "upload"
POLL = "poll"
LANES = (UPLOAD, POLL)
OTHER = {UPLOAD: POLL, POLL: UPLOAD}
FIRST_BATCH = 8  # slots of a process's first batch unless others hold its lane (then a full batch)
#: Adaptive rate (AIMD): each 429 episode multiplies the fleet's rate by ADAPT_DECREASE (not below
#: ADAPT_FLOOR of the budget); it then recovers by ADAPT_RECOVERY of the budget per second.
ADAPT_DECREASE = 0.7
ADAPT_FLOOR = 0.25
ADAPT_RECOVERY = 0.02
#: The longest one ``Retry-After`` holds the fleet (here and in the row): 5 minutes honour any real rate
#: window; a longer (or bogus) one costs one refused call per 5 minutes, each renewing the hold, not a day.
MAX_SHARED_HOLD = 300.0
#: How far the instances' clocks are assumed to agree (NTP keeps them within milliseconds): a time the row
#: says was set further ahead of the reader's clock is suspect (``rebase``).
CLOCK_SKEW_BOUND = 1.0


@dataclass
class Row:
    """The budget row: each lane's next unreserved slot and end of its owners' last batch, the hold, the factor."""

    next: dict[str, float]
    owned: dict[str, float]
    hold_until: float
    etag: str | None  # None: the row does not exist yet
    factor: float = 1.0  # share of INQOM_RATE_LIMIT in force when it was set (``factor_at``)
    factor_at: float = 0.0  # the writer's clock when it set the factor and the hold
    at: dict[str, float] = field(default_factory=lambda: {UPLOAD: 0.0, POLL: 0.0})
    rebased: bool = False  # times from a fast clock were moved back on reading: write them back (never copied)

    def copy(self, **changes: Any) -> "Row":
        fields = {"next": dict(self.next), "owned": dict(self.owned), "hold_until": self.hold_until,
                  "etag": self.etag, "factor": self.factor, "factor_at": self.factor_at, "at": dict(self.at)}
        fields.update(changes)
        return Row(**fields)

    def factor_now(self, now: float) -> float:
        """The rate factor in force at ``now``: cut on each 429 episode, recovering linearly since."""
        return min(1.0, self.factor + max(now - self.factor_at, 0.0) * ADAPT_RECOVERY)


def empty_row() -> Row:
    """The row before anyone wrote it."""
    return Row({UPLOAD: 0.0, POLL: 0.0}, {UPLOAD: 0.0, POLL: 0.0}, 0.0, None)


def cut_factor(row: Row, now: float) -> float:
    """The factor after one more 429 episode at ``now``."""
    return max(ADAPT_FLOOR, row.factor_now(now) * ADAPT_DECREASE)


@dataclass(frozen=True)
class Settings:
    rate: float  # requests/s of the whole fleet (INQOM_RATE_LIMIT)
    poll_share: float
    calls_per_reservation: int = 24
    min_span: float = 2.0

    @property
    def rates(self) -> dict[str, float]:
        return {POLL: self.rate * self.poll_share, UPLOAD: self.rate * (1 - self.poll_share)}


@dataclass(frozen=True)
class LaneUsage:
    """How this process used its last batch of a lane (nothing yet: all zero)."""

    span: float = 0.0  # seconds of schedule the next batch covers: grows while used up, shrinks when slots lapse
    reserved: int = 0  # slots of the last batch
    expired: int = 0  # slots dropped unused since the last batch


@dataclass
class Plan:
    row: Row  # the row to write
    slots: list[float]
    borrowed: int
    span: float
    start: float  # the batch's first own-lane slot


def plan(row: Row, lane: str, now: float, ready: float, usage: LaneUsage, settings: Settings) -> Plan:
    """The next batch of ``lane`` (and of the other lane when idle), its first slot no earlier than ``ready``.

    The batch covers ``span`` seconds of the schedule: at first ``FIRST_BATCH`` slots (a full batch
    when other processes hold batches of the lane: this process waits behind them anyway, and a
    second batch soon after would cost another read and write), growing fourfold while this
    process uses its batches up, cut to what was used when more than a quarter of one lapsed
    unused (a process calling now and then reserves single slots), between one slot and about
    ``calls_per_reservation`` calls of its own lane (at least ``min_span`` seconds), so that a
    batch is worth its read and write whoever else is busy. The other lane is borrowed when its
    owners hold nothing ahead (``owned`` in the past) and at most one span is lent already.
    The caller decides whether ``start`` is too far away to wait for.
    """
    rates = settings.rates
    own = lane if rates[lane] > 0 else OTHER[lane]
    other = OTHER[own]
    start = max(row.next[own], ready, row.hold_until)
    factor = row.factor_now(now)
    r_own, r_other = rates[own] * factor, rates[other] * factor
    borrow = (r_other > 0 and row.owned[other] <= now and row.hold_until <= now
              and row.next[other] <= now + max(settings.min_span, settings.calls_per_reservation / settings.rate))
    longest = max(settings.min_span, settings.calls_per_reservation / r_own)
    span = usage.span or (longest if row.owned[own] > ready else min(longest, FIRST_BATCH / r_own))
    if usage.reserved and usage.expired > usage.reserved / 4:  # fit the next batch to what was used
        span *= max(usage.reserved - usage.expired, 1) / usage.reserved
    elif usage.reserved and usage.expired <= usage.reserved / 10:
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
    return Plan(new, sorted(slots), borrowed, span, start)


@dataclass(frozen=True)
class Skew:
    lead: float  # the largest lead moved back, seconds (0: none)
    reader_behind: bool  # the store's clock says the reader is the late one


def rebase(row: Row, now: float, stamp: float | None) -> tuple[Row, Skew]:
    """``row`` with the times set by a clock over ``CLOCK_SKEW_BOUND`` ahead of ``now`` moved back, the hold capped.

    Each lane's schedule and the hold carry their writer's clock (``at``, ``factor_at``; one write time
    would not tell which times its writer set and which it copied from others). That clock was at
    least ``at - now`` ahead, so moving its times back by as much keeps the lead it gave (its batch, its
    hold), now counted from ``now``: never earlier than its writer spends them. The moved times are to
    be written back (``rebased``) unless ``stamp`` (the store's clock at the last write) says ``now`` is late.
    """
    row = row.copy()
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
    row.rebased = bool(shifts) and not behind
    return row, Skew(max(shifts.values(), default=0.0), behind)


__all__ = ["ADAPT_DECREASE", "ADAPT_FLOOR", "ADAPT_RECOVERY", "CLOCK_SKEW_BOUND", "FIRST_BATCH", "LANES",
           "MAX_SHARED_HOLD", "OTHER", "POLL", "UPLOAD", "LaneUsage", "Plan", "Row", "Settings", "Skew",
           "cut_factor", "empty_row", "plan", "rebase"]
