"""Drop → Inqom: the registered blob-trigger function against Azurite and the Inqom emulator."""

from __future__ import annotations

import threading
from datetime import timedelta
from urllib.parse import unquote

import pytest

from shared.http import TransientError
from shared.ledger.rows import DUPLICATE, QUARANTINED, UPLOADED, UPLOADING, ledger_key
from tests.conftest import INQOM_CREDENTIALS
from tests.support.documents import assert_accounted, drop

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def deliver(host, name):
    return host.deliver_blob("upload_document", name)


def row_for(services, name):
    rows = [e for e in services.ledger.scan("BlobPath eq @p", p=name)]
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("name, type_scan", [
    ("11287/supplier/Facture-001.pdf", "Supplier"),
    ("11287/client/Vente 12.pdf", "Client"),
    ("11287/other/relevé.png", "Others"),
])
def test_each_document_kind_arrives_with_its_fields(services, host, inqom, name, type_scan):
    data = PDF + name.encode()
    drop(services, name, data, {"docref": "REF-1"})
    deliver(host, name)
    (call,) = inqom.calls("POST", "/Documents")
    row = row_for(services, name)
    assert call.path == "/api/accounting-documents/accounting-folders/11287/Documents/"
    assert call.form == {"TypeScan": type_scan, "FileSource": "Api", "DocRef": "REF-1", "SourceId": row.key,
                         "DocumentName": name.rsplit("/", 1)[1]}
    assert call.files["Document"].data == data
    assert row.state == UPLOADED and row.get("InqomId") in inqom.documents
    assert row.get("Sha1") == inqom.documents[row.get("InqomId")]["Checksum"]
    assert row.next_poll is not None
    assert assert_accounted(services, {name: data}) == {name: "inbox"}  # stays until archived


@pytest.mark.parametrize("name, metadata", [
    ("11287/expense/Jeanne Dupont/taxi.jpg", {}),
    ("11287/expense/taxi.jpg", {"beneficiary": "Ren%C3%A9 Roux", "docref": "NDF-4"}),
])
def test_expense_bill_beneficiary_from_path_or_metadata(services, host, inqom, name, metadata):
    drop(services, name, b"\xff\xd8jpeg", metadata)
    deliver(host, name)
    (call,) = inqom.calls("POST", "/expense-bills")
    expected = {"BeneficiaryFullName": "Jeanne Dupont" if not metadata else "René Roux", "FileNameWithExtension": "taxi.jpg"}
    if metadata:
        expected["DocumentReference"] = "NDF-4"
    assert call.form == expected
    assert call.files["File"].data == b"\xff\xd8jpeg"
    assert row_for(services, name).get("Kind") == "expense"


def test_redelivered_event_sends_nothing_twice(services, host, inqom):
    name = "5/supplier/a.pdf"
    drop(services, name, PDF)
    first = deliver(host, name)
    again = deliver(host, name)
    assert inqom.document_count() == 1
    assert len(inqom.calls("POST", "/Documents")) == 1
    assert first is None and again is None  # the function returns nothing; the ledger tells
    assert row_for(services, name).state == UPLOADED


def test_concurrent_deliveries_upload_once(services, host, inqom):
    name = "5/client/b.pdf"
    drop(services, name, PDF * 2000)
    inqom.inject("slow", times=1, path_contains="/Documents", delay=0.5)
    errors = []

    def run():
        try:
            deliver(host, name)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert inqom.document_count() == 1
    assert row_for(services, name).state == UPLOADED


def test_crash_after_upload_then_redelivery_finds_what_inqom_made(services, host, inqom):
    """The worker died after Inqom accepted the file but before the ledger said so: the next claim
    looks in Inqom's list (SourceId) before sending, and records the document it finds."""
    name = "5/supplier/crash.pdf"
    drop(services, name, PDF)
    deliver(host, name)
    first = row_for(services, name)
    # Put the row back as the crashed worker left it: claimed, claim expired, no Inqom id.
    stale = services.ledger.update(first, State=UPLOADING, InqomId=None, NextPollAt=None,
                                   ClaimUntil=services.ledger.clock() - timedelta(seconds=1))
    assert stale.state == UPLOADING
    deliver(host, name)
    row = row_for(services, name)
    assert inqom.document_count() == 1
    assert len(inqom.calls("POST", "/Documents")) == 1
    assert row.state == UPLOADED and row.get("InqomId") == first.get("InqomId")
    assert row.get("Attempts") == 2


@pytest.mark.parametrize("name, data, metadata, reason", [
    ("invoices/a.pdf", PDF, {}, "does not match"),
    ("12ab/supplier/a.pdf", PDF, {}, "not a positive integer"),
    ("12/supplier/empty.pdf", b"", {}, "empty"),
    ("12/supplier/big.pdf", PDF * 3000, {}, "limit"),
    ("12/supplier/virus.exe", PDF, {}, "'.exe' is not accepted"),
    ("12/supplier/invoice\u202efdp.pdf", PDF, {}, "control characters"),  # right-to-left override
    ("12/expense/nobody.pdf", PDF, {}, "no beneficiary"),
])
def test_bad_input_is_quarantined_with_a_reason(services, host, inqom, settings_overrides, name, data, metadata, reason):
    drop(services, name, data, metadata)
    deliver(host, name)
    assert inqom.calls("POST") == [] or all("token" in c.path for c in inqom.calls("POST"))
    quarantined = services.stores.container(services.settings.quarantine_container).get_blob_client(name)
    assert reason in unquote(quarantined.get_blob_properties().metadata["reason"])
    row = row_for(services, name)
    assert row.state == QUARANTINED and reason in row.get("QuarantineReason")
    assert assert_accounted(services, {name: data}) == {name: "quarantine"}


@pytest.fixture
def settings_overrides():
    return {"MAX_UPLOAD_BYTES": "100000", "UPLOAD_MAX_ATTEMPTS": "3"}


def test_inqom_refusal_is_quarantined_with_inqoms_message(services, host, inqom):
    name = "12/supplier/refused.pdf"
    drop(services, name, PDF)
    inqom.inject("400", times=1, path_contains="/Documents")
    deliver(host, name)
    row = row_for(services, name)
    assert row.state == QUARANTINED and "HTTP 400" in row.get("QuarantineReason")
    assert assert_accounted(services, {name: PDF}) == {name: "quarantine"}


def test_unknown_folder_is_quarantined(services, host, inqom):
    inqom.unknown_folders.add(404404)
    name = "404404/other/a.pdf"
    drop(services, name, PDF)
    deliver(host, name)
    assert "HTTP 404" in row_for(services, name).get("QuarantineReason")
    assert assert_accounted(services, {name: PDF}) == {name: "quarantine"}


def test_transient_errors_raise_for_the_host_retry_then_succeed(services, host, inqom):
    name = "12/client/flaky.pdf"
    drop(services, name, PDF)
    inqom.inject("503", times=1, path_contains="/Documents", method="POST")  # a POST is not resent in-call
    with pytest.raises(TransientError):
        deliver(host, name)
    row = row_for(services, name)
    assert row.get("State") == "Failed" and "503" in row.get("LastError")
    deliver(host, name)  # the host's retry
    row = row_for(services, name)
    assert row.state == UPLOADED and row.get("Attempts") == 2
    assert inqom.document_count() == 1
    assert assert_accounted(services, {name: PDF}) == {name: "inbox"}


def test_persistent_transient_errors_end_in_quarantine_not_loss(services, host, inqom):
    name = "12/client/down.pdf"
    drop(services, name, PDF)
    inqom.inject("500", times=100, path_contains="/Documents")
    for _ in range(2):
        with pytest.raises(TransientError):
            deliver(host, name)
    deliver(host, name)  # third and last attempt (UPLOAD_MAX_ATTEMPTS=3): quarantined, not raised
    row = row_for(services, name)
    assert row.state == QUARANTINED and "gave up after 3 attempts" in row.get("QuarantineReason")
    assert assert_accounted(services, {name: PDF}) == {name: "quarantine"}


def test_blob_replaced_after_event_is_not_sent_as_the_old_version(services, host, inqom):
    name = "12/other/replaced.pdf"
    drop(services, name, PDF)
    deliver(host, name)
    drop(services, name, PDF + b"v2")  # overwritten: new ETag, new ledger row, new document
    deliver(host, name)
    assert inqom.document_count() == 2
    sent = [c.files["Document"].data for c in inqom.calls("POST", "/Documents")]
    assert sent == [PDF, PDF + b"v2"]


def test_lost_response_is_not_resent_in_call_and_the_retry_finds_the_document(services, host, inqom):
    """Inqom created the document but the answer was lost: no blind resend; the host's retry finds it."""
    name = "12/supplier/lost-answer.pdf"
    drop(services, name, PDF)
    inqom.inject("drop_after_process", times=1, path_contains="/Documents", method="POST")
    with pytest.raises(TransientError):
        deliver(host, name)
    assert inqom.document_count() == 1
    deliver(host, name)
    row = row_for(services, name)
    assert inqom.document_count() == 1 and len(inqom.calls("POST", "/Documents")) == 1
    assert row.state == UPLOADED and row.get("InqomId") in inqom.documents


def test_failed_upload_not_retried_by_the_host_is_retried_by_the_poller(services, host, inqom):
    """The host gave up (or never retried): the pending-index watchdog drives the upload again."""
    name = "12/client/orphaned.pdf"
    drop(services, name, PDF)
    inqom.inject("503", times=1, path_contains="/Documents", method="POST")
    with pytest.raises(TransientError):
        deliver(host, name)
    assert row_for(services, name).state == "Failed"
    base = services.ledger.clock
    services.ledger.clock = lambda: base() + timedelta(seconds=901)
    host.fire_timer("poll_documents")
    row = row_for(services, name)
    assert row.state == UPLOADED and row.get("Attempts") == 2 and row.next_poll is not None
    assert inqom.document_count() == 1


def test_worker_that_died_mid_upload_is_finished_by_the_poller(services, host, inqom):
    """A claim whose worker died (no outcome recorded) comes due in the pending index at its expiry."""
    name = "12/other/died.pdf"
    drop(services, name, PDF)
    props = services.stores.container(services.settings.inbox_container).get_blob_client(name).get_blob_properties()
    key = ledger_key(services.settings.inbox_container, name, props.etag)
    claimed = services.ledger.claim_upload("12", key, {"Container": services.settings.inbox_container,
                                                       "BlobPath": name, "BlobETag": props.etag.strip('"')}, 900)
    assert claimed.next_poll is not None  # the claim's expiry is its watchdog
    deliver(host, name)  # a redelivery while the claim is live does nothing
    assert inqom.document_count() == 0
    base = services.ledger.clock
    services.ledger.clock = lambda: base() + timedelta(seconds=901)
    host.fire_timer("poll_documents")
    row = row_for(services, name)
    assert row.state == UPLOADED and inqom.document_count() == 1 and row.get("Attempts") == 2


def test_refused_credentials_never_quarantine_a_document(services, host, inqom, monkeypatch):
    name = "12/client/creds.pdf"
    drop(services, name, PDF)
    monkeypatch.setattr(inqom, "password", "rotated-elsewhere")
    from shared.auth import AuthenticationError
    for _ in range(4):  # more than UPLOAD_MAX_ATTEMPTS (3 in this module)
        with pytest.raises(AuthenticationError):
            deliver(host, name)
    row = row_for(services, name)
    assert row.state == "Failed" and "invalid_grant" in row.get("LastError") and row.next_poll is not None
    assert assert_accounted(services, {name: PDF}) == {name: "inbox"}
    monkeypatch.setattr(inqom, "password", INQOM_CREDENTIALS["password"])
    deliver(host, name)
    assert row_for(services, name).state == UPLOADED


def test_two_different_files_quarantined_at_one_path_are_both_kept(services, host):
    name = "12/supplier/scan.docx"  # refused extension, a name scanners reuse
    drop(services, name, b"FIRST invoice")
    deliver(host, name)
    drop(services, name, b"SECOND, different invoice")
    deliver(host, name)
    quarantine = services.stores.container(services.settings.quarantine_container)
    contents = sorted(quarantine.get_blob_client(b.name).download_blob().readall() for b in quarantine.list_blobs())
    assert contents == [b"FIRST invoice", b"SECOND, different invoice"]
    paths = sorted(e.get("QuarantinePath") for e in services.ledger.scan("State eq 'Quarantined'"))
    assert len(set(paths)) == 2 and all(p.startswith(services.settings.quarantine_container) for p in paths)
