"""Issue 21: Inqom's reading checked against the e-invoice, the e-invoice on the archive copy, and the CLI.

The comparison, the tags and the metadata are pure and unit-tested. The rest drives the real functions
against Azurite and the Inqom emulator: a document is uploaded as any other, the e-invoice columns the
upload would have read are then written on its row (``Ledger.update``), and the poller archives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import pytest

from shared import metrics
from shared.archive.audit import audit_ocr, names_agree
from shared.archive.poll import archive_metadata, poll_tick
from shared.archive.tags import (
    LEDGER_TEXT_LIMIT, MAX_TAGS, TAG_AMOUNT, TAG_COUNTERPARTY, TAG_DATE, TAG_FOLDER, TAG_ID, TAG_INVOICE, TAG_KIND,
    TAG_SELLER, ArchiveFields, EInvoiceFacts, archive_tags, valid_tag,
)
from shared.blobmove import METADATA_LIMIT
from shared.inqom.client import InqomDocument
from shared.ledger.rows import ARCHIVED, QUARANTINED, REPLAYED, UPLOADED, LedgerEntry
from tests.support.documents import archived_blob, cli, drop

REPO = Path(__file__).resolve().parents[1]
PDF = b"%PDF-1.4\n% ocr audit\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"

#: The terms an upload reads from a Factur-X invoice of ACME to the firm's client (a purchase invoice).
ACME_INVOICE = {
    "EInvoiceFormat": "factur-x", "EInvoiceTypeCode": "380", "EInvoiceNumber": "F-2026-0042",
    "EInvoiceIssueDate": "2026-01-15", "EInvoiceCurrency": "EUR", "EInvoiceSellerName": "ACME Industries SAS",
    "EInvoiceSellerId": "123456789", "EInvoiceSellerVat": "FR12345678901", "EInvoiceBuyerName": "Boulangerie Dupont",
    "EInvoiceTotalWithVat": "1200.00",
}


@pytest.fixture
def settings_overrides():
    return {"POLL_FIRST_DELAY_SECONDS": "60", "POLL_MAX_INTERVAL_SECONDS": "600"}


def read(counter_party=None, amount=None, effectif_date=None) -> ArchiveFields:
    return ArchiveFields(counter_party=counter_party, amount=Decimal(amount) if amount is not None else None,
                         effectif_date=date.fromisoformat(effectif_date) if effectif_date else None)


def invoice(**columns) -> EInvoiceFacts:
    return EInvoiceFacts.from_row({**ACME_INVOICE, **columns})


# --------------------------------------------------------------------------- the comparison (pure)


def test_amounts_compare_as_decimals_and_a_credit_note_in_absolute_value():
    assert audit_ocr(read(amount="1200"), invoice(), "supplier").fields == ()
    assert audit_ocr(read(amount="1200.00"), invoice(EInvoiceTotalWithVat="1200"), "supplier").fields == ()
    wrong = audit_ocr(read(amount="120.00"), invoice(), "supplier")
    assert wrong.ledger_columns() == {"OcrMismatch": "Amount",
                                      "OcrMismatchDetail": "Amount: Inqom 120.00, invoice 1200.00"}
    assert audit_ocr(read(amount="1200.01"), invoice(), "supplier").fields == ("Amount",)
    # Inqom may book a credit note negative; an invoice read negative is a disagreement.
    assert audit_ocr(read(amount="-250.50"), invoice(EInvoiceTypeCode="381", EInvoiceTotalWithVat="250.5"),
                     "supplier").fields == ()
    assert audit_ocr(read(amount="-250.50"), invoice(EInvoiceTotalWithVat="250.50"), "supplier").fields == ("Amount",)


def test_dates_compare_the_entry_date_with_the_issue_date():
    assert audit_ocr(read(effectif_date="2026-01-15"), invoice(), "other").fields == ()
    late = audit_ocr(read(effectif_date="2026-01-31"), invoice(), "other")
    assert late.ledger_columns()["OcrMismatchDetail"] == "EffectifDate: Inqom 2026-01-31, invoice 2026-01-15"


def test_the_counterparty_is_the_seller_of_a_purchase_and_the_buyer_of_a_sale():
    for kind in ("supplier", "other", "expense", None):
        assert audit_ocr(read("ACME Industries"), invoice(), kind).fields == (), kind
        assert audit_ocr(read("Boulangerie Dupont"), invoice(), kind).fields == ("CounterParty",), kind
    assert audit_ocr(read("BOULANGERIE DUPONT SARL"), invoice(), "client").fields == ()
    sale = audit_ocr(read("ACME Industries SAS"), invoice(), "client")
    assert sale.ledger_columns()["OcrMismatchDetail"] == \
        "CounterParty: Inqom ACME Industries SAS, invoice buyer Boulangerie Dupont"


def test_names_agree_normalised_or_as_a_whole_word_run():
    assert names_agree("L'Oréal S.A.", "LOREAL SA") and names_agree("ACME", "ACME Industries SAS")
    assert names_agree("ACME Industries SAS", "acme industries")
    assert not names_agree("ACME", "ACMEX SAS") and not names_agree("Industries ACME", "ACME Industries")
    assert names_agree("北京", "ACME")  # nothing comparable once normalised: not a disagreement


def test_nothing_is_compared_without_both_sides():
    everything = read("Someone Else", "1.00", "2020-01-01")
    assert audit_ocr(everything, EInvoiceFacts.from_row({}), "supplier").ledger_columns() == {}
    assert audit_ocr(everything, EInvoiceFacts.from_row({"EInvoiceFormat": "none"}), "supplier").fields == ()
    cleared = {name: "" for name in ACME_INVOICE}  # the ledger clears a column by writing ''
    assert audit_ocr(everything, EInvoiceFacts.from_row(cleared), "supplier").fields == ()
    unreadable = invoice(EInvoiceTotalWithVat="n/a", EInvoiceIssueDate="2026-02-30", EInvoiceSellerName=None)
    assert (unreadable.total_with_vat, unreadable.issue_date) == (None, None)
    assert audit_ocr(everything, unreadable, "supplier").fields == ()
    assert audit_ocr(ArchiveFields(), invoice(), "supplier").fields == ()
    for absurd in ("NaN", "sNaN", "Infinity", "1e999999999", "1e-999999", "9" * 29):  # its text would not fit
        assert EInvoiceFacts.from_row({"EInvoiceTotalWithVat": absurd}).total_with_vat is None, absurd


def test_the_detail_is_one_bounded_line_in_field_order():
    odd = "ACME\nIndustries\t" + "𝔸" * 3000
    audit = audit_ocr(read(odd, "120", "2026-01-31"), invoice(EInvoiceSellerName="Zeta " * 2000), "supplier")
    columns = audit.ledger_columns()
    assert columns["OcrMismatch"] == "Amount,EffectifDate,CounterParty"
    detail = columns["OcrMismatchDetail"]
    assert "\n" not in detail and "\t" not in detail and detail.startswith("Amount: Inqom 120.00, invoice 1200.00; ")
    assert "; CounterParty: Inqom ACME Industries 𝔸" in detail
    assert len(detail.encode("utf-16-le")) // 2 <= LEDGER_TEXT_LIMIT
    assert set(audit.fields) <= set(metrics.OCR_FIELDS)


def test_the_metric_takes_only_the_compared_fields():
    for field in metrics.OCR_FIELDS:
        metrics.ocr_disagreement(field)  # telemetry is off in the test process: a no-op that must not fail
    with pytest.raises(ValueError):
        metrics.ocr_disagreement("amount")
    assert metrics.ATTRIBUTES[metrics.OCR_DISAGREEMENTS] == (metrics.FIELD_KEY,)
    assert metrics.OCR_DISAGREEMENTS in metrics.METRIC_NAMES


# --------------------------------------------------------------------------- tags and metadata (pure)


def test_the_e_invoice_takes_the_last_two_tags():
    fields = ArchiveFields(counter_party="ACME", amount=Decimal("1200.00"), effectif_date=date(2026, 1, 15),
                           doc_ref="F-2026-0042", third_party_name="Zoë")
    tags = archive_tags(11287, "expense", 42, fields, invoice(EInvoiceNumber="F#2026/0042",
                                                              EInvoiceSellerVat="fr 12 345.678-901"))
    assert len(tags) == MAX_TAGS and all(valid_tag(k, v) for k, v in tags.items())
    assert tags[TAG_INVOICE] == "f 2026/0042" and tags[TAG_SELLER] == "FR12345678901"
    assert archive_tags(7, "supplier", 3, ArchiveFields(), invoice(EInvoiceSellerVat=None))[TAG_SELLER] == "123456789"
    bare = archive_tags(7, "supplier", 3, ArchiveFields(), EInvoiceFacts.from_row({"EInvoiceFormat": "none"}))
    assert bare == archive_tags(7, "supplier", 3, ArchiveFields())  # no e-invoice, no e-invoice tag
    odd = archive_tags(7, "supplier", 3, ArchiveFields(), invoice(EInvoiceNumber="北京", EInvoiceSellerVat="ÉÉ" * 300))
    assert TAG_INVOICE not in odd and len(odd[TAG_SELLER]) <= 256 and valid_tag(TAG_SELLER, odd[TAG_SELLER])


def test_the_archive_metadata_fits_8_kib_whatever_the_values():
    meta = invoice(EInvoiceSellerName="ACME Industries SAS, Saint-Étienne").metadata()
    assert meta == {"einvoicenumber": "F-2026-0042", "sellervat": "FR12345678901", "sellerid": "123456789",
                    "einvoiceformat": "factur-x", "totalwithvat": "1200.00",
                    "sellername": "ACME Industries SAS, Saint-%C3%89tienne"}
    long = "Ét€😀, " * 2000
    document = InqomDocument.parse({"Id": 2**62, "Status": long, "Checksum": "A" * 40, "CounterParty": long,
                                    "Amount": "-9999999999999.99", "EffectifDate": "2025-03-12", "DocRef": long,
                                    "Type": long, "UserDefinedThirdPartyName": long})
    entry = LedgerEntry("11287", "k" * 32, {"Container": "c" * 63, "BlobPath": "é" * 1024})
    total = "-" + "9" * 27 + "." + "9" * 28  # the longest total kept: 28 digits each side of the point
    worst = EInvoiceFacts.from_row({**{name: long for name in ACME_INVOICE}, "EInvoiceTotalWithVat": total})
    metadata = archive_metadata(entry, document, ArchiveFields.from_document(document), worst, 2**62)
    assert {"einvoicenumber", "sellervat", "sellerid", "sellername", "einvoiceformat"} <= set(metadata)
    assert metadata["totalwithvat"] == total  # whole: a cut amount would be another amount
    assert all(value.isascii() for value in metadata.values())
    assert sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items()) <= METADATA_LIMIT


# --------------------------------------------------------------------------- poll → archive (Azurite)


def upload(services, host, name, data=PDF, **einvoice):
    """Drop and upload a document, then give its row the e-invoice columns the upload would have read."""
    drop(services, name, data)
    host.deliver_blob("upload_document", name)
    (entry,) = services.ledger.scan("BlobPath eq @p", p=name)
    return services.ledger.update(entry, **einvoice) if einvoice else entry


def row(services, name):
    (entry,) = services.ledger.scan("BlobPath eq @p", p=name)
    return entry


# The poll tick in a process of its own, with an in-memory meter provider (process-global in OpenTelemetry):
# the OCR counter's data points as the exporter would receive them.
_METERED_TICK = """
import json, sys
from datetime import timedelta
from opentelemetry import metrics as otel
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
otel.set_meter_provider(MeterProvider(metric_readers=[reader]))
from shared import metrics
from shared.archive.poll import poll_tick
from shared.services import get_services
services = get_services()
report = poll_tick(services, now=services.ledger.clock() + timedelta(minutes=2))
points = [[dict(p.attributes), p.value] for resource in reader.get_metrics_data().resource_metrics
          for scope in resource.scope_metrics for metric in scope.metrics if metric.name == metrics.OCR_DISAGREEMENTS
          for p in metric.data.data_points]
json.dump({"archived": report.archived, "errors": report.errors, "points": points}, sys.stdout)
"""


def metered_tick() -> dict:
    result = subprocess.run([sys.executable, "-c", _METERED_TICK], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_a_disagreement_is_noted_counted_and_the_document_archived_all_the_same(services, host, inqom):
    wrong = upload(services, host, "11287/supplier/acme-0042.pdf", PDF + b"1", **ACME_INVOICE)
    inqom.set_status(wrong.get("InqomId"), "Done")
    inqom.set_extracted(wrong.get("InqomId"), CounterParty="ACME Industries", Amount=120,
                        EffectifDate="2026-01-15T00:00:00Z")
    right = upload(services, host, "11287/client/sale-7.pdf", PDF + b"2",
                   **{**ACME_INVOICE, "EInvoiceNumber": "V-7", "EInvoiceTotalWithVat": "99.9"})
    inqom.set_status(right.get("InqomId"), "Done")
    inqom.set_extracted(right.get("InqomId"), CounterParty="Boulangerie Dupont", Amount="99,90",
                        EffectifDate="2026-01-15T00:00:00Z")

    tick = metered_tick()
    assert tick["errors"] == [] and tick["archived"] == 2
    assert tick["points"] == [[{metrics.FIELD_KEY: "Amount"}, 1]]

    noted = row(services, "11287/supplier/acme-0042.pdf")
    assert noted.state == ARCHIVED and noted.get("TaggedAt") and noted.next_poll is None
    assert noted.get("OcrMismatch") == "Amount"
    assert noted.get("OcrMismatchDetail") == "Amount: Inqom 120.00, invoice 1200.00"
    assert noted.get("Amount") == "120.00"  # Inqom's reading is kept as it is: the note sits beside it
    agreed = row(services, "11287/client/sale-7.pdf")
    assert agreed.state == ARCHIVED and agreed.get("OcrMismatch") is None and agreed.get("OcrMismatchDetail") is None

    blob = archived_blob(services, noted)
    assert blob.get_blob_tags() == {
        TAG_FOLDER: "11287", TAG_KIND: "supplier", TAG_ID: str(noted.get("InqomId")),
        TAG_COUNTERPARTY: "acme industries", TAG_DATE: "2026-01-15", TAG_AMOUNT: "p000000012000",
        TAG_INVOICE: "f-2026-0042", TAG_SELLER: "FR12345678901"}
    meta = blob.get_blob_properties().metadata
    assert (meta["einvoicenumber"], meta["sellervat"], meta["sellerid"], meta["totalwithvat"],
            meta["einvoiceformat"]) == ("F-2026-0042", "FR12345678901", "123456789", "1200.00", "factur-x")
    assert unquote(meta["sellername"]) == "ACME Industries SAS" and meta["ledgerkey"] == noted.key
    where = f"@container = '{services.settings.archive_container}' AND \"{TAG_SELLER}\" = 'FR12345678901' " \
            f"AND \"{TAG_INVOICE}\" = 'f-2026-0042'"
    assert [b.name for b in services.stores.blobs.find_blobs_by_tags(where)] == [blob.blob_name]


# --------------------------------------------------------------------------- find, status, show (Azurite)


def test_find_by_e_invoice_before_and_after_archiving(services, host, inqom, capsys):
    archived = upload(services, host, "11287/supplier/acme-0042.pdf", PDF + b"1", **ACME_INVOICE)
    inqom.set_status(archived.get("InqomId"), "Done")
    assert poll_tick(services, now=services.ledger.clock() + timedelta(minutes=2)).archived == 1
    archived = row(services, "11287/supplier/acme-0042.pdf")
    pending = upload(services, host, "11287/supplier/acme-0043.pdf", PDF + b"2",
                     **{**ACME_INVOICE, "EInvoiceNumber": "F-2026-0043", "EInvoiceIssueDate": "2026-02-01"})
    inqom.set_status(pending.get("InqomId"), "Processing")
    upload(services, host, "42/supplier/other-seller.pdf", PDF + b"3",
           **{**ACME_INVOICE, "EInvoiceSellerVat": "DE999999999", "EInvoiceSellerId": "HRB 1"})

    def found(*criteria):
        code, out, err = cli(capsys, "find", *criteria, "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["source"] == "ledger"
        return [(m["path"], m["state"]) for m in data["matches"]]

    inbox = services.settings.inbox_container
    assert found("--invoice-number", "F-2026-0043") == [(f"{inbox}/11287/supplier/acme-0043.pdf", UPLOADED)]
    by_seller = [(f"{inbox}/42/supplier/other-seller.pdf", UPLOADED)]
    assert found("--invoice-number", " F-2026-0042 ") == [(archived.get("ArchivePath"), ARCHIVED), *by_seller]
    assert found("--seller-vat", "de 999 999 999") == by_seller and found("--seller-id", "HRB 1") == by_seller
    assert found("--seller-vat", "fr12 345 678 901") == [(archived.get("ArchivePath"), ARCHIVED),
                                                         (f"{inbox}/11287/supplier/acme-0043.pdf", UPLOADED)]
    assert found("--invoice-number", "F-2026-0042", "--folder", "42") == by_seller
    assert found("--invoice-number", "F-2026-0042", "--folder", "11287", "--kind", "supplier",
                 "--inqom-id", str(archived.get("InqomId"))) == [(archived.get("ArchivePath"), ARCHIVED)]
    assert found("--invoice-number", "F-2026-0042", "--seller-id", "987") == []

    code, out, _ = cli(capsys, "find", "--invoice-number", "F-2026-0043")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["PATH", "STATE", "INVOICE", "ISSUED"]
    assert "acme-0043.pdf  Uploaded  F-2026-0043  2026-02-01  ACME Industries SAS  1200.00" in out
    assert "1 document(s) in the ledger" in out
    code, out, _ = cli(capsys, "find", "--invoice-number", "nothing-like-it")
    assert code == 0 and "no document row matches" in out
    code, _, err = cli(capsys, "find", "--invoice-number", "F-2026-0042", "--counterparty", "ACME", "--account")
    assert code == 1 and "combine only with --folder, --kind and --inqom-id, not with --counterparty, --account" in err
    code, _, err = cli(capsys, "find", "--seller-vat", " - ")
    assert code == 1 and "--seller-vat" in err and "nothing to search for" in err


def test_status_counts_held_duplicates_and_disagreements_and_show_lists_the_e_invoice(services, host, inqom,
                                                                                     capsys):
    first = upload(services, host, "11287/supplier/acme-0042.pdf", PDF + b"1", **ACME_INVOICE)
    inqom.set_status(first.get("InqomId"), "Done")
    inqom.set_extracted(first.get("InqomId"), CounterParty="Someone Else", Amount=1200,
                        EffectifDate="2026-01-31T00:00:00Z")
    assert poll_tick(services, now=services.ledger.clock() + timedelta(minutes=2)).archived == 1
    first = row(services, "11287/supplier/acme-0042.pdf")
    held_as = {"DuplicateOf": f"{first.partition}/{first.key}", "DuplicateOfPath": first.get("BlobPath"),
               "DuplicateOfInqomId": first.get("InqomId"), "NextPollAt": None,
               "QuarantineReason": f"duplicate invoice F-2026-0042 of {first.get('BlobPath')}"}
    held = upload(services, host, "11287/supplier/acme-0042-again.pdf", PDF + b"2", **ACME_INVOICE)
    services.ledger.update(held, State=QUARANTINED, **held_as)
    replayed = upload(services, host, "11287/supplier/acme-0042-replayed.pdf", PDF + b"3", **ACME_INVOICE)
    services.ledger.update(replayed, State=REPLAYED, **held_as)  # no longer held

    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["duplicates_held"] == 1
    assert data["duplicates_of_unsent"] == []  # the first copy is in Inqom
    assert data["ocr_disagreements"] == 1
    assert data["ocr_disagreements_by_field"] == {"CounterParty": 1, "EffectifDate": 1}
    code, out, _ = cli(capsys, "status")
    assert "Business duplicates held in quarantine: 1" in out
    assert "Inqom's reading disagrees with the e-invoice: 1 document(s) (CounterParty 1, EffectifDate 1" in out

    code, out, err = cli(capsys, "show", "11287/supplier/acme-0042.pdf")
    assert code == 0, err
    assert out.index("Extracted by Inqom") < out.index("From the e-invoice") < out.index("Checksums")
    section = out[out.index("From the e-invoice"):out.index("Checksums")]
    for expected in ("EInvoiceNumber", "F-2026-0042", "EInvoiceSellerVat", "FR12345678901", "EInvoiceTotalWithVat",
                     "OcrMismatch ", "EffectifDate,CounterParty", "OcrMismatchDetail",
                     "EffectifDate: Inqom 2026-01-31, invoice 2026-01-15; "
                     "CounterParty: Inqom Someone Else, invoice seller ACME Industries SAS"):
        assert expected in section, expected
    code, out, _ = cli(capsys, "show", "11287/supplier/acme-0042-again.pdf")
    section = out[out.index("From the e-invoice"):]
    assert f"{first.partition}/{first.key}" in section and "DuplicateOfPath" in section
    assert str(first.get("InqomId")) in section
    code, out, _ = cli(capsys, "show", "11287/supplier/acme-0042.pdf", "--json")
    (document,) = json.loads(out)["documents"]
    assert document["OcrMismatch"] == "EffectifDate,CounterParty" and document["EInvoiceFormat"] == "factur-x"
