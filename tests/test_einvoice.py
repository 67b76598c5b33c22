"""The e-invoice reader (``shared.einvoice``): every term of UBL, CII, Factur-X and ZUGFeRD documents, hostile
files refused fast with a reason, the blob path against Azurite, and the ``einvoice`` CLI in a subprocess."""

from __future__ import annotations

import ast
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator

import pytest
from azure.core.exceptions import ResourceModifiedError
from azure.storage.blob import BlobClient, BlobServiceClient
from pypdf import PdfWriter

from shared import einvoice
from shared.einvoice import (
    CII, FACTUR_X, UBL, ZUGFERD, EInvoice, EInvoiceError, NotAnEInvoice, Party, read_einvoice, read_einvoice_blob,
)
from tests.support.einvoices import (
    BUYER, CREDIT, EN16931, MINIMAL, SELLER, PartyTerms, Terms, blank_pdf, cii_invoice, entity_bomb,
    external_dtd_ubl, factur_x_pdf, pdf_with_attachment, ubl_invoice, write_large_ubl, xxe_ubl,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
CAP = 20 * MiB
FAST = 1.0  # seconds: a hostile file is refused well within this


def read(data: bytes, max_bytes: int = CAP) -> EInvoice:
    return read_einvoice(io.BytesIO(data), max_bytes=max_bytes)


def refusal(data: bytes, kind: type[EInvoiceError] = EInvoiceError, max_bytes: int = CAP) -> str:
    """The reason ``data`` is refused with, checked to be exactly ``kind``, one line, short, and quick."""
    started = time.perf_counter()
    with pytest.raises(EInvoiceError) as caught:
        read(data, max_bytes)
    assert time.perf_counter() - started < FAST
    assert type(caught.value) is kind, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert message and "\n" not in message and len(message) <= 300, message
    return message


def expected(terms: Terms, fmt: str) -> EInvoice:
    """What the reader must make of a document the builders wrote from ``terms``."""
    def day(iso: str | None) -> date | None:
        return date.fromisoformat(iso) if iso else None

    def amount(text: str | None) -> Decimal | None:
        return Decimal(text) if text is not None else None

    def party(p: PartyTerms) -> Party:
        return Party(p.name or p.trading_name, p.legal_id, p.vat_id)

    return EInvoice(
        format=fmt, profile=terms.profile, type_code=terms.type_code, invoice_number=terms.number,
        issue_date=day(terms.issue_date), due_date=day(terms.due_date), currency=terms.currency,
        seller=party(terms.seller), buyer=party(terms.buyer), total_without_vat=amount(terms.total_without_vat),
        vat_total=amount(next((a for a, c in terms.vat_totals if c == terms.currency), None)),
        total_with_vat=amount(terms.total_with_vat), amount_due=amount(terms.amount_due),
        buyer_reference=terms.buyer_reference, order_reference=terms.order_reference)


# ------------------------------------------------------------------------------------- every term


def test_ubl_invoice_every_term():
    invoice = read(ubl_invoice())
    assert invoice == EInvoice(
        format=UBL, profile=EN16931, type_code="380", invoice_number="F-2026-0042", issue_date=date(2026, 9, 15),
        due_date=date(2026, 10, 15), currency="EUR",
        seller=Party("Société d'Études Générales SAS", "732829320", "FR40732829320"),  # not the FC scheme's id
        buyer=Party("Boulangerie Ægir & Fils", "552081317", "FR83552081317"),
        total_without_vat=Decimal("1000.00"), vat_total=Decimal("200.00"), total_with_vat=Decimal("1200.00"),
        amount_due=Decimal("1200.00"), buyer_reference="SERVICE-ACHATS", order_reference="PO-77")
    assert str(invoice.total_with_vat) == "1200.00"  # as written, scale kept


def test_ubl_credit_note_every_term_with_negative_amounts():
    invoice = read(ubl_invoice(CREDIT, credit_note=True))
    assert invoice == expected(CREDIT, UBL)
    assert invoice.invoice_number == "AV-2026-0007"  # not the credited invoice's (BillingReference)
    assert invoice.due_date == date(2026, 10, 15)  # PaymentMeans/PaymentDueDate: a CreditNote has no DueDate
    assert invoice.amount_due == Decimal("-300.00") and invoice.vat_total == Decimal("-50.00")


def test_ubl_credit_note_without_a_type_code_is_381():
    assert read(ubl_invoice(replace(CREDIT, type_code=None), credit_note=True)).type_code == "381"
    assert read(ubl_invoice(replace(Terms(), type_code=None))).type_code is None  # an Invoice has no default


def test_cii_every_term():
    assert read(cii_invoice()) == expected(Terms(), CII)
    assert read(cii_invoice(CREDIT)) == expected(CREDIT, CII)


def test_factur_x_pdf_made_by_the_factur_x_library():
    assert read(factur_x_pdf(cii_invoice())) == expected(Terms(), FACTUR_X)
    assert read(factur_x_pdf(cii_invoice(CREDIT))) == expected(CREDIT, FACTUR_X)


@pytest.mark.parametrize("name", ["zugferd-invoice.xml", "ZUGFeRD-invoice.xml", "xrechnung.xml", "Factur-X.XML"])
def test_zugferd_and_xrechnung_names(name):
    fmt = FACTUR_X if name.lower() == "factur-x.xml" else ZUGFERD
    assert read(pdf_with_attachment(name, cii_invoice())) == expected(Terms(), fmt)
    # XRechnung may embed UBL as well as CII; the format is the container's.
    assert read(pdf_with_attachment(name, ubl_invoice())) == expected(Terms(), fmt)


def test_factur_x_xml_is_preferred_and_other_attachments_ignored():
    pdf = pdf_with_attachment("notes.xml", ubl_invoice(Terms(number="NOT-THIS")),
                              ("xrechnung.xml", cii_invoice(Terms(number="NOR-THIS"))),
                              ("factur-x.xml", cii_invoice(Terms(number="THIS-ONE"))))
    invoice = read(pdf)
    assert (invoice.format, invoice.invoice_number) == (FACTUR_X, "THIS-ONE")


@pytest.mark.parametrize("build", [ubl_invoice, cii_invoice], ids=["ubl", "cii"])
def test_missing_optional_terms_are_none(build):
    invoice = read(build(MINIMAL))
    assert invoice.due_date is None and invoice.vat_total is None
    assert invoice.buyer_reference is None and invoice.order_reference is None
    assert invoice.seller == Party("Vendeur SA") and invoice.buyer == Party("Acheteur SARL")
    assert invoice.invoice_number == "F-2026-0042" and invoice.total_with_vat == Decimal("1200.00")


@pytest.mark.parametrize("build", [ubl_invoice, cii_invoice], ids=["ubl", "cii"])
def test_nothing_but_the_root_reads_as_all_none(build):
    nothing = Terms(number=None, issue_date=None, due_date=None, type_code=None, currency=None, profile=None,
                    seller=PartyTerms(None, None, None), buyer=PartyTerms(None, None, None), total_without_vat=None,
                    vat_totals=(), total_with_vat=None, amount_due=None, buyer_reference=None, order_reference=None)
    invoice = read(build(nothing))
    assert invoice == EInvoice(format=UBL if build is ubl_invoice else CII)


@pytest.mark.parametrize("build", [ubl_invoice, cii_invoice], ids=["ubl", "cii"])
def test_texts_are_stripped_and_blank_ones_are_none(build):
    invoice = read(build(replace(Terms(), number="  F-1 \n", buyer_reference=" \t ", order_reference="")))
    assert invoice.invoice_number == "F-1"
    assert invoice.buyer_reference is None and invoice.order_reference is None


@pytest.mark.parametrize("build", [ubl_invoice, cii_invoice], ids=["ubl", "cii"])
def test_vat_total_is_the_one_in_the_document_currency(build):
    # BT-110 in the document currency, BT-111 in the VAT accounting currency, in either order.
    sek_first = replace(Terms(), vat_totals=(("1750.00", "SEK"), ("200.00", "EUR")))
    assert read(build(sek_first)).vat_total == Decimal("200.00")
    in_sek = replace(Terms(), currency="SEK", vat_totals=(("20.00", "EUR"), ("225.50", "SEK")))
    assert read(build(in_sek)).vat_total == Decimal("225.50")


def test_ubl_seller_name_falls_back_to_the_trading_name():
    terms = replace(Terms(), seller=PartyTerms(None, "732829320", "FR40732829320", trading_name="SEG Conseil"))
    assert read(ubl_invoice(terms)).seller == Party("SEG Conseil", "732829320", "FR40732829320")


@pytest.mark.parametrize("build", [ubl_invoice, cii_invoice], ids=["ubl", "cii"])
def test_long_and_non_ascii_texts_are_kept_whole(build):
    name = "Ærøskøbing Ølbryggeri & Søn — 株式会社テスト 🧾 " * 200
    terms = replace(Terms(), seller=replace(SELLER, name=name), buyer=replace(BUYER, name="Zoë O’Brien-Łukasiewicz"),
                    number="F/2026/ÉTÉ/" + "9" * 500)
    invoice = read(build(terms))
    assert invoice.seller.name == name.strip() and invoice.buyer.name == "Zoë O’Brien-Łukasiewicz"
    assert invoice.invoice_number == "F/2026/ÉTÉ/" + "9" * 500


def test_odd_but_legal_amounts_are_kept_as_written():
    terms = replace(Terms(), total_without_vat="+1000", vat_totals=(("0.0000001", "EUR"),), total_with_vat=".50",
                    amount_due="0")
    invoice = read(ubl_invoice(terms))
    assert (invoice.total_without_vat, invoice.total_with_vat, invoice.amount_due) == (
        Decimal("1000"), Decimal("0.50"), Decimal("0"))
    assert invoice.as_json()["vat_total"] == "0.0000001"  # never "1E-7"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_xml_with_a_byte_order_mark(encoding):
    text = ubl_invoice().decode().replace('encoding="UTF-8"', f'encoding="{encoding.removesuffix("-sig")}"')
    assert read(text.encode(encoding)) == expected(Terms(), UBL)
    without_declaration = "\r\n\t  " + text.split("?>", 1)[1]  # white space may come first only then
    assert read(without_declaration.encode(encoding)) == expected(Terms(), UBL)


def test_as_json_has_exactly_the_contract_keys():
    fields = read(factur_x_pdf(cii_invoice())).as_json()
    assert list(fields) == ["format", "profile", "type_code", "invoice_number", "issue_date", "due_date", "currency",
                            "seller", "buyer", "total_without_vat", "vat_total", "total_with_vat", "amount_due",
                            "buyer_reference", "order_reference"]
    assert fields["seller"] == {"name": SELLER.name, "legal_id": SELLER.legal_id, "vat_id": SELLER.vat_id}
    assert (fields["issue_date"], fields["due_date"]) == ("2026-09-15", "2026-10-15")
    assert (fields["total_without_vat"], fields["vat_total"], fields["total_with_vat"], fields["amount_due"]) == (
        "1000.00", "200.00", "1200.00", "1200.00")
    assert json.loads(json.dumps(fields)) == fields
    empty = read(ubl_invoice(MINIMAL)).as_json()
    assert empty["due_date"] is None and empty["vat_total"] is None and empty["buyer"]["vat_id"] is None


# ------------------------------------------------------------------------------ malformed terms


@pytest.mark.parametrize("build", [ubl_invoice, cii_invoice], ids=["ubl", "cii"])
@pytest.mark.parametrize("change, reason", [
    ({"total_with_vat": "12,00"}, "BT-112 is not an amount: '12,00'"),
    ({"total_without_vat": "1e3"}, "BT-109 is not an amount: '1e3'"),
    ({"amount_due": "NaN"}, "BT-115 is not an amount: 'NaN'"),
    ({"vat_totals": (("200.00 EUR", "EUR"),)}, "BT-110 is not an amount: '200.00 EUR'"),
    ({"issue_date": "2026-13-01"}, "BT-2 is not a date: "),
    ({"due_date": "2026-02-30"}, "BT-9 is not a date: "),
    ({"issue_date": "15/09/2026"}, "BT-2 is not a date: '15/09/2026'"),
])
def test_a_malformed_term_is_an_error_naming_it(build, change, reason):
    assert refusal(build(replace(Terms(), **change))).startswith(reason)


def test_a_cii_date_not_in_format_102_is_an_error():
    xml = cii_invoice().replace(b'format="102">20260915', b'format="610">202609')
    assert refusal(xml) == "BT-2 is written in date format '610', not 102 (YYYYMMDD)"


def test_a_ubl_date_time_is_not_a_date():
    xml = ubl_invoice().replace(b"<cbc:DueDate>2026-10-15<", b"<cbc:DueDate>2026-10-15T20:00:00<")
    assert refusal(xml) == "BT-9 is not a date: '2026-10-15T20:00:00'"


# ---------------------------------------------------------------------------------------- hostile


def test_an_external_entity_to_a_local_file_does_not_leak_it(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a")
    for data in (xxe_ubl(secret), pdf_with_attachment("factur-x.xml", xxe_ubl(secret))):
        message = refusal(data)
        assert "DOCTYPE" in message and "TOP-SECRET" not in message


def test_an_external_dtd_is_never_fetched():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.setblocking(False)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        assert "DOCTYPE" in refusal(external_dtd_ubl(url))
        assert "DOCTYPE" in refusal(pdf_with_attachment("factur-x.xml", external_dtd_ubl(url)))
        time.sleep(0.1)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody called


def test_an_entity_bomb_is_refused_fast():
    message = refusal(entity_bomb())
    assert "entit" in message.lower() or "DOCTYPE" in message
    assert "lollollol" not in message
    refusal(pdf_with_attachment("factur-x.xml", entity_bomb()))


def test_a_truncated_pdf_is_an_error():
    pdf = factur_x_pdf(cii_invoice())
    for cut in (len(pdf) // 2, len(pdf) - 8, 64):
        assert refusal(pdf[:cut]).startswith("unreadable PDF: ")


def test_an_embedded_factur_x_xml_that_is_not_xml_or_not_well_formed():
    assert refusal(pdf_with_attachment("factur-x.xml", b"%PDF-1.7 nested")).startswith(
        "the embedded factur-x.xml is not XML")
    assert refusal(pdf_with_attachment("factur-x.xml", b"")).startswith("the embedded factur-x.xml is not XML")
    assert refusal(pdf_with_attachment("zugferd-invoice.xml", cii_invoice()[:-40])).startswith(
        "the embedded zugferd-invoice.xml is not well-formed XML: ")
    other = b'<?xml version="1.0"?><Order xmlns="urn:oasis:names:specification:ubl:schema:xsd:Order-2"/>'
    assert refusal(pdf_with_attachment("factur-x.xml", other)) == (
        "an XML that is neither UBL nor CII: root {urn:oasis:names:specification:ubl:schema:xsd:Order-2}Order")


def encrypted(pdf: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(pdf))
    writer.encrypt(user_password=user_password, owner_password="owner-only", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_an_encrypted_pdf():
    pdf = pdf_with_attachment("factur-x.xml", cii_invoice())
    assert read(encrypted(pdf, "")).invoice_number == "F-2026-0042"  # permissions only: opens without a password
    assert refusal(encrypted(pdf, "s3cret")) == "an encrypted PDF (a password is needed): not read"


def test_a_pdf_without_an_einvoice_is_not_an_einvoice():
    assert "without an e-invoice" in refusal(blank_pdf(), NotAnEInvoice)
    refusal(pdf_with_attachment("invoice.xml", cii_invoice()), NotAnEInvoice)  # only the standard names count


@pytest.mark.parametrize("data", [
    b"", b"PK\x03\x04\x14\x00\x06\x00", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"   \r\n\t  ", b"\xef\xbb\xbf",
    b"Invoice F-1: 1200.00 EUR", b"%!PS-Adobe-3.0",
], ids=["empty", "zip", "jpeg", "blank", "bom-only", "text", "postscript"])
def test_other_files_are_not_einvoices(data):
    refusal(data, NotAnEInvoice)


@pytest.mark.parametrize("xml, root", [
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "{http://www.w3.org/2000/svg}svg"),
    (b"<Invoice><ID>1</ID></Invoice>", "Invoice"),  # no namespace: not UBL
    (b'<rsm:CrossIndustryDocument xmlns:rsm="urn:ferd:CrossIndustryDocument:invoice:1p0"/>',  # ZUGFeRD 1.0
     "{urn:ferd:CrossIndustryDocument:invoice:1p0}CrossIndustryDocument"),
])
def test_an_xml_that_is_neither_ubl_nor_cii(xml, root):
    assert refusal(xml) == f"an XML that is neither UBL nor CII: root {root}"


def test_messages_stay_short_for_huge_names():
    assert len(refusal(b"<" + b"a" * 100_000 + b"/>")) <= 300
    assert len(refusal(ubl_invoice(replace(Terms(), total_with_vat="9" * 10_000 + ",")))) <= 300


class CountingFile(io.FileIO):
    """A real file that counts the bytes read from it."""

    bytes_read = 0

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = super().readinto(buffer) or 0
        self.bytes_read += n
        return n


def test_a_50_mib_xml_is_not_read(tmp_path):
    path = write_large_ubl(tmp_path / "big.xml", 50 * MiB)
    with CountingFile(path) as stream:
        started = time.perf_counter()
        with pytest.raises(EInvoiceError) as caught:
            read_einvoice(stream, max_bytes=CAP)
        assert time.perf_counter() - started < 0.1
        assert stream.bytes_read == 0
    assert str(caught.value) == "50 MiB: larger than EINVOICE_MAX_PARSE_BYTES (20 MiB): not read"
    with CountingFile(path) as stream:  # the same file under a cap above it is read
        assert read_einvoice(stream, max_bytes=64 * MiB).invoice_number == "F-2026-0042"


class Pipe(io.RawIOBase):
    """A stream that cannot seek (a socket, a pipe): ``data`` then, when ``endless``, zeros for ever."""

    def __init__(self, data: bytes, endless: bool = False) -> None:
        self._data, self._endless, self.bytes_read = data, endless, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        chunk = self._data[:len(buffer)] or (b"\0" * len(buffer) if self._endless else b"")
        self._data = self._data[len(chunk):]
        buffer[:len(chunk)] = chunk
        self.bytes_read += len(chunk)
        return len(chunk)


def test_a_stream_that_cannot_seek_is_read_up_to_the_cap():
    assert read_einvoice(Pipe(factur_x_pdf(cii_invoice())), max_bytes=CAP) == expected(Terms(), FACTUR_X)
    assert read_einvoice(Pipe(ubl_invoice()), max_bytes=CAP) == expected(Terms(), UBL)
    endless = Pipe(b"<?xml version='1.0'?><Invoice>", endless=True)
    with pytest.raises(EInvoiceError, match=r"^larger than EINVOICE_MAX_PARSE_BYTES \(1 MiB\): not read$"):
        read_einvoice(endless, max_bytes=MiB)
    assert endless.bytes_read == MiB + 1


def test_damaged_files_never_raise_anything_but_einvoice_error():
    """Bytes of a Factur-X PDF and of a UBL file overwritten at random places: read or refused, never a crash."""
    rng = random.Random(21)
    outcomes = {"read": 0, "refused": 0}
    for original in (factur_x_pdf(cii_invoice()), ubl_invoice()):
        for _ in range(150):
            data = bytearray(original)
            for _ in range(rng.randint(1, 8)):
                position = rng.randrange(len(data))
                data[position:position + rng.randint(1, 16)] = rng.randbytes(rng.randint(0, 16))
            try:
                read(bytes(data))
                outcomes["read"] += 1
            except EInvoiceError as exc:
                assert "\n" not in str(exc) and len(str(exc)) <= 300
                outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["read"] > 0


def test_the_reader_imports_only_the_standard_library_and_its_libraries():
    tree = ast.parse(Path(einvoice.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) == {"azure", "lxml", "pypdf"}


# ----------------------------------------------------------------------------------- blob (Azurite)


class Recorder:
    """A ``raw_response_hook``: every storage response's method and range; ``on_get`` runs after the nth GET."""

    def __init__(self) -> None:
        self.gets: list[str | None] = []
        self.on_get: dict[int, Callable[[], object]] = {}

    def __call__(self, response) -> None:
        request = response.http_request
        if request.method == "GET":
            self.gets.append(request.headers.get("x-ms-range"))
            action = self.on_get.get(len(self.gets))
            if action:
                action()


class Store:
    """A container of its own in Azurite; ``put`` uploads and returns a client (recording its responses), size, ETag."""

    def __init__(self, connection_string: str) -> None:
        self.connection_string = connection_string
        self.container = BlobServiceClient.from_connection_string(connection_string).get_container_client(
            f"einvoice-{uuid.uuid4().hex[:16]}")
        self.container.create_container()

    def put(self, data: bytes, recorder: Recorder | None = None,
            name: str = "11287/supplier/f.pdf") -> tuple[BlobClient, int, str]:
        self.container.upload_blob(name, data, overwrite=True)
        blob = BlobClient.from_connection_string(self.connection_string, self.container.container_name, name,
                                                 raw_response_hook=recorder)
        props = blob.get_blob_properties()
        return blob, props.size, props.etag

    def replace(self, name: str, data: bytes) -> None:
        self.container.upload_blob(name, data, overwrite=True)


@pytest.fixture
def store(azurite) -> Iterator[Store]:
    store = Store(azurite.connection_string)
    yield store
    store.container.delete_container()


def from_blob(blob: BlobClient, size: int, etag: str, max_bytes: int = CAP, max_seconds: float = 30) -> EInvoice:
    return read_einvoice_blob(blob, size=size, etag=etag, max_bytes=max_bytes, max_seconds=max_seconds)


def test_blob_factur_x_ubl_and_cii(store):
    for data, fmt in ((factur_x_pdf(cii_invoice()), FACTUR_X), (ubl_invoice(CREDIT, credit_note=True), UBL),
                      (cii_invoice(CREDIT), CII)):
        recorder = Recorder()
        blob, size, etag = store.put(data, recorder)
        assert from_blob(blob, size, etag) == expected(Terms() if fmt == FACTUR_X else CREDIT, fmt)
        first = einvoice.BLOB_SNIFF_BYTES
        # the sniff, which holds the whole of a small file, then the rest if any
        assert recorder.gets == ([f"bytes=0-{size - 1}"] if size <= first else
                                 [f"bytes=0-{first - 1}", f"bytes={first}-{size - 1}"])
    assert len(ubl_invoice(CREDIT, credit_note=True)) <= einvoice.BLOB_SNIFF_BYTES  # one round trip for it


def test_blob_larger_than_a_chunk_is_read_in_ranges(store):
    recorder = Recorder()
    blob, size, etag = store.put(factur_x_pdf(cii_invoice(), padding=9 * MiB), recorder)
    assert from_blob(blob, size, etag).invoice_number == "F-2026-0042"
    chunk, first = einvoice.DOWNLOAD_CHUNK, einvoice.BLOB_SNIFF_BYTES
    assert recorder.gets == [f"bytes=0-{first - 1}", f"bytes={first}-{chunk + first - 1}",
                             f"bytes={chunk + first}-{2 * chunk + first - 1}", f"bytes={2 * chunk + first}-{size - 1}"]


def test_blob_that_is_neither_pdf_nor_xml_is_sniffed_only(store):
    recorder = Recorder()
    blob, size, etag = store.put(b"\xff\xd8\xff\xe0" + os.urandom(3 * MiB), recorder)
    with pytest.raises(NotAnEInvoice):
        from_blob(blob, size, etag)
    assert recorder.gets == [f"bytes=0-{einvoice.BLOB_SNIFF_BYTES - 1}"]


def test_blob_plain_pdf_is_not_an_einvoice(store):
    blob, size, etag = store.put(blank_pdf(padding=2 * MiB))
    with pytest.raises(NotAnEInvoice):
        from_blob(blob, size, etag)


def test_blob_over_the_cap_is_not_downloaded(store):
    recorder = Recorder()
    blob, size, etag = store.put(factur_x_pdf(cii_invoice(), padding=2 * MiB), recorder)
    with pytest.raises(EInvoiceError, match=r"^2\.0 MiB: larger than EINVOICE_MAX_PARSE_BYTES \(1 MiB\): not read$"):
        from_blob(blob, size, etag, max_bytes=MiB)
    assert recorder.gets == []
    # Not even a request: a blob that does not exist is refused by its size alone.
    missing = store.container.get_blob_client("never-uploaded.pdf")
    with pytest.raises(EInvoiceError, match="larger than"):
        from_blob(missing, 50 * MiB, '"0x8DDEADBEEF"')


def test_blob_empty_is_not_an_einvoice_and_not_downloaded(store):
    recorder = Recorder()
    blob, size, etag = store.put(b"", recorder)
    with pytest.raises(NotAnEInvoice):
        from_blob(blob, size, etag)
    assert recorder.gets == []


@pytest.mark.parametrize("after_get", [1, 2], ids=["after the sniff", "after the first range"])
def test_blob_replaced_while_read_raises_resource_modified(store, after_get):
    recorder = Recorder()
    blob, size, etag = store.put(factur_x_pdf(cii_invoice(), padding=5 * MiB), recorder)
    replacement = ubl_invoice(Terms(number="OTHER"))
    recorder.on_get[after_get] = lambda: store.replace(blob.blob_name, replacement)
    with pytest.raises(ResourceModifiedError):
        from_blob(blob, size, etag)
    assert len(recorder.gets) == after_get + 1  # the next ranged read was refused, nothing more was asked


def test_blob_replaced_before_the_sniff_raises_resource_modified(store):
    blob, size, etag = store.put(ubl_invoice())
    store.replace(blob.blob_name, ubl_invoice(Terms(number="NEWER")))
    with pytest.raises(ResourceModifiedError):
        from_blob(blob, size, etag)


def test_blob_refused_like_a_local_file(store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a")
    for data in (xxe_ubl(secret), entity_bomb(), factur_x_pdf(cii_invoice())[:3000]):
        blob, size, etag = store.put(data)
        with pytest.raises(EInvoiceError) as caught:
            from_blob(blob, size, etag)
        assert type(caught.value) is EInvoiceError and "TOP-SECRET" not in str(caught.value)


def test_blob_deadline_spent_before_the_download(store):
    recorder = Recorder()
    blob, size, etag = store.put(factur_x_pdf(cii_invoice(), padding=MiB), recorder)
    with pytest.raises(EInvoiceError, match=r"^reading took longer than 0 s; sent unread$"):
        from_blob(blob, size, etag, max_seconds=0)
    assert recorder.gets == [f"bytes=0-{einvoice.BLOB_SNIFF_BYTES - 1}"]


def test_a_parse_that_hangs_is_abandoned_after_the_wait():
    release = threading.Event()
    spool = io.BytesIO(b"spooled blob")

    def hangs() -> EInvoice:
        release.wait(30)
        return EInvoice(format=UBL)

    started = time.perf_counter()
    with pytest.raises(EInvoiceError, match=r"^reading took longer than 2\.5 s; sent unread$"):
        einvoice._in_daemon_thread(hangs, spool, 0.2, 2.5)
    assert time.perf_counter() - started < 1.0
    (worker,) = [t for t in threading.enumerate() if t.name == "einvoice-read"]
    assert worker.daemon and worker.is_alive() and not spool.closed
    release.set()
    worker.join(5)
    assert spool.closed  # the abandoned read closes its spool when it ends


def test_an_error_in_the_worker_reaches_the_caller():
    def fails() -> EInvoice:
        raise EInvoiceError("BT-112 is not an amount: 'x'")

    with pytest.raises(EInvoiceError, match="BT-112"):
        einvoice._in_daemon_thread(fails, io.BytesIO(), 5, 5)


# -------------------------------------------------------------------------------------------- CLI


def cli_process(*args: str) -> subprocess.CompletedProcess:
    """``python -m inqom_bridge_cli einvoice …`` as a support person runs it: with no app setting at all."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "inqom_bridge_cli", "einvoice", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=60)


@pytest.fixture
def cli(capsys) -> Callable[..., subprocess.CompletedProcess]:
    """The same command in-process (its dispatch reads no setting: test_cli_table runs the real one)."""
    from inqom_bridge_cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        code = main(["einvoice", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["inqom_bridge_cli", "einvoice", *args], code, out, err)
    return run


def test_cli_json_for_each_format(tmp_path, cli):
    files = {"f.pdf": factur_x_pdf(cii_invoice()), "z.pdf": pdf_with_attachment("ZUGFeRD-invoice.xml", cii_invoice()),
             "u.xml": ubl_invoice(CREDIT, credit_note=True), "c.xml": cii_invoice()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        result = cli(str(tmp_path / name), "--json")
        assert result.returncode == 0, result.stderr
        fields = json.loads(result.stdout)
        assert fields == read(data).as_json()
        assert set(fields) == {"format", "profile", "type_code", "invoice_number", "issue_date", "due_date",
                               "currency", "seller", "buyer", "total_without_vat", "vat_total", "total_with_vat",
                               "amount_due", "buyer_reference", "order_reference"}
        assert set(fields["seller"]) == set(fields["buyer"]) == {"name", "legal_id", "vat_id"}
    assert json.loads(cli(str(tmp_path / "u.xml"), "--json").stdout)["amount_due"] == "-300.00"


def test_cli_table(tmp_path):
    (tmp_path / "f.pdf").write_bytes(factur_x_pdf(cii_invoice(MINIMAL)))
    result = cli_process(str(tmp_path / "f.pdf"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["term", "name", "value"]
    assert any(line.split() == ["BT-112", "total", "with", "VAT", "1200.00"] for line in lines)
    assert any(line.split() == ["BT-9", "due", "date", "-"] for line in lines)
    assert any(line.split()[0] == "format" and line.split()[-1] == "factur-x" for line in lines)


def test_cli_exit_1_with_one_line_for_what_cannot_be_read(tmp_path, cli):
    (tmp_path / "plain.pdf").write_bytes(blank_pdf())
    (tmp_path / "cut.pdf").write_bytes(factur_x_pdf(cii_invoice())[:2000])
    (tmp_path / "bomb.xml").write_bytes(entity_bomb())
    cases = {"plain.pdf": "not an e-invoice", "cut.pdf": "unreadable PDF", "bomb.xml": "cannot be read",
             "missing.pdf": "No such file", ".": "Is a directory"}
    for name, reason in cases.items():
        result = cli(str(tmp_path / name), "--json")
        assert result.returncode == 1 and result.stdout == "", (name, result.stdout)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("inqom_bridge_cli: error: "), result.stderr
        assert reason in result.stderr, result.stderr
    (tmp_path / "f.pdf").write_bytes(factur_x_pdf(cii_invoice()))
    result = cli(str(tmp_path / "f.pdf"), "--max-bytes", "1000")
    assert result.returncode == 1 and "larger than" in result.stderr
    assert cli().returncode == 2  # usage
