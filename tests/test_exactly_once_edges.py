"""Exactly once at the edges: odd-but-legal Inqom answers, lost answers, a crash after the archive
commit, a duplicate whose inbox file changed, rows adopted by the repair sweep, two enFact messages
for one invoice. Each test failed on the code before its fix (issues 19 and 23).

Driven through the registered functions (``host``) against Azurite and the loopback emulators.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from shared.enfact.fetch import fetch_invoice
from shared.enfact.push import enfact_row_key
from shared.http import TransientError
from shared.ledger.rows import ARCHIVED, DUPLICATE, QUARANTINED, UPLOADED
from tests.conftest import ENFACT_COMPANY, ENFACT_FOLDER
from tests.support.documents import assert_accounted, drop, later, only_row as row

PDF = b"%PDF-1.4\n% edge case\n%%EOF\n"


@pytest.fixture
def settings_overrides():
    return {"POLL_FIRST_DELAY_SECONDS": "60", "POLL_MAX_INTERVAL_SECONDS": "600", "REPAIR_GRACE_MINUTES": "30"}


def deliver(host, name):
    return host.deliver_blob("upload_document", name)


def named_ids(services) -> set[int]:
    ids: set[int] = set()
    for entry in services.ledger.scan():
        for column in ("InqomId", "OriginId"):
            if entry.get(column) not in (None, ""):
                ids.add(int(entry.get(column)))
        ids.update(int(x) for x in str(entry.get("ExtraInqomIds") or "").split(",") if x)
    return ids


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("odd", ["ok_empty_array", "ok_two_elements", "ok_no_id"])
def test_an_accepted_upload_whose_answer_names_no_document_is_found_not_resent(services, host, inqom, odd):
    name = f"11287/supplier/{odd}.pdf"
    drop(services, name, PDF + odd.encode())
    inqom.inject(odd, path_contains="/Documents", method="POST")
    deliver(host, name)
    entry = row(services, name)
    (document_id,) = inqom.documents
    assert entry.state == UPLOADED and entry.get("InqomId") == document_id
    assert len(inqom.calls("POST", "/Documents")) == 1


@pytest.mark.parametrize("odd", ["ok_empty_array", "ok_no_id"])
def test_an_accepted_expense_bill_whose_answer_names_no_id_is_found_by_its_checksum(services, host, inqom, odd):
    name = "11287/expense/Jeanne Dupont/taxi.jpg"
    drop(services, name, b"\xff\xd8 taxi " + odd.encode())
    inqom.inject(odd, path_contains="/expense-bills", method="POST")
    deliver(host, name)
    (document_id,) = inqom.documents
    assert row(services, name).get("InqomId") == document_id
    assert len(inqom.calls("POST", "/expense-bills")) == 1


@pytest.mark.parametrize("path, kind", [("11287/supplier/lost.pdf", "/Documents"),
                                        ("11287/expense/Jeanne Dupont/lost.jpg", "/expense-bills")])
def test_answers_lost_twice_leave_one_document_that_the_row_names(services, host, inqom, path, kind):
    """The answer is lost after Inqom made the document, on two deliveries in a row: every later
    attempt looks first, so Inqom holds one document and the row names it."""
    drop(services, path, PDF + path.encode())
    inqom.inject("drop_after_process", times=1, path_contains=kind, method="POST")
    with pytest.raises(TransientError):
        deliver(host, path)
    inqom.inject("504", times=1, path_contains=kind, method="POST")
    deliver(host, path)  # finds the first one; never sends
    deliver(host, path)
    assert len(inqom.documents) == 1 and len(inqom.calls("POST", kind)) == 1
    assert set(inqom.documents) <= named_ids(services)
    assert row(services, path).state == UPLOADED


# --------------------------------------------------------------------------- poll and archive


class Crash(BaseException):
    """The process dies here (nothing in the app catches a BaseException)."""


def test_crash_after_the_archive_commit_then_deleted_in_inqom_ends_archived(services, host, inqom, monkeypatch):
    import shared.archive.poll as archiver

    name = "11287/supplier/committed.pdf"
    drop(services, name, PDF)
    deliver(host, name)
    entry = row(services, name)
    inqom.set_status(entry.get("InqomId"), "Done")

    def crash(*args, **kwargs):
        raise Crash()

    monkeypatch.setattr(archiver, "_release_inbox_blob", crash)
    later(services, seconds=61)
    with pytest.raises(Crash):
        host.fire_timer("poll_documents")
    monkeypatch.undo()
    inqom.set_status(entry.get("InqomId"), "Deleted")
    later(services, minutes=11)  # the crashed tick's poll claim lapses
    host.fire_timer("poll_documents")
    archived = row(services, name)
    assert archived.state == ARCHIVED and archived.get("InqomStatus") == "Deleted"
    assert assert_accounted(services, {name: PDF}) == {name: "archive"}


def test_a_duplicate_whose_inbox_file_was_replaced_is_archived_from_inqom(services, host, inqom):
    drop(services, "11287/supplier/a.pdf", PDF)
    deliver(host, "11287/supplier/a.pdf")
    copy = "11287/supplier/scan.pdf"
    drop(services, copy, PDF)
    deliver(host, copy)
    duplicate = row(services, copy)
    assert duplicate.state == DUPLICATE
    drop(services, copy, PDF + b"the scanner reused the name")  # before the duplicate's first poll
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    entry = services.ledger.get(duplicate.partition, duplicate.key)
    assert entry.state == ARCHIVED and entry.get("OriginId") == row(services, "11287/supplier/a.pdf").get("InqomId")
    archive = services.stores.container(services.settings.archive_container)
    assert archive.get_blob_client(entry.get("ArchivePath").split("/", 1)[1]).download_blob().readall() == PDF


def test_unknown_status_with_a_comma_or_over_64_characters_is_logged_once(services, host, inqom, caplog):
    name = "11287/supplier/odd-status.pdf"
    drop(services, name, PDF)
    deliver(host, name)
    entry = row(services, name)
    status = "Archiving, step " + "x" * 80
    inqom.set_status(entry.get("InqomId"), status, unknown=True)
    for _ in range(3):
        later(services, days=1)
        host.fire_timer("poll_documents")
    warnings = [r for r in caplog.records if "documentation does not name" in r.getMessage()]
    assert len(warnings) == 1
    assert row(services, name).get("UnknownStatusLogged").count(",") == 0


# --------------------------------------------------------------------------- repair sweep adoption


def _adopt(services, host, name, data, metadata=None):
    drop(services, name, data, metadata)  # no event: only the repair sweep can find it
    later(services, minutes=31)
    host.fire_timer("poll_documents")  # the sweep adopts it, due now
    host.fire_timer("poll_documents")  # the watchdog drives it


@pytest.mark.parametrize("name, data", [("11287/supplier/virus.exe", PDF), ("11287/supplier/empty.pdf", b""),
                                        ("no-folder/supplier/a.pdf", PDF)])
def test_an_adopted_blob_refused_by_routing_is_quarantined(services, host, inqom, name, data):
    _adopt(services, host, name, data)
    entry = row(services, name)
    assert entry.state == QUARANTINED and entry.get("QuarantineReason")
    assert assert_accounted(services, {name: data}) == {name: "quarantine"}
    assert inqom.documents == {}


def test_an_adopted_row_keeps_kind_folder_and_enfact_id(services, host, inqom):
    name = f"{ENFACT_FOLDER}/client/enfact-9001.pdf"
    _adopt(services, host, name, PDF, {"source": "enfact", "enfactid": "9001", "sourceid": "9001"})
    entry = row(services, name)
    assert entry.state == UPLOADED
    assert (entry.get("Kind"), entry.get("FolderId"), entry.get("EnfactId")) == ("client", ENFACT_FOLDER, "9001")


# --------------------------------------------------------------------------- enFact


def test_two_messages_for_one_invoice_reach_inqom_once(services, host, inqom, enfact):
    """``invoice.created`` and ``invoice.updated``: the first message's PDF fetch is slow; the second
    message finds the first one's lease and leaves the invoice to it, then everything is archived."""
    invoice = enfact.add_invoice(ENFACT_COMPANY, number="F2026-0099")
    enfact.inject("slow", delay=1.5, path_contains=".pdf")
    message = {"company_uuid": ENFACT_COMPANY, "invoice_id": str(invoice["id"]), "event": "invoice.created"}
    slow = threading.Thread(target=fetch_invoice, args=(services, message, "message-1"))
    slow.start()
    for _ in range(100):  # until the first message has marked the row Writing
        entry = services.ledger.get("enfact", enfact_row_key(ENFACT_COMPANY, str(invoice["id"])))
        if entry is not None and entry.state == "Writing":
            break
        threading.Event().wait(0.02)
    second = fetch_invoice(services, {**message, "event": "invoice.updated"}, "message-2")
    assert second == "Writing"
    slow.join(10)
    inbox = services.stores.container(services.settings.inbox_container)
    names = [b.name for b in inbox.list_blobs()]
    assert names == [f"{ENFACT_FOLDER}/client/enfact-{invoice['id']}.pdf"]
    deliver(host, names[0])
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    later(services, seconds=121)
    host.fire_timer("poll_documents")
    assert row(services, names[0]).state == ARCHIVED
    assert fetch_invoice(services, {**message, "event": "invoice.updated"}, "message-3") == "InInbox"
    assert list(inbox.list_blobs()) == [] and len(inqom.documents) == 1


# --------------------------------------------------------------------------- the pending index


def test_a_stale_looking_index_entry_rewritten_by_a_claim_is_not_dropped(services):
    """A claim's first insert writes its index entry, finds the row and stalls; a tick reads that entry
    as stale (the row's due time differs); the claim then takes the row over with that same due time.
    The tick's drop must not remove the now-live entry (found by the interleaving simulation)."""
    ledger = services.ledger
    base = ledger.clock()
    offset = [timedelta(0)]
    ledger.clock = lambda: base + offset[0]
    fields = {"Container": "inbox", "BlobPath": "7/supplier/a.pdf", "BlobETag": "e1", "FolderId": 7}
    ledger.claim_upload("7", "k", fields, 900)
    claim_until = ledger.clock() + timedelta(seconds=901)
    ledger._index("7", "k", None, claim_until)  # noqa: SLF001 (the second claim's insert: entry first, then conflict)
    offset[0] = timedelta(seconds=961)
    stale = next(item for item in ledger.due(ledger.clock(), 10) if item.due == claim_until)
    assert ledger.get("7", "k").next_poll != stale.due  # what the tick sees: an entry the row disowns
    entry = ledger.get("7", "k")
    taken = ledger.update(entry, State="Uploading", Attempts=2, ClaimUntil=claim_until, NextPollAt=claim_until)
    ledger.drop_index(stale)
    assert ledger.has_index(taken)
