"""The poller keeps pace (issue 14): concurrent workers under a deadline, downloads off the API budget."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest

from shared.archive.poll import poll_tick
from shared.http import DeadlineExceeded, deadline
from shared.ledger.rows import ARCHIVED, FAILED, UPLOADED
from tests.support.documents import drop, later
from tests.support.simulation import pdf


@pytest.fixture
def settings_overrides():
    return {"POLL_WORKERS": "4", "POLL_TICK_GRACE_SECONDS": "1"}


def uploaded(services, host, inqom, count, status="Done"):
    names = [f"21/supplier/p{i}.pdf" for i in range(count)]
    for name in names:
        drop(services, name, pdf(name))
        host.deliver_blob("upload_document", name)
    for entry in services.ledger.scan():
        inqom.set_status(entry.get("InqomId"), status)
    later(services, seconds=61)
    return names


def states(services):
    return Counter(entry.state for entry in services.ledger.scan())


def test_a_hung_connection_is_cut_at_the_deadline_and_retried_next_tick(services, host, inqom):
    names = uploaded(services, host, inqom, 3)
    object.__setattr__(services.settings, "poll_tick_budget", 1.5)
    object.__setattr__(services.settings, "poll_tick_grace", 5.0)  # the deadline, not the read cap, cuts it
    inqom.inject("drop", times=1, path_contains="/Documents/", method="GET", delay=3600)  # never answers
    started = time.monotonic()
    report = poll_tick(services)
    took = time.monotonic() - started
    assert took < 1.5 + 1.0, took  # the budget, plus scheduling slack: not the 5 s read cap
    assert report.cut_short == 1 and report.archived == 2 and not report.errors
    (left,) = [e for e in services.ledger.scan() if e.state != ARCHIVED]
    assert left.state == UPLOADED and services.ledger.has_index(left) and not left.get("Errors")
    object.__setattr__(services.settings, "poll_tick_budget", 30.0)
    assert poll_tick(services).archived == 1
    assert states(services) == {ARCHIVED: len(names)}


def test_concurrent_workers_never_poll_or_archive_one_row_twice(services, host, inqom):
    names = uploaded(services, host, inqom, 12)
    inqom.latency = 0.02  # the workers overlap
    reports = [poll_tick(services) for _ in range(2)]
    assert sum(r.archived for r in reports) == 12 and reports[0].archived == 12
    doc_paths = Counter(c.path for c in inqom.calls("GET", "/public-url"))
    assert len(doc_paths) == 12 and set(doc_paths.values()) == {1}
    gets = Counter(c.path for c in inqom.calls("GET", "/Documents/") if not c.path.endswith("/public-url"))
    assert set(gets.values()) == {1}
    archive = services.stores.container(services.settings.archive_container)
    assert len(list(archive.list_blobs())) == len(names)


def test_a_tick_with_more_due_rows_than_time_leaves_the_rest_due(services, host, inqom):
    uploaded(services, host, inqom, 12, status="Processing")
    inqom.latency = 0.5
    object.__setattr__(services.settings, "poll_tick_budget", 0.8)
    report = poll_tick(services)
    assert report.out_of_time and report.examined < 12
    due = services.ledger.due(services.ledger.clock() + timedelta(days=1), 100)
    assert len(due) == 12  # polled rows are due later; the others are still due now
    for entry in services.ledger.scan():
        assert services.ledger.has_index(entry) and entry.state == UPLOADED


def test_downloads_proceed_while_the_api_budget_is_exhausted(services, host, inqom):
    uploaded(services, host, inqom, 1)
    (entry,) = services.ledger.scan()
    url = services.inqom.get_public_url(21, entry.get("InqomId"))
    services.inqom_http.throttle.hold_off(3600)  # Inqom told the API client to wait an hour
    assert services.download_http.throttle is None
    data = b"".join(services.inqom.download(url, services.settings.archive_allowed_hosts))
    assert data == pdf("21/supplier/p0.pdf")


def test_a_streamed_download_stops_at_the_deadline(services, host, inqom):
    uploaded(services, host, inqom, 1)
    (entry,) = services.ledger.scan()
    url = services.inqom.get_public_url(21, entry.get("InqomId"))
    with deadline(time.monotonic() + 5, read_cap=1):
        chunks = services.inqom.download(url, services.settings.archive_allowed_hosts)
    with deadline(time.monotonic() - 1, read_cap=1), pytest.raises(DeadlineExceeded):
        next(iter(chunks))


def test_a_watchdog_upload_without_enough_tick_left_is_released_not_counted(services, host, inqom):
    name = "21/client/big.pdf"
    drop(services, name, pdf("big") * 200_000)  # ~12 MB: a cautious estimate needs more than the tick has
    inqom.inject("500", times=8, path_contains="/Documents")
    with pytest.raises(Exception):
        host.deliver_blob("upload_document", name)
    later(services, minutes=20)
    object.__setattr__(services.settings, "poll_tick_budget", 2.0)
    report = poll_tick(services)
    (row,) = services.ledger.scan()
    assert report.cut_short == 1 and row.state == FAILED and services.ledger.has_index(row)
    assert int(row.get("Attempts")) == 1  # the tick did not even claim an upload attempt


def test_pending_gauges_come_from_the_index_alone(services, host, inqom):
    uploaded(services, host, inqom, 3, status="Processing")
    count, overdue = services.ledger.pending_stats(services.ledger.clock())
    assert count == 3 and 0 < overdue < 5  # due 60 s after upload, the clock moved 61 s
    poll_tick(services)
    count, overdue = services.ledger.pending_stats(services.ledger.clock())
    assert count == 3 and overdue == 0  # polled: due again later, none overdue
