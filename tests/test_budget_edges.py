"""Edges of the fleet-wide Inqom budget (``shared/inqom/budget.py``) over a real Azurite table: a fast clock
(invariant 9), a huge ``Retry-After`` and a hold-off while the store is unreachable.

Each ``InqomBudget`` here stands for one process of the fleet; they share one row. Their ``sleep`` only
records the wait, so a test never sleeps and a wrong wait shows as a number, not as a slow test.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable, Iterator

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient

from shared.inqom.budget import BUDGET_PARTITION, MAX_SHARED_HOLD, InqomBudget, credential_key, priority
from shared.http import DeadlineExceeded, ThrottledError, deadline

FAST = 120.0  # seconds a misconfigured instance's clock is ahead
HOLD = 2.0  # the Retry-After the fast instance shares


@pytest.fixture
def table(azurite) -> Iterator[TableClient]:
    client = TableClient.from_connection_string(azurite.connection_string, f"edges{uuid.uuid4().hex[:16]}")
    client.create_table()
    yield client
    client.delete_table()


def process(table: Callable[[], TableClient] | TableClient, waits: list[float] | None = None,
            **options: Any) -> InqomBudget:
    """One process's budget over the shared row: 20/s (14 upload, 6 poll), batches of 6 slots (0.43 s of
    upload, 1 s of poll), a 5 s backoff cap; its sleeps go to ``waits``."""
    factory = table if callable(table) else (lambda: table)
    return InqomBudget(factory, lambda: ("user", "client"), rate=20, poll_share=0.3, fallback_rate=50,
                       max_wait=5, calls_per_reservation=6, min_span=0.3,
                       sleep=(waits if waits is not None else []).append, **options)


def ahead(seconds: float) -> Callable[[], float]:
    return lambda: time.time() + seconds


def row(table: TableClient) -> dict[str, Any]:
    return dict(table.get_entity(BUDGET_PARTITION, credential_key("user", "client")))


def test_a_fast_clock_does_not_stall_the_instances_with_a_right_one(table, caplog):
    fast = process(table, clock=ahead(FAST))
    fast.acquire()  # an upload batch 120 s ahead of real time, and the idle poll lane borrowed as far
    fast.hold_off(HOLD)  # a 429 shared with a hold that ends 122 s from now by the others' clocks
    waits: list[float] = []
    right = process(table, waits)
    with caplog.at_level(logging.WARNING, logger="shared.inqom.budget"):
        right.acquire()
        with priority("poll"):
            right.acquire()
        assert len(waits) == 2, waits
        # Both lanes wait for the hold, counted from when it was seen (the fast one's batches, under a
        # second, end before it): HOLD and a few ms of storage calls, where obeying its clock is 122 s.
        assert all(HOLD - 0.5 <= wait <= HOLD + 0.5 for wait in waits), waits
        # The row now carries the right clock's times: the fleet recovered with that one write.
        shared = row(table)
        assert shared["FactorAt"] <= time.time() and shared["HoldUntil"] <= time.time() + HOLD
        assert max(shared["UploadNext"], shared["PollNext"]) <= time.time() + HOLD + 2  # + a poll batch
        process(table, clock=ahead(FAST)).hold_off(HOLD + 1)  # a second fast write...
        right.hold_off(HOLD + 3)  # ...read by the same process: no second warning
    warnings = [r.getMessage() for r in caplog.records if "CLOCK_SKEW_BOUND" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert right.stats().throttled == 0


def test_a_fast_clock_long_hold_counts_from_when_it_is_seen_and_is_fixed_in_the_row_once(table):
    fast = process(table, clock=ahead(FAST))
    fast.acquire()
    fast.hold_off(60)
    with pytest.raises(ThrottledError) as refused:
        process(table).acquire()  # longer than the backoff cap: handed back, for the hold's 60 s, not 180 s
    assert 59 <= refused.value.retry_after <= 60.5
    # 61 s later by a right clock (the fast clock's writes then still look 59 s ahead): the hold is over,
    # because the first reader wrote it back at its own time instead of moving it again on every read.
    later: list[float] = []
    process(table, later, clock=ahead(61)).acquire()
    assert all(wait < 1 for wait in later), later


def test_a_slow_clock_waits_a_hold_from_when_it_sees_it_and_leaves_the_row_to_the_right_clocks(table):
    right = process(table)
    right.acquire()
    right.hold_off(60)
    with pytest.raises(ThrottledError) as refused:
        process(table, clock=ahead(-FAST)).acquire()  # obeying its clock would hold it 180 s
    assert 59 <= refused.value.retry_after <= 60.5
    # Its view is its own (the store's timestamp shows its clock late): the row keeps the right clocks'
    # hold, which a write from its clock would have put 60 s in their past.
    with pytest.raises(ThrottledError) as still:
        process(table).acquire()
    assert 59 <= still.value.retry_after <= 60.5


def test_a_day_long_retry_after_holds_the_fleet_for_the_cap_at_most(table):
    first = process(table)
    first.acquire()
    first.hold_off(86400)
    assert first.held_off() <= MAX_SHARED_HOLD
    other = process(table)
    with pytest.raises(ThrottledError) as refused:
        other.acquire()
    assert refused.value.retry_after <= MAX_SHARED_HOLD and other.held_off() <= MAX_SHARED_HOLD
    assert row(table)["HoldUntil"] <= time.time() + MAX_SHARED_HOLD
    waits: list[float] = []
    process(table, waits, clock=ahead(MAX_SHARED_HOLD + 1)).acquire()  # once the cap has passed: slots again
    assert all(wait < 1 for wait in waits), waits


def test_in_fallback_a_hold_longer_than_the_caller_can_wait_is_raised_not_slept(table):
    def unreachable() -> TableClient:
        raise ServiceRequestError("connection refused")

    waits: list[float] = []
    budget = process(unreachable, waits)
    budget.acquire()  # no store: the local rate
    assert budget.in_fallback and budget.stats().fallback_calls == 1
    budget.hold_off(20)
    started = time.monotonic()
    with deadline(time.monotonic() + 0.5, read_cap=1), pytest.raises(DeadlineExceeded):
        budget.acquire()
    with pytest.raises(ThrottledError) as refused:  # no deadline: longer than the 5 s backoff cap
        budget.acquire()
    assert 19 <= refused.value.retry_after <= 20
    assert time.monotonic() - started < 0.5 and all(wait < 1 for wait in waits), waits
    assert budget.stats().throttled == 2 and budget.stats().fallback_calls == 1
