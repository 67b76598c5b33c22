"""Edge limits: back-off exponents, Table string and entity sizes, huge OCR values, ASCII-only webhook
timestamps and the rounding of ``find``'s amount bounds.

Storage is Azurite and Inqom the emulator, through the same fixtures as the other tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import unquote

import pytest

from inqom_bridge_cli import main
from shared.archive.tags import MAX_VALUE_LENGTH, TAG_COUNTERPARTY, TAG_DOCREF, ArchiveFields, archive_tags, valid_tag
from shared.ledger.rows import ARCHIVED
from shared.inqom.polling import PollPolicy
from shared.enfact.webhook import SignatureError, verify_signature
from tests.conftest import ENFACT_COMPANY, WEBHOOK_SECRET
from tests.support.documents import assert_accounted, drop, later

PDF = b"%PDF-1.4\n% edge limits\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
ASTRAL = "\U0001d538"  # 𝔸: one character, two UTF-16 code units, four UTF-8 bytes
TABLE_STRING_UNITS = 32_767  # a Table string property holds 64 KiB of UTF-16
TABLE_ENTITY_BYTES = 1024 * 1024


@pytest.fixture
def settings_overrides():
    return {"POLL_FIRST_DELAY_SECONDS": "60", "POLL_MAX_INTERVAL_SECONDS": "600",
            "POLL_REVIEW_INTERVAL_SECONDS": "21600", "POLL_MAX_AGE_HOURS": "24"}


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def well_formed(text: str) -> bool:
    """No lone surrogate (a cut pair would leave one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def entity_bytes(entity: dict) -> int:
    """An entity's size as the Table service counts it (Microsoft's formula; strings and numbers only here)."""
    size = 4 + 2 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        value = getattr(value, "value", value)
        size += 8 + 2 * len(name) + (4 + 2 * utf16_units(value) if isinstance(value, str) else 8)
    return size


def only_row(services, name):
    (entry,) = list(services.ledger.scan("BlobPath eq @p", p=name))
    return entry


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- 1. poll back-off


def test_poll_backoff_caps_without_overflow_for_any_number_of_polls():
    policy = PollPolicy(first_delay=60.0, max_interval=600.0, review_interval=21600.0)  # floats, as settings give
    for polls in (1024, 1025, 10**6):
        assert policy.next_delay("Processing", polls) == timedelta(seconds=600), polls
        assert policy.next_delay(None, polls) == timedelta(seconds=600), polls
    assert [policy.next_delay("Received", n).total_seconds() for n in (-1, 0, 1, 2, 3, 4)] == [60, 60, 120, 240,
                                                                                               480, 600]
    odd = PollPolicy(first_delay=7.0, max_interval=1000.0, review_interval=5.0)
    assert odd.next_delay("Processing", 7) == timedelta(seconds=896)  # 7 · 2^7, just below the cap
    assert odd.next_delay("Processing", 8) == odd.next_delay("Processing", 5000) == timedelta(seconds=1000)
    assert odd.next_delay("ToReview", 10**6) == timedelta(seconds=5)
    assert PollPolicy(900.0, 600.0, 60.0).next_delay("Pending", 10**6) == timedelta(seconds=600)


# --------------------------------------------------------------------------- 2. Table strings


def test_table_strings_are_cut_by_utf16_length_and_rows_fit_one_mebibyte(services):
    ledger = services.ledger
    astral = ASTRAL * 20_000  # 20,000 characters, 40,000 UTF-16 units, 80 KB
    odd_cut = "x" + ASTRAL * 20_000  # a cut at an even unit count would fall inside a pair
    fields = {"CounterParty": astral, "DocRef": odd_cut, "LastError": "é" * 40_000, "Short": "ok " + ASTRAL}
    ledger.insert("11287", "edge-strings", fields)
    stored = ledger.get("11287", "edge-strings")
    for name in ("CounterParty", "DocRef", "LastError"):
        value = stored.get(name)
        assert utf16_units(value) <= TABLE_STRING_UNITS and well_formed(value), name
        assert value.endswith("…") and fields[name].startswith(value[:-1]) and len(value) > 1000, name
    assert stored.get("Short") == "ok " + ASTRAL  # short texts untouched

    # A row whose many columns are each as long as a Table string may be: the row still fits 1 MiB.
    wide = {f"Text{i:02d}": ASTRAL * 16_384 for i in range(24)}
    entry = ledger.insert("11287", "edge-wide", wide)
    entry = ledger.update(entry, LastError="x" * 40_000, StatusReasons="y" * 40_000)
    stored = ledger.get("11287", "edge-wide")
    assert entity_bytes({"PartitionKey": "11287", "RowKey": "edge-wide", **stored.fields}) < TABLE_ENTITY_BYTES
    assert all(stored.get(name).startswith(ASTRAL * 100) for name in wide)


# --------------------------------------------------------------------------- 3. huge OCR values


def test_extracted_values_fit_columns_metadata_and_tags_by_construction_even_malformed():
    lone = "F-\ud835" + "é" * 50_000  # a lone surrogate, as a JSON "\ud835" escape decodes
    fields = ArchiveFields(counter_party=ASTRAL * 20_000, amount=Decimal("-1234.5"), effectif_date=date(2025, 3, 12),
                           doc_ref=lone, type="T" * 100_000, third_party_name="Zoë\udc00" + ASTRAL * 40_000)
    columns = fields.ledger_columns()
    for name in ("CounterParty", "DocRef", "InqomType", "UserDefinedThirdPartyName"):
        value = columns[name]
        assert 100 < utf16_units(value) <= TABLE_STRING_UNITS and well_formed(value), name
    assert ASTRAL * 20_000 != columns["CounterParty"] and (ASTRAL * 20_000).startswith(columns["CounterParty"])
    assert columns["DocRef"].startswith("F-\ufffdéé") and columns["UserDefinedThirdPartyName"].startswith("Zoë\ufffd")
    meta = fields.metadata()
    assert all(v.isascii() for v in meta.values())
    # The archiver adds its own (source path ≤ 2,000, ids, checksum): these leave it more than half the 8 KiB.
    assert sum(len(k) + len(v) for k, v in meta.items()) <= 4096
    assert unquote(meta["docref"]).startswith("F-\ufffdé") and unquote(meta["beneficiary"]).startswith("Zoë\ufffd")
    tags = archive_tags(11287, "supplier", 42, fields)
    assert len(tags) <= 10 and all(valid_tag(k, v) for k, v in tags.items())
    assert tags[TAG_COUNTERPARTY] == "a" * MAX_VALUE_LENGTH and tags[TAG_DOCREF].startswith("f- eee")


def test_huge_ocr_values_are_cut_and_the_document_is_archived_all_the_same(services, host, inqom):
    huge_name = ASTRAL * 20_000
    huge_ref = "F-" + "Ré/" * 30_000
    huge_beneficiary = "Zoë " + "x" * 70_000
    inqom.extraction_for_name["huge.pdf"] = {
        "CounterParty": huge_name, "DocRef": huge_ref, "UserDefinedThirdPartyName": huge_beneficiary,
        "Amount": 10.5, "EffectifDate": "2025-03-12T00:00:00Z"}
    name = "11287/supplier/huge.pdf"
    drop(services, name, PDF)
    host.deliver_blob("upload_document", name)
    entry = only_row(services, name)
    inqom.set_status(entry.get("InqomId"), "Done")
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    later(services, seconds=700)
    host.fire_timer("poll_documents")  # a second tick would finish a first that failed half-way

    archived = only_row(services, name)
    assert archived.state == ARCHIVED, archived.get("LastError")
    assert assert_accounted(services, {name: PDF}) == {name: "archive"}  # a verified copy, the inbox blob gone
    container, _, path = archived.get("ArchivePath").partition("/")
    blob = services.stores.container(container).get_blob_client(path)
    assert blob.download_blob().readall() == PDF
    assert hashlib.sha1(PDF).hexdigest().upper() == archived.get("ArchivedSha1")

    # Stored values are cut, not absent: a prefix of the original, within the Table's string limit.
    for column, original in (("CounterParty", huge_name), ("UserDefinedThirdPartyName", huge_beneficiary)):
        value = archived.get(column)
        assert value and original.startswith(value.rstrip("…")) and utf16_units(value) <= TABLE_STRING_UNITS
        assert well_formed(value), column
    doc_ref = archived.get("DocRef")
    assert doc_ref.startswith("F-Ré/Ré/") and utf16_units(doc_ref) <= TABLE_STRING_UNITS
    assert archived.get("Amount") == "10.50"

    props = blob.get_blob_properties()
    meta = props.metadata
    assert sum(len(k) + len(v.encode()) for k, v in meta.items()) <= 8 * 1024
    assert meta["counterparty"] and huge_name.startswith(unquote(meta["counterparty"]))
    assert unquote(meta["docref"]).startswith("F-Ré/") and unquote(meta["beneficiary"]).startswith("Zoë xxx")
    tags = blob.get_blob_tags()
    assert all(valid_tag(k, v) for k, v in tags.items()) and len(tags) <= 10
    assert tags[TAG_COUNTERPARTY] == "a" * MAX_VALUE_LENGTH  # 𝔸 folds to "a"
    assert tags[TAG_DOCREF].startswith("f-") and len(tags[TAG_DOCREF]) <= MAX_VALUE_LENGTH


# --------------------------------------------------------------------------- 4. webhook timestamps


def signed_with_text_timestamp(body: bytes, timestamp_text: str, webhook_id: str = "msg_edge") -> dict[str, str]:
    """Headers whose signature is right for ``timestamp_text`` as sent: only the timestamp check may refuse them."""
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp_text}.".encode() + body, hashlib.sha256).digest()
    return {"Content-Type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": timestamp_text,
            "webhook-signature": "v1," + base64.b64encode(digest).decode()}


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize("digits", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
def test_webhook_timestamp_in_non_ascii_digits_is_refused(digits):
    body = b'{"type": "invoice.created"}'
    now = int(time.time())
    headers = signed_with_text_timestamp(body, str(now).translate(digits))
    with pytest.raises(SignatureError, match="webhook-timestamp"):
        verify_signature(WEBHOOK_SECRET, headers, body, now=now)
    assert verify_signature(WEBHOOK_SECRET, signed_with_text_timestamp(body, str(now)), body, now=now) == "msg_edge"


def test_http_push_with_arabic_indic_timestamp_gets_401_and_nothing_is_queued(services, host):
    body = json.dumps({"type": "invoice.created",
                       "data": {"invoice_id": "5001", "company_uuid": ENFACT_COMPANY}}).encode()
    headers = signed_with_text_timestamp(body, str(int(time.time())).translate(ARABIC_INDIC), "msg_arabic")
    response = host.call_http("enfact_webhook", "POST", "http://localhost/api/enfact/invoices", headers, body)
    assert response.status_code == 401
    assert json.loads(response.get_body())["error"] == "invalid_signature"
    queue = services.stores.queue(services.settings.enfact_queue)
    assert list(queue.receive_messages(messages_per_page=32, visibility_timeout=1)) == []


# --------------------------------------------------------------------------- 5. find's amount bounds


@pytest.fixture
def ten_and_minus_ten(services, host, inqom):
    """Two archived documents: one of 10.00, one of −10.00."""
    for name, amount in (("11287/supplier/ten.pdf", 10.0), ("11287/client/minus-ten.pdf", -10.0)):
        drop(services, name, PDF + name.encode())
        host.deliver_blob("upload_document", name)
        entry = only_row(services, name)
        inqom.set_status(entry.get("InqomId"), "Done")
        inqom.set_extracted(entry.get("InqomId"), CounterParty="ACME", Amount=amount)
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    for name in ("11287/supplier/ten.pdf", "11287/client/minus-ten.pdf"):
        assert only_row(services, name).state == ARCHIVED


def found(capsys, *bounds) -> list[str]:
    code, out, err = cli(capsys, "find", "--counterparty", "ACME", *bounds, "--json")
    assert code == 0, err
    return sorted(m["name"].split("-", 1)[1] for m in json.loads(out)["matches"])


def test_find_rounds_the_minimum_up_and_the_maximum_down_to_the_cent(services, ten_and_minus_ten, capsys):
    assert found(capsys, "--min-amount", "10.004") == []
    assert found(capsys, "--max-amount", "9.995", "--min-amount", "0") == []
    assert found(capsys, "--min-amount", "10") == found(capsys, "--min-amount", "9.991") == ["ten.pdf"]
    assert found(capsys, "--max-amount", "10", "--min-amount", "10") == ["ten.pdf"]
    assert found(capsys, "--max-amount", "10.009", "--min-amount", "0") == ["ten.pdf"]
    # Negative amounts: ceiling and floor, not towards or away from zero.
    assert found(capsys, "--max-amount", "-10.004") == []
    assert found(capsys, "--min-amount", "-9.995") == ["ten.pdf"]
    assert found(capsys, "--min-amount", "-10.004", "--max-amount", "-9.995") == ["minus-ten.pdf"]
    assert found(capsys, "--min-amount", "0.000000000000000000000000000001") == ["ten.pdf"]


@pytest.mark.parametrize("bound", ["--min-amount", "--max-amount"])
@pytest.mark.parametrize("amount", ["123456789012345678901234567890", "-123456789012345678901234567890.5",
                                    "10000000000"])
def test_find_amount_bound_beyond_the_tags_is_a_one_line_usage_error(services, capsys, bound, amount):
    code, out, err = cli(capsys, "find", bound, amount)
    assert code == 2 and out == ""
    (line,) = [text for text in err.splitlines() if "error" in text]
    assert "beyond" in line and amount in line
    assert "Traceback" not in err
