"""Regression tests, one per defect the exactly-once review reproduced (issue 10, scenarios 1–9).

Each failed on the code before the fix. Crash scenarios use the simulation harness with one named
crash point; races are replayed step by step against Azurite and the Inqom emulator.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from shared.archive.poll import _record_error, poll_tick
from shared.blobmove import MOVE_ID, candidate_names
from shared.config import SettingsError, load_settings
from shared.ledger.rows import (
    ARCHIVED, DELETED, FAILED, QUARANTINED, QUARANTINING, REFUSED, UPLOADED, UPLOADING, ClaimKeeper, ledger_key,
)
from shared.inqom.polling import PollPolicy
from tests.support.appsettings import app_settings
from tests.support.documents import drop
from tests.support.simulation import World, crash_points, pdf
from tests.support.scenarios import lost_blob_event, routing_failure_to_quarantine, transient_failures_then_watchdog

PDF = pdf("regression")


def crash_where(azurite, scenario, point: str, mode: str, **overrides: str) -> tuple[str, list[str], World]:
    """Run ``scenario`` to the end with one crash at the first point whose name contains ``point``."""
    with World.create(azurite, **overrides) as world:
        scenario(world)
        world.run()
        names = crash_points(world.interceptor.trace)
    index = next(i for i, name in enumerate(names) if point in name)
    with World.create(azurite, **overrides) as world:
        world.interceptor.arm(index, mode)
        scenario(world)
        world.run()
        assert world.crashes == 1
        return names[index], world.check(), world


# 1. The claim row was written before its pending-index entry: a crash in between stranded it.
def test_crash_right_after_the_claim_row_is_written_is_recovered(azurite):
    point, problems, _ = crash_where(azurite, lambda w: w.drop("7/supplier/a.pdf", PDF),
                                     "claim_upload > rows.insert: table insert row", "after")
    assert problems == [], (point, problems)


# 2. The watchdog removed the row's index entry before holding the claim: a tick dying in between left
#    a Failed row with no due time.
@pytest.mark.parametrize("mode", ["before", "after"])
def test_tick_dying_inside_the_upload_watchdog_loses_nothing(azurite, mode):
    def failed_once_then_event_lost(world: World) -> None:
        transient_failures_then_watchdog(world)
        world.events.clear()  # Event Grid gave up: only the poller's watchdog can send it now
        world.invoke("blob", lambda: world.host.deliver_blob("upload_document", "11287/client/vente.pdf"))

    point, problems, world = crash_where(azurite, failed_once_then_event_lost, "_retry_upload", mode)
    assert problems == [], (point, problems)
    assert len(world.inqom.documents) >= 1


# 3. The poller's error path re-read the row and rewrote it after the host's retry had claimed it:
#    the upload then could not record its Inqom id.
def test_poll_error_never_rewrites_a_row_another_worker_claimed(services, inqom):
    ledger = services.ledger
    fields = {"Container": "inbox", "BlobPath": "7/supplier/a.pdf", "BlobETag": "e1", "FolderId": 7}
    first = ledger.claim_upload("7", "k3", fields, claim_seconds=900)
    failed = ledger.update(first, State=FAILED, ClaimUntil=None, NextPollAt=ledger.clock())
    tick_view = ledger.update(failed, PollClaimFor=failed.get("NextPollAt"))  # the tick claims it to poll
    host_retry = ledger.claim_upload("7", "k3", fields, claim_seconds=900)  # the host's retry takes it over
    assert host_retry is not None and host_retry.state == UPLOADING
    _record_error(ledger, PollPolicy(60, 3600, 21600), tick_view, RuntimeError("watchdog upload failed"), ledger.clock())
    recorded = ledger.record_sent(host_retry, 1234, State=UPLOADED, ClaimUntil=None,
                                  NextPollAt=ledger.clock() + timedelta(minutes=1))
    assert recorded.state == UPLOADED and recorded.get("InqomId") == 1234
    assert not recorded.get("Errors")


# 4. A crash after the blob was moved to quarantine and before its row was written: the next delivery
#    said "Gone" and nothing recorded why.
@pytest.mark.parametrize("point", ["quarantine: blob copy", "finish_quarantine > blobmove.move_blob: blob delete"])
def test_crash_during_a_quarantine_move_still_records_it(azurite, point):
    name, problems, _ = crash_where(azurite, routing_failure_to_quarantine, point.split(": ")[-1], "after")
    assert problems == [], (name, problems)


# 5. A backslash (or a dot segment) in a blob name failed every delivery into the poison queue; with
#    identity-based auth the normalised path could even name another blob.
def test_unaddressable_blob_name_is_refused_with_a_reason_and_nothing_else_is_touched(services, host, inqom):
    inbox = services.stores.container(services.settings.inbox_container)
    drop(services, "7/supplier/b.pdf", b"%PDF another document")  # what the collapsed path would name
    inbox.upload_blob("7/supplier/a\\..\\b.pdf", PDF)
    (odd,) = [b.name for b in inbox.list_blobs() if ".." in b.name]
    host.deliver_blob("upload_document", odd)  # no exception: the host does not retry it into poison
    (row,) = services.ledger.scan("BlobPath eq @p", p=odd)
    assert row.state == REFUSED and "segment" in row.get("QuarantineReason")
    assert inqom.calls("POST", "/Documents") == []
    assert {b.name for b in inbox.list_blobs()} == {odd, "7/supplier/b.pdf"}
    assert list(services.ledger.scan("BlobPath eq @p", p="7/supplier/b.pdf")) == []


def test_lost_event_for_an_unaddressable_name_is_refused_by_the_sweep(services, host):
    inbox = services.stores.container(services.settings.inbox_container)
    inbox.upload_blob("7/other/a\\..\\y.pdf", PDF)  # stored as 7/other/a/../y.pdf
    services.ledger.clock = lambda base=services.ledger.clock: base() + timedelta(hours=2)  # past the grace
    host.fire_timer("poll_documents")
    (row,) = list(services.ledger.scan())
    assert row.state == REFUSED


# 7. An upload longer than the claim was taken over and sent again; the first worker's id was lost.
def test_a_slow_upload_keeps_its_claim_alive(services):
    ledger = services.ledger
    fields = {"Container": "inbox", "BlobPath": "7/supplier/slow.pdf", "BlobETag": "e1"}
    claimed = ledger.claim_upload("7", "k7", fields, claim_seconds=0.9)
    with ClaimKeeper(ledger, claimed, claim_seconds=0.9) as keeper:
        time.sleep(2.0)  # more than two claim lengths
        assert ledger.claim_upload("7", "k7", fields, claim_seconds=0.9) is None  # still held
    assert keeper.entry.get("ClaimUntil") > claimed.get("ClaimUntil")
    assert ledger.has_index(keeper.entry)


def test_a_claim_taken_over_still_records_what_it_sent_as_a_linked_upload(services):
    ledger = services.ledger
    fields = {"Container": "inbox", "BlobPath": "7/supplier/slow.pdf", "BlobETag": "e1"}
    slow = ledger.claim_upload("7", "k8", fields, claim_seconds=60)
    ledger.clock = lambda base=ledger.clock: base() + timedelta(minutes=5)  # the claim lapses
    fast = ledger.claim_upload("7", "k8", fields, claim_seconds=60)
    assert fast is not None and fast.get("Attempts") == 2
    outcome = {"State": UPLOADED, "ClaimUntil": None, "NextPollAt": ledger.clock() + timedelta(minutes=1)}
    ledger.record_sent(fast, 2002, **outcome)
    final = ledger.record_sent(slow, 2001, **outcome)  # the first worker finishes last
    assert final.get("InqomId") == 2002 and final.get("ExtraInqomIds") == "2001"
    again = ledger.record_sent(slow, 2001, **outcome)  # idempotent
    assert again.get("ExtraInqomIds") == "2001"


def test_settings_refuse_a_claim_shorter_than_the_function_timeout(azurite):
    with pytest.raises(SettingsError, match="UPLOAD_CLAIM_SECONDS.*functionTimeout"):
        load_settings(app_settings(azurite, UPLOAD_CLAIM_SECONDS="120"))
    assert load_settings(app_settings(azurite, UPLOAD_CLAIM_SECONDS="600")).upload_claim_seconds == 600


# 8. A Duplicate was archived at {OriginId}-{name} with overwrite: a re-drop with other bytes that Inqom
#    called Duplicate replaced the original's verified copy (or deleted it on a checksum mismatch).
def test_a_duplicate_with_other_bytes_never_touches_the_originals_archive(services, host, inqom):
    settings = services.settings
    drop(services, "7/supplier/a.pdf", PDF)
    host.deliver_blob("upload_document", "7/supplier/a.pdf")
    for _ in range(4):
        services.ledger.clock = lambda base=services.ledger.clock: base() + timedelta(minutes=30)
        host.fire_timer("poll_documents")
    (original,) = services.ledger.scan("BlobPath eq @p", p="7/supplier/a.pdf")
    assert original.state == ARCHIVED
    archive = services.stores.container(settings.archive_container)
    original_copy = original.get("ArchivePath").split("/", 1)[1]
    before = archive.get_blob_client(original_copy).get_blob_properties()

    drop(services, "7/supplier/a-scan.pdf", pdf("other bytes"))
    host.deliver_blob("upload_document", "7/supplier/a-scan.pdf")
    (second,) = services.ledger.scan("BlobPath eq @p", p="7/supplier/a-scan.pdf")
    document = inqom._store.by_id[second.get("InqomId")]  # noqa: SLF001 — Inqom's own matching says Duplicate
    document.origin_id = original.get("InqomId")
    inqom.set_status(second.get("InqomId"), "Duplicate")
    for _ in range(3):
        services.ledger.clock = lambda base=services.ledger.clock: base() + timedelta(minutes=30)
        host.fire_timer("poll_documents")
    (second,) = services.ledger.scan("BlobPath eq @p", p="7/supplier/a-scan.pdf")
    assert second.state == ARCHIVED and second.get("OriginId") == original.get("InqomId")
    assert second.get("ArchivePath") != original.get("ArchivePath")
    after = archive.get_blob_client(original_copy).get_blob_properties()
    assert (after.etag, after.metadata) == (before.etag, before.metadata)
    assert archive.get_blob_client(original_copy).download_blob().readall() == PDF


def dropped_with_quarantine_names(services, name):
    """Drop ``name``; its two possible quarantine names and the quarantine container."""
    settings = services.settings
    drop(services, name, PDF)
    etag = services.stores.container(settings.inbox_container).get_blob_client(name).get_blob_properties().etag
    names = candidate_names(name, ledger_key(settings.inbox_container, name, etag))
    return names, services.stores.container(settings.quarantine_container)


# 9. The quarantine fallback name was never checked and the copy was not create-only.
def test_quarantine_never_overwrites_what_is_already_there(services, host):
    name = "7/supplier/virus.exe"
    (first, unique), quarantine = dropped_with_quarantine_names(services, name)
    quarantine.upload_blob(first, b"an earlier file", metadata={MOVE_ID: "someone-else"})
    host.deliver_blob("upload_document", name)
    (row,) = services.ledger.scan("BlobPath eq @p", p=name)
    assert row.state == QUARANTINED and row.get("QuarantinePath").endswith(unique)
    assert quarantine.get_blob_client(first).download_blob().readall() == b"an earlier file"
    assert quarantine.get_blob_client(unique).download_blob().readall() == PDF


def test_quarantine_with_both_names_taken_waits_visibly_instead_of_overwriting(services, host):
    name = "7/supplier/virus2.exe"
    names, quarantine = dropped_with_quarantine_names(services, name)
    for taken in names:
        quarantine.upload_blob(taken, b"not ours", metadata={MOVE_ID: "someone-else"})
    with pytest.raises(Exception, match="already holds"):
        host.deliver_blob("upload_document", name)
    (row,) = services.ledger.scan("BlobPath eq @p", p=name)
    assert row.state == QUARANTINING and services.ledger.has_index(row)
    assert all(b"not ours" == quarantine.get_blob_client(n).download_blob().readall()
               for n in candidate_names(name, row.key))


def test_lost_blob_event_is_adopted_by_the_repair_sweep(azurite):
    with World.create(azurite) as world:
        lost_blob_event(world)
        world.run()
        assert world.check() == []
        assert len(world.inqom.documents) == 1


def test_repair_sweep_reindexes_a_row_whose_index_entry_is_missing(services):
    ledger = services.ledger
    entry = ledger.claim_upload("7", "k10", {"Container": "inbox", "BlobPath": "x.pdf", "BlobETag": "e"}, 900)
    ledger.table.delete_entity("pending", next(iter(ledger.due(entry.next_poll, 1))).index_row_key)
    assert not ledger.has_index(entry)
    from shared.archive.repair import repair_sweep

    report = repair_sweep(services, ledger.clock())
    assert report.reindexed == 1 and ledger.has_index(ledger.get("7", "k10"))


def test_deleted_in_inqom_records_intent_before_moving(services, host, inqom):
    inqom.flow_for_name["gone.pdf"] = ("Received", "Deleted")
    drop(services, "7/other/gone.pdf", PDF)
    host.deliver_blob("upload_document", "7/other/gone.pdf")
    for _ in range(3):
        services.ledger.clock = lambda base=services.ledger.clock: base() + timedelta(minutes=30)
        host.fire_timer("poll_documents")
    (row,) = services.ledger.scan("BlobPath eq @p", p="7/other/gone.pdf")
    assert row.state == DELETED and row.get("QuarantinePath") and row.next_poll is None


def test_claim_keeper_stops_when_the_claim_is_taken_over(services):
    ledger = services.ledger
    fields = {"Container": "inbox", "BlobPath": "t.pdf", "BlobETag": "e"}
    claimed = ledger.claim_upload("7", "k11", fields, claim_seconds=0.6)
    keeper = ClaimKeeper(ledger, claimed, claim_seconds=0.6)
    ledger.update(ledger.get("7", "k11"), State=FAILED, ClaimUntil=None)
    with keeper:
        time.sleep(0.5)
    assert not any(t.name.startswith("claim-") and t.is_alive() for t in threading.enumerate())
    assert ledger.get("7", "k11").state == FAILED


# 16 (with the HTTP layer's tests): a long Retry-After while polling is no error and stops the tick.
def test_a_throttled_poll_is_due_when_inqom_says_and_counts_no_error(services, host, inqom):
    for name in ("7/supplier/t1.pdf", "7/supplier/t2.pdf"):
        drop(services, name, pdf(name))
        host.deliver_blob("upload_document", name)
    services.ledger.clock = lambda base=services.ledger.clock: base() + timedelta(minutes=5)
    inqom.inject("429", times=1, path_contains="/Documents/", retry_after="3600")
    object.__setattr__(services.settings, "poll_workers", 1)  # one worker: the order is known
    report = poll_tick(services)
    assert report.throttled and report.polled == 0
    rows = list(services.ledger.scan())
    throttled = [r for r in rows if "throttled" in (r.get("LastError") or "")]
    assert len(throttled) == 1 and not throttled[0].get("Errors")
    # Retry-After 3600: one answer parks a row at most MAX_SHARED_HOLD (5 minutes), as it holds the fleet
    assert timedelta(minutes=4.9) < throttled[0].next_poll - services.ledger.clock() <= timedelta(minutes=5)
    assert len(inqom.calls("GET", "/Documents/")) == 1  # the rest of the tick waited


def test_a_throttled_upload_is_handed_back_and_never_counts_as_an_attempt(services, host, inqom):
    name = "7/supplier/busy.pdf"
    drop(services, name, PDF)
    inqom.inject("429", times=1, path_contains="/Documents", retry_after="2")  # longer than the 0.05 s cap
    for _ in range(6):  # more deliveries than UPLOAD_MAX_ATTEMPTS, all throttled: still never quarantined
        host.deliver_blob("upload_document", name)  # returns: the host does not retry it towards poison
        (row,) = services.ledger.scan("BlobPath eq @p", p=name)
        assert row.state == FAILED and row.next_poll > services.ledger.clock()
    assert row.get("Throttled") == 6 and row.get("Attempts") == 6
    assert len(inqom.calls("POST", "/Documents")) == 1  # the others waited, sending nothing
    time.sleep(2.1)  # Inqom's Retry-After passes (the hold is real time, shared by every process)
    services.ledger.clock = lambda base=services.ledger.clock: base() + timedelta(seconds=5)
    host.fire_timer("poll_documents")  # the watchdog sends it once Inqom allows
    (row,) = services.ledger.scan("BlobPath eq @p", p=name)
    assert row.state == UPLOADED and len(inqom.documents) == 1
