"""Poll → archive: the registered timer function against Azurite and the Inqom emulator."""

from __future__ import annotations

import time

import hashlib
import threading
from datetime import timedelta
from urllib.parse import unquote

import pytest

from shared.archive.poll import poll_tick, safe_name
from shared.ledger.rows import ARCHIVED, DELETED, STALE, UPLOADED
from tests.support.documents import assert_accounted, drop, where_is, later, only_row as row

PDF = b"%PDF-1.4\n% poll test\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"


@pytest.fixture
def settings_overrides():
    # Every poll is due at once in these tests; cadences stay distinguishable in the ledger.
    return {"POLL_FIRST_DELAY_SECONDS": "60", "POLL_MAX_INTERVAL_SECONDS": "600",
            "POLL_REVIEW_INTERVAL_SECONDS": "21600", "POLL_MAX_AGE_HOURS": "24"}


def upload(services, host, name, data=PDF, metadata=None):
    drop(services, name, data, metadata)
    host.deliver_blob("upload_document", name)
    return row(services, name)


def test_received_processing_done_then_archived(services, host, inqom):
    name = "11287/supplier/Facture été 01.pdf"
    entry = upload(services, host, name)
    inqom_id = entry.get("InqomId")
    host.fire_timer("poll_documents")  # not due yet: first poll is 60 s after upload
    assert inqom.calls("GET", f"/Documents/{inqom_id}") == []

    later(services, seconds=61)
    host.fire_timer("poll_documents")
    assert row(services, name).get("InqomStatus") == "Processing"
    first_wait = row(services, name).next_poll - services.ledger.clock()
    later(services, seconds=121)
    host.fire_timer("poll_documents")
    archived = row(services, name)
    assert archived.state == ARCHIVED and archived.get("InqomStatus") == "Done"
    assert timedelta(seconds=110) < first_wait <= timedelta(seconds=120)  # backoff doubled
    expected_path = f"11287/{archived.get('UploadedAt')[:4]}/{archived.get('UploadedAt')[5:7]}/{inqom_id}-Facture_ete_01.pdf"
    assert archived.get("ArchivePath") == f"{services.settings.archive_container}/{expected_path}"
    blob = services.stores.container(services.settings.archive_container).get_blob_client(expected_path)
    assert blob.download_blob().readall() == PDF
    meta = blob.get_blob_properties().metadata
    assert meta["inqomid"] == str(inqom_id) and meta["checksum"] == hashlib.sha1(PDF).hexdigest().upper()
    assert meta["ledgerkey"] == archived.key and unquote(meta["sourcepath"]).endswith(name)
    assert archived.get("ArchivedSha1") == hashlib.sha1(PDF).hexdigest().upper()
    assert archived.next_poll is None
    assert assert_accounted(services, {name: PDF}) == {name: "archive"}
    assert len(inqom.calls("GET", "/public-url")) == 1


def test_human_review_backs_off_to_the_slow_cadence(services, host, inqom):
    name = "7/client/review.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "ToReview", ["JournalNotFound"])
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    polled = row(services, name)
    assert polled.get("InqomStatus") == "ToReview" and polled.get("StatusReasons") == "JournalNotFound"
    wait = polled.next_poll - services.ledger.clock()
    assert timedelta(hours=5, minutes=59) < wait <= timedelta(hours=6)
    assert polled.state == UPLOADED


def test_duplicate_is_linked_to_the_original_and_archived_under_its_own_id(services, host, inqom):
    first = upload(services, host, "7/supplier/a.pdf")
    second = upload(services, host, "7/supplier/a-copy.pdf")
    assert second.get("OriginId") == first.get("InqomId")
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    dup = row(services, "7/supplier/a-copy.pdf")
    assert dup.state == ARCHIVED and dup.get("OriginId") == first.get("InqomId")
    assert f"/{second.get('InqomId')}-a-copy.pdf" in dup.get("ArchivePath")  # unique per document
    copy = services.stores.container(services.settings.archive_container).get_blob_client(
        dup.get("ArchivePath").split("/", 1)[1]).get_blob_properties()
    assert copy.metadata["originid"] == str(first.get("InqomId"))
    later(services, seconds=200)
    host.fire_timer("poll_documents")
    assert row(services, "7/supplier/a.pdf").state == ARCHIVED
    assert assert_accounted(services, {"7/supplier/a.pdf": PDF, "7/supplier/a-copy.pdf": PDF}) == \
        {"7/supplier/a.pdf": "archive", "7/supplier/a-copy.pdf": "archive"}


def test_deleted_in_inqom_goes_to_quarantine(services, host, inqom):
    name = "7/other/gone.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Deleted", ["BookEntriesDeletedByUser"])
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    deleted = row(services, name)
    assert deleted.state == DELETED and "BookEntriesDeletedByUser" in deleted.get("QuarantineReason")
    assert deleted.next_poll is None
    meta = services.stores.container(services.settings.quarantine_container).get_blob_client(name) \
        .get_blob_properties().metadata
    assert "deleted in Inqom" in unquote(meta["reason"])
    assert assert_accounted(services, {name: PDF}) == {name: "quarantine"}


def test_checksum_mismatch_keeps_the_inbox_blob_and_retries(services, host, inqom):
    name = "7/supplier/corrupt.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Done")
    inqom.corrupt_next_downloads = 1
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    failed = row(services, name)
    assert failed.state == UPLOADED and "SHA-1" in failed.get("LastError")
    assert failed.get("ChecksumMismatches") == 1
    assert where_is(services)["archive"] == set()
    assert assert_accounted(services, {name: PDF}) == {name: "inbox"}
    later(services, seconds=200)
    host.fire_timer("poll_documents")
    assert row(services, name).state == ARCHIVED
    assert assert_accounted(services, {name: PDF}) == {name: "archive"}


def test_expired_public_url_is_fetched_again(services, host, inqom):
    name = "7/supplier/slow.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Done")
    inqom.public_url_ttl = 0  # the first URL is dead on arrival
    original_get = services.inqom.get_public_url
    handed = []

    def fresh_after_first(folder, doc):
        url = original_get(folder, doc)
        handed.append(url)
        inqom.public_url_ttl = 300  # the next one lives
        return url

    services.inqom.get_public_url = fresh_after_first
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    assert row(services, name).state == ARCHIVED
    assert len(handed) == 2
    downloads = inqom.calls("GET", "/public/")
    assert [d.status for d in downloads] == [403, 200]


def test_url_on_a_host_not_allowed_is_refused(services, host, inqom, monkeypatch):
    name = "7/supplier/elsewhere.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Done")
    inqom.redirect_public_to = f"http://127.0.0.2:{inqom.port}/x"
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    refused = row(services, name)
    assert refused.state == UPLOADED and "redirect" in refused.get("LastError")
    object.__setattr__(services.settings, "archive_allowed_hosts", ("storage.example.com",))
    inqom.redirect_public_to = None
    later(services, seconds=200)
    host.fire_timer("poll_documents")
    refused = row(services, name)
    assert refused.state == UPLOADED and "ARCHIVE_ALLOWED_HOSTS" in refused.get("LastError")
    assert inqom.calls("GET", "/public/x") == []
    assert assert_accounted(services, {name: PDF}) == {name: "inbox"}


def test_two_concurrent_ticks_archive_each_document_once(services, host, inqom):
    names = [f"9/other/doc{i}.pdf" for i in range(12)]
    for i, name in enumerate(names):
        entry = upload(services, host, name, PDF + bytes([i]))
        inqom.set_status(entry.get("InqomId"), "Done")
    later(services, seconds=61)
    barrier = threading.Barrier(2)
    reports = []

    def run():
        barrier.wait()
        reports.append(poll_tick(services))

    threads = [threading.Thread(target=run) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(r.archived for r in reports) == 12
    assert len(inqom.calls("GET", "/public-url")) == 12
    assert all(row(services, n).state == ARCHIVED for n in names)


def test_batch_limit_leaves_the_rest_for_the_next_tick(services, host, inqom):
    object.__setattr__(services.settings, "poll_batch_size", 3)
    names = [f"9/client/b{i}.pdf" for i in range(5)]
    for i, name in enumerate(names):
        entry = upload(services, host, name, PDF + bytes([i]))
        inqom.set_status(entry.get("InqomId"), "Done")
    later(services, seconds=61)
    first = poll_tick(services)
    assert (first.examined, first.archived) == (3, 3)
    second = poll_tick(services)
    assert (second.examined, second.archived) == (2, 2)
    assert poll_tick(services).examined == 0


def test_old_pending_document_is_flagged_stale(services, host, inqom):
    name = "9/supplier/forever.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Processing")
    later(services, hours=25)
    host.fire_timer("poll_documents")
    stale = row(services, name)
    assert stale.state == STALE and stale.next_poll is not None  # flagged, still followed
    inqom.set_status(entry.get("InqomId"), "Done")
    later(services, hours=2)
    host.fire_timer("poll_documents")
    assert row(services, name).state == ARCHIVED


def test_safe_name():
    assert safe_name("Facture été n°1 (copie).PDF") == "Facture_ete_n1_copie_.PDF"
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("\u202e") == "document"


def test_tick_out_of_time_cuts_the_slow_row_and_the_next_tick_finishes_it(services, host, inqom):
    names = [f"9/other/t{i}.pdf" for i in range(3)]
    for i, name in enumerate(names):
        inqom.set_status(upload(services, host, name, PDF + bytes([i])).get("InqomId"), "Done")
    later(services, seconds=61)
    object.__setattr__(services.settings, "poll_tick_budget", 1.0)
    inqom.inject("slow", times=1, path_contains="/Documents/", method="GET", delay=3)
    started = time.monotonic()
    first = poll_tick(services)
    assert time.monotonic() - started < 1.0 + services.settings.poll_tick_grace
    assert first.examined == 3 and first.archived == 2 and first.cut_short == 1 and not first.errors
    cut = [n for n in names if row(services, n).state != ARCHIVED]
    assert len(cut) == 1 and row(services, cut[0]).next_poll is not None  # released, still due
    object.__setattr__(services.settings, "poll_tick_budget", 60.0)
    second = poll_tick(services)
    assert second.archived == 1 and not second.errors
    assert all(row(services, n).state == ARCHIVED for n in names)


def test_end_to_end_drop_to_archive_with_every_blob_accounted_for(services, host, inqom):
    """Several drops, one of each fate, through the registered functions and repeated ticks."""
    dropped = {
        "11287/supplier/f1.pdf": PDF + b"1",
        "11287/client/v1.pdf": PDF + b"2",
        "11287/expense/Jeanne Dupont/taxi.pdf": PDF + b"3",
        "11287/other/copy-of-f1.pdf": PDF + b"1",   # Inqom: Duplicate of f1
        "11287/supplier/review.pdf": PDF + b"4",     # stays in ToReview
        "11287/supplier/notes.txt": b"not a document",  # refused: extension
    }
    inqom.flow_for_name["review.pdf"] = ("Received", "ToReview")
    for name, data in dropped.items():
        drop(services, name, data)
        host.deliver_blob("upload_document", name)
    for _ in range(8):
        later(services, minutes=20)
        host.fire_timer("poll_documents")
    places = assert_accounted(services, dropped)
    assert places == {
        "11287/supplier/f1.pdf": "archive", "11287/client/v1.pdf": "archive",
        "11287/expense/Jeanne Dupont/taxi.pdf": "archive", "11287/other/copy-of-f1.pdf": "archive",
        "11287/supplier/review.pdf": "inbox", "11287/supplier/notes.txt": "quarantine",
    }
    assert row(services, "11287/supplier/review.pdf").get("InqomStatus") == "ToReview"
    assert inqom.document_count() == 5


def test_inqom_copy_differing_from_what_was_sent_keeps_the_original(services, host, inqom):
    """Inqom's checksum and download agree, but not with the bytes we uploaded: keep both."""
    name = "9/supplier/altered.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Done")
    services.ledger.update(row(services, name), Sha1="0" * 40)  # as if Inqom had stored other bytes
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    archived = row(services, name)
    assert archived.state == ARCHIVED and "differs from the file sent" in archived.get("LastError")
    assert name in where_is(services)["quarantine"]
    assert len(where_is(services)["archive"]) == 1


def test_a_crashed_ticks_claim_lapses_after_the_lease(services, host, inqom):
    name = "9/other/claimed.pdf"
    inqom.set_status(upload(services, host, name).get("InqomId"), "Done")
    later(services, seconds=61)
    now = services.ledger.clock()
    claimed = row(services, name)
    services.ledger.update(claimed, PollClaimFor=claimed.get("NextPollAt"),
                           PollClaimUntil=now + timedelta(minutes=10))  # what a tick that died left behind
    report = poll_tick(services)
    assert (report.skipped, report.archived) == (1, 0)
    later(services, minutes=11)
    assert poll_tick(services).archived == 1
    assert row(services, name).state == ARCHIVED


def test_deleted_in_inqom_never_moves_a_newer_version_of_the_file(services, host, inqom):
    name = "7/supplier/F-1.pdf"
    first = upload(services, host, name, PDF + b"v1")
    drop(services, name, PDF + b"v2 corrected")  # re-dropped under the same name before Inqom deleted v1
    inqom.set_status(first.get("InqomId"), "Deleted")
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    rows = {e.get("BlobETag"): e for e in services.ledger.scan("BlobPath eq @p", p=name)}
    assert [e.state for e in rows.values()] == [DELETED]
    assert where_is(services)["quarantine"] == set()
    host.deliver_blob("upload_document", name)  # v2's own trigger still finds it
    assert inqom.calls("POST", "/Documents")[-1].files["Document"].data == PDF + b"v2 corrected"


def test_repeated_poll_errors_back_off(services, host, inqom):
    name = "9/other/vanished.pdf"
    entry = upload(services, host, name)
    inqom.forbidden_folders.add(9)  # rights revoked: every GET answers 403
    waits = []
    for _ in range(4):
        later(services, hours=2)
        host.fire_timer("poll_documents")
        current = row(services, name)
        waits.append((current.next_poll - services.ledger.clock()).total_seconds())
    assert current.get("Errors") == 4 and "403" in current.get("LastError")
    assert waits == sorted(waits) and waits[0] < waits[-1] <= 600  # doubling, capped by POLL_MAX_INTERVAL
    assert entry.get("InqomId") == current.get("InqomId")


def test_same_file_dropped_twice_under_one_name_keeps_the_originals_archive(services, host, inqom):
    name = "7/supplier/facture.pdf"
    first = upload(services, host, name)
    later(services, seconds=1)
    host.deliver_blob("upload_document", name)  # same version: nothing new
    drop(services, name, PDF)  # same bytes, new blob version: Inqom says Duplicate of the first
    host.deliver_blob("upload_document", name)
    for _ in range(3):
        later(services, minutes=5)
        host.fire_timer("poll_documents")
    rows = list(services.ledger.scan("BlobPath eq @p", p=name))
    assert sorted(r.state for r in rows) == [ARCHIVED, ARCHIVED]
    archive = services.stores.container(services.settings.archive_container)
    blobs = {b.name: b for b in archive.list_blobs(include=["metadata"])}
    assert len(blobs) == 2  # one copy per document: the original's is never overwritten
    assert {r.get("ArchivePath") for r in rows} == {f"{services.settings.archive_container}/{n}" for n in blobs}
    original = next(b for b in blobs.values() if b.metadata["inqomid"] == str(first.get("InqomId")))
    assert "originid" not in original.metadata
