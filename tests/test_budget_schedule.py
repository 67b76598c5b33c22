"""The budget's schedule arithmetic (``shared/inqom/schedule.py``), pure: no storage, no clock, no sleep."""

from __future__ import annotations

import pytest

from shared.inqom.schedule import (ADAPT_FLOOR, CLOCK_SKEW_BOUND, FIRST_BATCH, MAX_SHARED_HOLD, POLL, UPLOAD,
                                   LaneUsage, Row, Settings, cut_factor, empty_row, plan, rebase)

NOW = 1_700_000_000.0
READY = NOW + 0.01  # after the conditional write
SETTINGS = Settings(rate=12, poll_share=0.3)  # upload 8.4/s, poll 3.6/s, batches of 24 (2.86 s of upload)
UP, POLL_RATE = 12 * 0.7, 12 * 0.3


def row(**changes) -> Row:
    return empty_row().copy(**changes)


def test_a_first_batch_is_first_batch_slots_from_ready_at_the_lane_rate():
    batch = plan(empty_row(), UPLOAD, NOW, READY, LaneUsage(), SETTINGS)
    expected = [READY + i / UP for i in range(FIRST_BATCH)] + [READY + i / POLL_RATE for i in range(4)]
    assert batch.start == READY and batch.span == pytest.approx(FIRST_BATCH / UP)
    assert batch.slots == pytest.approx(sorted(expected))  # 8 of its own lane, 4 of the idle poll lane
    assert batch.row.next[UPLOAD] == batch.row.owned[UPLOAD] == pytest.approx(READY + FIRST_BATCH / UP)
    assert batch.row.at[UPLOAD] == NOW and batch.slots == sorted(batch.slots)


def test_a_process_behind_others_takes_a_full_batch_after_theirs():
    taken = row(next={UPLOAD: NOW + 4, POLL: 0.0}, owned={UPLOAD: NOW + 4, POLL: NOW + 1})
    batch = plan(taken, UPLOAD, NOW, READY, LaneUsage(), SETTINGS)
    assert batch.start == NOW + 4 and len(batch.slots) == 24 and batch.borrowed == 0
    assert batch.slots[1] - batch.slots[0] == pytest.approx(1 / UP)


def test_an_idle_lane_is_borrowed_over_the_batch_and_a_busy_one_is_not():
    idle = plan(empty_row(), UPLOAD, NOW, READY, LaneUsage(), SETTINGS)
    span = FIRST_BATCH / UP
    assert idle.borrowed == 4 == len(idle.slots) - FIRST_BATCH  # ceil(0.95 s × 3.6/s)
    assert idle.row.next[POLL] == pytest.approx(READY + 4 / POLL_RATE) and idle.row.owned[POLL] == 0.0
    assert idle.row.next[POLL] >= READY + span

    busy = plan(row(owned={UPLOAD: 0.0, POLL: NOW + 1}, next={UPLOAD: 0.0, POLL: NOW + 1}), UPLOAD, NOW, READY,
                LaneUsage(), SETTINGS)
    assert busy.borrowed == 0 and len(busy.slots) == FIRST_BATCH and busy.row.next[POLL] == NOW + 1


def test_a_hold_pushes_the_start_and_stops_borrowing():
    batch = plan(row(hold_until=NOW + 5), POLL, NOW, READY, LaneUsage(), SETTINGS)
    assert batch.start == NOW + 5 and min(batch.slots) == NOW + 5 and batch.borrowed == 0
    assert batch.row.next[POLL] == pytest.approx(NOW + 5 + batch.span) and batch.row.hold_until == NOW + 5


def test_a_lane_without_a_share_draws_on_the_other():
    batch = plan(empty_row(), POLL, NOW, READY, LaneUsage(), Settings(rate=12, poll_share=0.0))
    assert batch.row.next[UPLOAD] > READY and batch.row.next[POLL] == 0.0 and batch.borrowed == 0


def test_the_span_grows_while_used_up_and_shrinks_to_what_was_used():
    first = FIRST_BATCH / UP
    used_up = plan(empty_row(), UPLOAD, NOW, READY, LaneUsage(span=first, reserved=8, expired=0), SETTINGS)
    assert len(used_up.slots) - used_up.borrowed == 24  # ×4, capped at a full batch
    lapsed = plan(empty_row(), UPLOAD, NOW, READY, LaneUsage(span=first, reserved=8, expired=6), SETTINGS)
    assert len(lapsed.slots) - lapsed.borrowed == 2  # 2 of 8 used: the next batch is 2 slots


def test_the_factor_is_cut_per_episode_never_below_the_floor_and_recovers_linearly():
    assert cut_factor(empty_row(), NOW) == pytest.approx(0.7)
    factor, at = 1.0, NOW
    for _ in range(10):
        factor = cut_factor(row(factor=factor, factor_at=at), at)
    assert factor == ADAPT_FLOOR
    cut = row(factor=0.5, factor_at=NOW)
    assert cut.factor_now(NOW + 10) == pytest.approx(0.7) and cut.factor_now(NOW + 100) == 1.0
    assert cut.factor_now(NOW - 5) == 0.5  # a writer ahead of us: no recovery before its time


def test_the_factor_slows_the_schedule():
    cut = row(factor=0.5, factor_at=NOW, owned={UPLOAD: 0.0, POLL: NOW + 1})  # no borrowing
    batch = plan(cut, UPLOAD, NOW, READY, LaneUsage(), SETTINGS)
    assert batch.slots[1] - batch.slots[0] == pytest.approx(1 / (UP * 0.5))


def test_times_from_a_fast_clock_are_rebased_keeping_their_lead():
    fast = row(next={UPLOAD: NOW + 125, POLL: NOW + 0.5}, owned={UPLOAD: NOW + 125, POLL: 0.0},
               at={UPLOAD: NOW + 120, POLL: NOW + 0.5}, hold_until=NOW + 130, factor_at=NOW + 120, etag="e")
    moved, skew = rebase(fast, NOW, stamp=NOW)
    assert moved.next[UPLOAD] == pytest.approx(NOW + 5) and moved.owned[UPLOAD] == pytest.approx(NOW + 5)
    assert moved.at[UPLOAD] == NOW and moved.hold_until == pytest.approx(NOW + 10) and moved.factor_at == NOW
    assert moved.next[POLL] == NOW + 0.5  # within CLOCK_SKEW_BOUND: trusted as is
    assert moved.rebased and moved.etag == "e" and skew.lead == pytest.approx(120) and not skew.reader_behind
    assert fast.next[UPLOAD] == NOW + 125 and not fast.rebased  # the input is left alone


def test_a_reader_behind_the_store_rebases_without_writing_back():
    ahead = row(next={UPLOAD: NOW + 10, POLL: 0.0}, at={UPLOAD: NOW + 5, POLL: 0.0})
    moved, skew = rebase(ahead, NOW, stamp=NOW + 5)
    assert moved.next[UPLOAD] == pytest.approx(NOW + 5) and skew.reader_behind and not moved.rebased


def test_times_within_the_bound_are_trusted_and_a_hold_is_capped():
    close = row(next={UPLOAD: NOW + 3, POLL: 0.0}, at={UPLOAD: NOW + CLOCK_SKEW_BOUND * 0.9, POLL: 0.0},
                hold_until=NOW + 10 * MAX_SHARED_HOLD, factor_at=NOW)
    moved, skew = rebase(close, NOW, stamp=None)
    assert moved.next[UPLOAD] == NOW + 3 and skew.lead == 0.0 and not moved.rebased
    assert moved.hold_until == NOW + MAX_SHARED_HOLD
