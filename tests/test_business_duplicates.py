"""One invoice, one Inqom document: the business key and its claim, against Azurite."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import unquote

import pytest

from inqom_bridge_cli.common import CliError
from inqom_bridge_cli.quarantine import replay
from inqom_bridge_cli.status import collect
from shared.http import TransientError
from shared.drop.duplicates import claim_invoice, invoice_identity
from shared.ledger.rows import INVOICE_PARTITION, QUARANTINED, SUPERSEDED, UPLOADED, UPLOADING, Ledger
from tests.conftest import ENFACT_COMPANY, ENFACT_FOLDER, ENFACT_SELLER_VAT
from tests.support.documents import cli, drop, only_row
from tests.support.einvoices import PartyTerms, Terms, cii_invoice, factur_x_pdf, pdf_with_attachment, ubl_invoice
from tests.test_enfact import body_for, push, run_queue_and_inbox, signed_headers

TERMS = {"EInvoiceSellerVat": "FR 12 345678901", "EInvoiceSellerId": "345678901", "EInvoiceSellerName": "ACME SAS",
         "EInvoiceNumber": "F-2026-0042", "EInvoiceTypeCode": "380", "EInvoiceTotalWithVat": "1200.00"}


def identity(**changes):
    return invoice_identity(11287, {**TERMS, **changes})


def test_the_key_names_the_invoice_not_the_file():
    same = identity(EInvoiceSellerVat="fr12345678901", EInvoiceTotalWithVat="1200", EInvoiceNumber="f-2026-0042 ")
    assert same.key == identity().key
    assert str(identity()) == "folder 11287, seller SIREN 345678901, invoice f-2026-0042, type 380, total 1200.00"


@pytest.mark.parametrize("seller", [
    {"EInvoiceSellerVat": None, "EInvoiceSellerId": "345678901"},        # the SIREN alone (e.g. ENFACT_SELLER_IDS)
    {"EInvoiceSellerVat": None, "EInvoiceSellerId": "345 678 901 00017"},  # a SIRET: an establishment of it
    {"EInvoiceSellerVat": "FR12345678901", "EInvoiceSellerId": None},
])
def test_a_french_company_is_one_seller_whichever_of_its_ids_a_channel_carries(seller):
    assert identity(**seller).key == identity().key and identity(**seller).seller == "SIREN 345678901"


def test_a_belgian_company_is_one_seller_by_its_vat_id_or_its_enterprise_number():
    by_vat = identity(EInvoiceSellerVat="BE 0999.888.777", EInvoiceSellerId=None)
    assert by_vat.key == identity(EInvoiceSellerVat=None, EInvoiceSellerId="0999888777").key
    assert by_vat.seller == "BE 0999888777"
    assert identity(EInvoiceSellerVat="DE123456789").seller == "DE123456789"  # any other: as written


def test_the_folder_is_the_folder_id_however_the_path_writes_it():
    assert invoice_identity(int("011287"), TERMS).key == identity().key


@pytest.mark.parametrize("changes", [
    {"EInvoiceTypeCode": "381"},                # a credit note is never a duplicate of an invoice
    {"EInvoiceTotalWithVat": "1200.01"},
    {"EInvoiceNumber": "F-2026-0043"},
    {"EInvoiceSellerVat": "FR98765432109"},
])
def test_any_term_that_differs_makes_another_invoice(changes):
    assert identity(**changes).key != identity().key


def test_another_folder_is_another_invoice():
    assert invoice_identity(11288, TERMS).key != identity().key


def test_the_seller_is_its_vat_id_else_its_legal_id_else_its_name():
    assert identity(EInvoiceSellerVat="DE123456789").seller == "DE123456789"
    assert identity(EInvoiceSellerVat=None, EInvoiceSellerId="HRB 12345").seller == "HRB12345"
    assert identity(EInvoiceSellerVat=None, EInvoiceSellerId=None, EInvoiceSellerName="L'Oréal S.A.").seller == \
        "loreal sa"


@pytest.mark.parametrize("missing", ["EInvoiceNumber", "EInvoiceTotalWithVat"])
def test_no_key_without_a_number_or_a_total(missing):
    assert identity(**{missing: None}) is None


def test_no_key_without_any_seller_identity_or_with_a_total_that_is_not_an_amount():
    assert identity(EInvoiceSellerVat=None, EInvoiceSellerId=None, EInvoiceSellerName=None) is None
    assert identity(EInvoiceTotalWithVat="12,00") is None
    assert identity(EInvoiceTotalWithVat="NaN") is None
    assert identity(EInvoiceTotalWithVat="1e30") is None


@pytest.fixture
def ledger(services) -> Ledger:
    return services.ledger


def document_row(ledger, key, path, state=UPLOADING, **columns):
    return ledger.insert("11287", key, {"BlobPath": path, "State": state, "BusinessKey": identity().key,
                                        "Attempts": 1, **columns})


def test_the_first_row_holds_the_invoice_and_a_second_meets_it(ledger):
    first = document_row(ledger, "a" * 32, "11287/supplier/f42.pdf")
    second = document_row(ledger, "b" * 32, "11287/supplier/f42.xml")
    assert claim_invoice(ledger, first, identity()) is None
    assert claim_invoice(ledger, first, identity()) is None  # an attempt of the same row, again
    held_by = claim_invoice(ledger, second, identity())
    assert (held_by.partition, held_by.key, held_by.path) == ("11287", "a" * 32, "11287/supplier/f42.pdf")
    claim = ledger.get(INVOICE_PARTITION, identity().key)
    assert claim.get("Holder") == f"11287/{'a' * 32}"
    assert list(ledger.scan()) and all(e.partition != INVOICE_PARTITION for e in ledger.scan())


def test_the_holder_stays_the_holder_once_sent_whatever_happens_to_it_after(ledger):
    first = document_row(ledger, "a" * 32, "11287/supplier/f42.pdf")
    claim_invoice(ledger, first, identity())
    ledger.update(first, State=QUARANTINED, InqomId=77)  # sent, then deleted in Inqom and set aside
    second = document_row(ledger, "b" * 32, "11287/supplier/f42-bis.pdf")
    assert claim_invoice(ledger, second, identity()).inqom_id == 77


@pytest.mark.parametrize("state, unsent, taken_over", [
    (SUPERSEDED, 1, True),     # replaced before it could be sent
    (QUARANTINED, 1, True),    # Inqom refused it (400): surely not in Inqom
    (QUARANTINED, 0, False),   # its only attempt's outcome is unknown: it may be in Inqom
    (UPLOADED, 1, False),
])
def test_a_holder_that_surely_never_reached_inqom_lets_a_later_copy_take_over(ledger, state, unsent, taken_over):
    first = document_row(ledger, "a" * 32, "11287/supplier/f42.pdf")
    claim_invoice(ledger, first, identity())
    ledger.update(first, State=state, Unsent=unsent)
    second = document_row(ledger, "b" * 32, "11287/supplier/f42-bis.pdf")
    held_by = claim_invoice(ledger, second, identity())
    assert (held_by is None) is taken_over
    claim = ledger.get(INVOICE_PARTITION, identity().key)
    assert claim.get("Holder") == f"11287/{('b' if taken_over else 'a') * 32}"
    assert (claim.get("TakenOverFrom") == f"11287/{'a' * 32}") is taken_over


def test_status_names_the_held_copies_of_an_invoice_no_file_of_which_reached_inqom(services, ledger):
    first = document_row(ledger, "a" * 32, "11287/supplier/f42.pdf")
    claim_invoice(ledger, first, identity())
    second = document_row(ledger, "b" * 32, "11287/supplier/f42-bis.pdf")
    assert claim_invoice(ledger, second, identity()) is not None
    ledger.update(second, State=QUARANTINED, DuplicateOf=f"11287/{'a' * 32}")
    assert collect(services)["duplicates_of_unsent"] == []  # the first is still on its way
    first = ledger.update(first, State=QUARANTINED, Unsent=1)  # then refused by Inqom for good
    assert collect(services)["duplicates_of_unsent"] == ["11287/supplier/f42-bis.pdf"]
    third = document_row(ledger, "c" * 32, "11287/supplier/f42-ter.pdf")
    assert claim_invoice(ledger, third, identity()) is None  # a later copy takes the invoice over
    ledger.update(third, State=UPLOADED, InqomId=501)
    assert collect(services)["duplicates_of_unsent"] == []


def test_a_claim_naming_a_row_that_does_not_know_the_key_is_taken_over(ledger):
    ledger.insert(INVOICE_PARTITION, identity().key, {"Holder": f"11287/{'c' * 32}"})  # no such row
    second = document_row(ledger, "b" * 32, "11287/supplier/f42-bis.pdf")
    assert claim_invoice(ledger, second, identity()) is None
    assert ledger.get(INVOICE_PARTITION, identity().key).get("Holder") == f"11287/{'b' * 32}"


# --------------------------------------------------------------------------- at the door, end to end


def deliver(services, host, name, data, metadata=None):
    drop(services, name, data, metadata)
    return host.deliver_blob("upload_document", name)


def test_the_invoice_terms_are_on_the_row_at_drop_time_and_the_pdf_is_sent_as_it_is(services, host, inqom):
    data = factur_x_pdf(cii_invoice(Terms()))
    deliver(services, host, "11287/supplier/F-2026-0042.pdf", data)
    (call,) = inqom.calls("POST", "/Documents")
    assert call.files["Document"].data == data
    row = only_row(services, "11287/supplier/F-2026-0042.pdf")
    assert row.state == UPLOADED
    assert {name: row.get(name) for name in ("EInvoiceFormat", "EInvoiceNumber", "EInvoiceIssueDate",
                                             "EInvoiceSellerVat", "EInvoiceSellerName", "EInvoiceTotalWithVat",
                                             "EInvoiceTypeCode", "EInvoiceOrderReference")} == {
        "EInvoiceFormat": "factur-x", "EInvoiceNumber": "F-2026-0042", "EInvoiceIssueDate": "2026-09-15",
        "EInvoiceSellerVat": "FR40732829320", "EInvoiceSellerName": "Société d'Études Générales SAS",
        "EInvoiceTotalWithVat": "1200.00", "EInvoiceTypeCode": "380", "EInvoiceOrderReference": "PO-77"}
    assert row.get("BusinessKey") == invoice_identity(11287, row.fields).key
    assert not row.get("EInvoiceError")


def test_a_second_file_of_one_invoice_is_held_and_replay_force_sends_it(services, host, inqom):
    deliver(services, host, "11287/supplier/F-2026-0042.xml", ubl_invoice(Terms()))
    copy = factur_x_pdf(cii_invoice(Terms()))
    deliver(services, host, "11287/supplier/scan-0042.pdf", copy)
    (call,) = inqom.calls("POST", "/Documents")
    assert call.files["Document"].filename == "F-2026-0042.xml"
    first = only_row(services, "11287/supplier/F-2026-0042.xml")
    held = only_row(services, "11287/supplier/scan-0042.pdf")
    assert held.state == QUARANTINED and held.get("InqomId") in (None, "")
    assert held.get("DuplicateOf") == f"11287/{first.key}" and held.get("DuplicateOfInqomId") == first.get("InqomId")
    reason = "duplicate invoice F-2026-0042 of 11287/supplier/F-2026-0042.xml"
    assert held.get("QuarantineReason") == reason
    quarantined = services.stores.container(services.settings.quarantine_container).get_blob_client(
        "11287/supplier/scan-0042.pdf")
    assert quarantined.download_blob().readall() == copy
    assert unquote(quarantined.get_blob_properties().metadata["reason"]) == reason

    with pytest.raises(CliError, match="held as a duplicate of invoice F-2026-0042.*--force"):
        replay(services, "11287/supplier/scan-0042.pdf")
    replay(services, "11287/supplier/scan-0042.pdf", force=True)
    host.deliver_blob("upload_document", "11287/supplier/scan-0042.pdf")
    assert len(inqom.calls("POST", "/Documents")) == 2
    sent = [e for e in services.ledger.scan("BlobPath eq @p", p="11287/supplier/scan-0042.pdf") if e.get("InqomId")]
    assert len(sent) == 1 and sent[0].get("DuplicateSent") is True and sent[0].get("DuplicateOf") == f"11287/{first.key}"


def test_one_folder_written_two_ways_is_one_folder_for_duplicates(services, host, inqom):
    deliver(services, host, "11287/supplier/F-2026-0042.xml", ubl_invoice(Terms()))
    deliver(services, host, "011287/supplier/F-2026-0042-copy.xml", ubl_invoice(Terms()))
    assert len(inqom.calls("POST", "/Documents")) == 1
    assert only_row(services, "011287/supplier/F-2026-0042-copy.xml").state == QUARANTINED


def test_a_replayed_invoice_is_not_held_as_a_duplicate_of_its_own_earlier_version(services, host, inqom):
    """A first copy that gave up after Inqom's 5xx (its last outcome unknown) keeps its claim; replaying that
    very document (the usual recovery after an outage) sends it, instead of holding it as its own duplicate."""
    name = "11287/supplier/F-2026-0042.xml"
    drop(services, name, ubl_invoice(Terms()))
    inqom.inject("500", times=5, path_contains="/Documents", method="POST")
    for _ in range(4):
        with pytest.raises(TransientError):
            host.deliver_blob("upload_document", name)
    host.deliver_blob("upload_document", name)
    gave_up = only_row(services, name)
    assert gave_up.state == QUARANTINED and not gave_up.get("InqomId")
    replay(services, name)
    host.deliver_blob("upload_document", name)
    (sent,) = [e for e in services.ledger.scan("BlobPath eq @p", p=name) if e.key != gave_up.key]
    assert sent.state == UPLOADED and sent.get("InqomId") and not sent.get("DuplicateOf")
    assert services.ledger.get(INVOICE_PARTITION, sent.get("BusinessKey")).get("TakenOverFrom") == \
        f"11287/{gave_up.key}"


def test_ids_are_kept_folded_so_find_matches_them_however_they_were_written(services, host, inqom, capsys):
    seller = PartyTerms("ACME SAS", "345 678 901", "fr 12 345 678 901")
    deliver(services, host, "11287/supplier/F-2026-0042.xml", ubl_invoice(Terms(seller=seller)))
    row = only_row(services, "11287/supplier/F-2026-0042.xml")
    assert (row.get("EInvoiceSellerVat"), row.get("EInvoiceSellerId")) == ("FR12345678901", "345678901")
    for option, typed in (("--seller-vat", "FR12345678901"), ("--seller-vat", "fr 12 345 678 901"),
                          ("--seller-id", "345678901")):
        code, out, err = cli(capsys, "find", option, typed, "--json")
        assert code == 0 and [m["state"] for m in json.loads(out)["matches"]] == [UPLOADED], (option, typed, err)


def test_a_credit_note_is_never_a_duplicate_of_its_invoice(services, host, inqom):
    deliver(services, host, "11287/supplier/F-2026-0042.xml", ubl_invoice(Terms()))
    deliver(services, host, "11287/supplier/AV-0042.xml", ubl_invoice(Terms(type_code="381"), credit_note=True))
    assert len(inqom.calls("POST", "/Documents")) == 2
    assert only_row(services, "11287/supplier/AV-0042.xml").state == UPLOADED


@pytest.mark.parametrize("settings_overrides", [{"BUSINESS_DUPLICATES": "send"}])
def test_with_business_duplicates_send_the_second_file_is_sent_and_linked(services, host, inqom):
    deliver(services, host, "11287/supplier/F-2026-0042.xml", ubl_invoice(Terms()))
    deliver(services, host, "11287/supplier/scan-0042.pdf", factur_x_pdf(cii_invoice(Terms())))
    assert len(inqom.calls("POST", "/Documents")) == 2
    second = only_row(services, "11287/supplier/scan-0042.pdf")
    assert second.state == UPLOADED and second.get("DuplicateSent") is True
    assert second.get("DuplicateOf") == f"11287/{only_row(services, '11287/supplier/F-2026-0042.xml').key}"


@pytest.mark.parametrize("settings_overrides", [{"BUSINESS_DUPLICATES": "send"}])
def test_a_duplicate_once_sent_is_never_held_later_whatever_the_setting_became(services, host, inqom):
    """Sent as a duplicate with an unknown outcome (a 5xx), then BUSINESS_DUPLICATES=hold: the retry still looks
    the document up in Inqom and records it, rather than setting aside a file that may be in Inqom."""
    deliver(services, host, "11287/supplier/F-2026-0042.xml", ubl_invoice(Terms()))
    inqom.inject("504", times=1, path_contains="/Documents", method="POST")
    with pytest.raises(TransientError):
        deliver(services, host, "11287/supplier/scan-0042.pdf", factur_x_pdf(cii_invoice(Terms())))
    assert only_row(services, "11287/supplier/scan-0042.pdf").get("DuplicateSent") is True
    services.settings = dataclasses.replace(services.settings, business_duplicates="hold")
    host.deliver_blob("upload_document", "11287/supplier/scan-0042.pdf")
    second = only_row(services, "11287/supplier/scan-0042.pdf")
    assert second.state == UPLOADED and second.get("InqomId")
    assert len([d for d in inqom.documents.values() if str(d.get("Name", "")).startswith("scan-0042")]) == 1


def test_a_file_that_cannot_be_read_is_sent_all_the_same_with_the_reason(services, host, inqom):
    data = pdf_with_attachment("factur-x.xml", b"this is not XML <")
    deliver(services, host, "11287/supplier/broken.pdf", data)
    (call,) = inqom.calls("POST", "/Documents")
    assert call.files["Document"].data == data
    row = only_row(services, "11287/supplier/broken.pdf")
    assert row.state == UPLOADED and row.get("EInvoiceError") and row.get("EInvoiceFormat") == "none"
    assert not row.get("BusinessKey")


@pytest.mark.parametrize("settings_overrides", [{"EINVOICE_MAX_PARSE_BYTES": "1024"}])
def test_a_file_over_the_parse_limit_is_sent_unread(services, host, inqom):
    deliver(services, host, "11287/supplier/big.pdf", factur_x_pdf(cii_invoice(Terms())))
    assert len(inqom.calls("POST", "/Documents")) == 1
    row = only_row(services, "11287/supplier/big.pdf")
    assert "EINVOICE_MAX_PARSE_BYTES" in row.get("EInvoiceError") and not row.get("EInvoiceNumber")


def test_an_enfact_push_and_a_drop_of_the_same_invoice_send_one_document(services, host, inqom, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY, number="F2026-0045", total=121.0)
    body = body_for(invoice["id"])
    push(host, body, signed_headers(body))
    run_queue_and_inbox(services, host)
    pushed = only_row(services, f"{ENFACT_FOLDER}/client/enfact-{invoice['id']}.pdf")
    assert (pushed.get("EInvoiceFormat"), pushed.get("EInvoiceNumber"), pushed.get("EInvoiceSellerVat"),
            pushed.get("EInvoiceTotalWithVat"), pushed.get("EInvoiceTypeCode")) == \
        ("enfact", "F2026-0045", ENFACT_SELLER_VAT, "121.0", "380")
    xml = ubl_invoice(Terms(number="F2026-0045", seller=PartyTerms("Our Client SPRL", None, ENFACT_SELLER_VAT),
                            total_with_vat="121.00"))
    deliver(services, host, f"{ENFACT_FOLDER}/client/F2026-0045.xml", xml)
    assert len(inqom.calls("POST", "/Documents")) == 1
    dropped = only_row(services, f"{ENFACT_FOLDER}/client/F2026-0045.xml")
    assert dropped.state == QUARANTINED and dropped.get("DuplicateOf") == f"{ENFACT_FOLDER}/{pushed.key}"


def test_an_enfact_invoice_with_huge_terms_still_fits_the_inbox_metadata_and_keeps_its_key(services, host, inqom,
                                                                                          enfact):
    """Invariant 10 (storage limits by construction): the buyer's name and VAT id give way to 8 KiB, never the
    terms of the business key, so the inbox blob is written (here: then refused by routing, with its reason,
    for a reference longer than Inqom takes) instead of failing every retry of the queue message."""
    number = "N°" + "é" * 400
    invoice = enfact.add_invoice(ENFACT_COMPANY, number=number, customer="Ш" * 400, vat="é" * 400)
    body = body_for(invoice["id"])
    push(host, body, signed_headers(body))
    run_queue_and_inbox(services, host)
    path = f"{ENFACT_FOLDER}/client/enfact-{invoice['id']}.pdf"
    metadata = services.stores.container(services.settings.quarantine_container).get_blob_client(
        path).get_blob_properties().metadata
    assert sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items()) <= 8 * 1024
    assert {"invoicenumber", "invoicetotal", "sellervat"} <= set(metadata)
    row = only_row(services, path)
    assert row.state == QUARANTINED and "docref is longer than 255 characters" in row.get("QuarantineReason")
    assert inqom.calls("POST", "/Documents") == []
