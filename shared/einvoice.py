"""Structured e-invoices: detect Factur-X / ZUGFeRD PDFs, UBL 2.1 and CII XML, and read their EN 16931 terms.

    invoice = read_einvoice(stream, max_bytes=20 * 1024 * 1024)   # EInvoice, or EInvoiceError / NotAnEInvoice
    invoice.invoice_number, invoice.total_with_vat                 # "F-2026-0042", Decimal("1200.00")
    invoice.as_json()                                              # the CLI's ``einvoice --json`` keys

The first bytes decide: ``%PDF-`` is read for an embedded ``factur-x.xml`` (else ``zugferd-invoice.xml``,
``xrechnung.xml``), XML by its root. ``read_einvoice_blob`` does the same for an inbox blob pinned to
its ETag, in bounded time and memory. Hostile input is refused, never expanded: no DTD, no entity, no
network; a file above ``max_bytes`` is not read. Only ``EInvoiceError`` (or ``NotAnEInvoice``) is raised,
with a one-line reason; a term that is there but malformed is an error, not a ``None``.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO, Callable

from azure.core import MatchConditions
from azure.storage.blob import BlobClient
from lxml import etree
from pypdf import PasswordType, PdfReader, apply_configuration

# pypdf warns about each damaged file it still opens ("EOF marker not found"): a reason EInvoiceError gives.
logging.getLogger("pypdf").setLevel(logging.ERROR)

FACTUR_X = "factur-x"
ZUGFERD = "zugferd"
UBL = "ubl"
CII = "cii"
FORMATS = (FACTUR_X, ZUGFERD, UBL, CII)

MiB = 1024 * 1024
#: The default of ``max_bytes`` (the app's EINVOICE_MAX_PARSE_BYTES).
DEFAULT_MAX_BYTES = 20 * MiB
#: Embedded file names, case-insensitive, in the order they are looked for.
ATTACHMENTS = {"factur-x.xml": FACTUR_X, "zugferd-invoice.xml": ZUGFERD, "xrechnung.xml": ZUGFERD}
SNIFF_BYTES = 1024
#: The first read of a blob: enough to sniff it, and the whole of most UBL and CII files (one round trip).
BLOB_SNIFF_BYTES = 64 * 1024
DOWNLOAD_CHUNK = 4 * MiB
SPOOL_IN_MEMORY = MiB
MESSAGE_LIMIT = 300

_UBL_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
_UBL_CREDIT_NOTE = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
_UBL = {"cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
        "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}
_CII_ROOT = "{urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100}CrossIndustryInvoice"
_CII = {"rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
        "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
        "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"}
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")  # xsd:decimal: no exponent, no NaN, no comma
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:Z|[+-]\d{2}:\d{2})?")  # xsd:date, optional zone
_DATE_102 = re.compile(r"(\d{4})(\d{2})(\d{2})")


class EInvoiceError(ValueError):
    """The file looks like an e-invoice (or claims to be one) but cannot be read: the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(_clip(message, MESSAGE_LIMIT))  # one line, short: it goes into a ledger column and logs


class NotAnEInvoice(EInvoiceError):
    """The file is not an e-invoice (a plain PDF, an image, an XML of another kind): nothing to read."""


@dataclass(frozen=True)
class Party:
    name: str | None = None       # BT-27 / BT-44
    legal_id: str | None = None   # BT-30 / BT-47 (SIREN, SIRET …)
    vat_id: str | None = None     # BT-31 / BT-48

    def as_json(self) -> dict[str, str | None]:
        return {"name": self.name, "legal_id": self.legal_id, "vat_id": self.vat_id}


@dataclass(frozen=True)
class EInvoice:
    format: str                               # one of FORMATS
    profile: str | None = None                # BT-24
    type_code: str | None = None              # BT-3
    invoice_number: str | None = None         # BT-1
    issue_date: date | None = None            # BT-2
    due_date: date | None = None              # BT-9
    currency: str | None = None               # BT-5
    seller: Party = field(default_factory=Party)
    buyer: Party = field(default_factory=Party)
    total_without_vat: Decimal | None = None  # BT-109
    vat_total: Decimal | None = None          # BT-110
    total_with_vat: Decimal | None = None     # BT-112
    amount_due: Decimal | None = None         # BT-115
    buyer_reference: str | None = None        # BT-10
    order_reference: str | None = None        # BT-13

    def as_json(self) -> dict[str, Any]:
        """Dates as YYYY-MM-DD, amounts as the decimal strings written in the file, absent terms as ``None``."""
        def day(value: date | None) -> str | None:
            return value.isoformat() if value else None

        def amount(value: Decimal | None) -> str | None:
            return None if value is None else format(value, "f")

        return {
            "format": self.format, "profile": self.profile, "type_code": self.type_code,
            "invoice_number": self.invoice_number, "issue_date": day(self.issue_date), "due_date": day(self.due_date),
            "currency": self.currency, "seller": self.seller.as_json(), "buyer": self.buyer.as_json(),
            "total_without_vat": amount(self.total_without_vat), "vat_total": amount(self.vat_total),
            "total_with_vat": amount(self.total_with_vat), "amount_due": amount(self.amount_due),
            "buyer_reference": self.buyer_reference, "order_reference": self.order_reference,
        }


# ------------------------------------------------------------------------------------------ reading


def read_einvoice(stream: BinaryIO, *, max_bytes: int) -> EInvoice:
    """The e-invoice in ``stream`` (read from its current position); ``NotAnEInvoice`` for any other file."""
    stream = _bounded(stream, max_bytes)
    head = stream.read(SNIFF_BYTES)
    stream.seek(0)
    if not head:
        raise NotAnEInvoice("an empty file")
    kind = _sniff(head)
    if kind == "pdf":
        return _read_pdf(stream, max_bytes)
    if kind == "xml":
        return _read_xml_root(_parse_xml(stream, "the file"), None)
    raise NotAnEInvoice(f"neither a PDF nor an XML file (starts with {_clip(repr(head[:8]), 40)})")


def read_einvoice_blob(blob: BlobClient, *, size: int, etag: str, max_bytes: int, max_seconds: float) -> EInvoice:
    """``read_einvoice`` of the blob version ``etag`` (``size`` bytes): its first bytes, then, for a PDF or an
    XML only, the whole blob in ranged reads spooled to a temporary file; the parse runs in a daemon thread
    and is given up after ``max_seconds`` from the call. ``ResourceModifiedError`` (the blob was replaced)
    and other storage errors propagate unchanged."""
    if size > max_bytes:
        raise EInvoiceError(_too_large(size, max_bytes))
    started = time.monotonic()
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    try:
        if size:
            _download(blob, etag, 0, min(BLOB_SNIFF_BYTES, size), spool)
        spool.seek(0)
        if _sniff(spool.read()) is None:
            raise NotAnEInvoice("neither a PDF nor an XML file")
        for offset in range(spool.tell(), size, DOWNLOAD_CHUNK):
            if time.monotonic() - started > max_seconds:
                raise EInvoiceError(_too_slow(max_seconds))
            _download(blob, etag, offset, min(DOWNLOAD_CHUNK, size - offset), spool)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return _in_daemon_thread(lambda: read_einvoice(spool, max_bytes=max_bytes), spool,
                             max(0.0, max_seconds - (time.monotonic() - started)), max_seconds)


def _download(blob: BlobClient, etag: str, offset: int, length: int, into: BinaryIO) -> None:
    got = blob.download_blob(offset=offset, length=length, etag=etag,
                             match_condition=MatchConditions.IfNotModified).readinto(into)
    if got != length:
        raise IOError(f"blob {blob.blob_name} returned {got} of {length} bytes at {offset}")


def _in_daemon_thread(read: Callable[[], EInvoice], spool: BinaryIO, wait: float, max_seconds: float) -> EInvoice:
    """``read()`` in a daemon thread, waited for ``wait`` s: a parse that hangs is abandoned, not joined."""
    outcome: list[EInvoice | BaseException] = []

    def work() -> None:
        try:
            outcome.append(read())
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)
        finally:
            spool.close()

    worker = threading.Thread(target=work, name="einvoice-read", daemon=True)
    worker.start()
    worker.join(wait)
    if not outcome:
        raise EInvoiceError(_too_slow(max_seconds))
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _bounded(stream: BinaryIO, max_bytes: int) -> BinaryIO:
    """A seekable stream at offset 0 holding what is left of ``stream``, checked to be at most ``max_bytes``."""
    seekable = stream.seekable() if hasattr(stream, "seekable") else False
    if seekable and stream.tell() == 0:
        size = stream.seek(0, io.SEEK_END)
        stream.seek(0)
        if size > max_bytes:
            raise EInvoiceError(_too_large(size, max_bytes))
        return stream
    copy = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    left = max_bytes + 1  # a stream of unknown length is read no further than one byte past the cap
    while left > 0 and (chunk := stream.read(min(left, DOWNLOAD_CHUNK))):
        copy.write(chunk)
        left -= len(chunk)
    if left == 0:
        copy.close()
        raise EInvoiceError(_too_large(None, max_bytes))
    copy.seek(0)
    return copy  # type: ignore[return-value]


def _sniff(head: bytes) -> str | None:
    """``pdf``, ``xml``, ``blank`` (only a BOM or white space so far), or ``None`` for anything else."""
    if head.startswith(b"%PDF-"):
        return "pdf"
    text = head.decode("latin-1")
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            text = head[len(bom):].decode(encoding, errors="ignore")
            break
    text = text.lstrip(" \t\r\n")
    if text.startswith("<"):
        return "xml"
    return "blank" if not text and head else None


def _too_large(size: int | None, max_bytes: int) -> str:
    what = f"{_size(size)}: " if size is not None else ""
    return f"{what}larger than EINVOICE_MAX_PARSE_BYTES ({_size(max_bytes)}): not read"


def _too_slow(max_seconds: float) -> str:
    return f"reading took longer than {max_seconds:g} s; sent unread"


def _size(size: int) -> str:
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size} bytes"


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _reason(exc: BaseException) -> str:
    return _clip(str(exc) or type(exc).__name__, 200)


# ---------------------------------------------------------------------------------------------- PDF


def _read_pdf(stream: BinaryIO, max_bytes: int) -> EInvoice:
    # pypdf decompresses a stream up to 75 MB by default; an embedded file may not be larger than the PDF's cap.
    limits = {name: max_bytes for name in ("zlib_maximum_output_length", "lzw_maximum_output_length",
                                           "run_length_maximum_output_length", "brotli_maximum_output_length",
                                           "array_based_stream_maximum_output_length")}
    try:
        with apply_configuration(**limits):
            reader = PdfReader(stream)
            if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise EInvoiceError("an encrypted PDF (a password is needed): not read")
            found = _embedded_invoice(reader)
    except EInvoiceError:
        raise
    except Exception as exc:  # pypdf raises many kinds on a damaged file
        raise EInvoiceError(f"unreadable PDF: {_reason(exc)}") from None
    if found is None:
        raise NotAnEInvoice(f"a PDF without an e-invoice attached ({', '.join(ATTACHMENTS)})")
    name, fmt, content = found
    if _sniff(content[:SNIFF_BYTES]) != "xml":
        raise EInvoiceError(f"the embedded {name} is not XML (starts with {_clip(repr(content[:8]), 40)})")
    return _read_xml_root(_parse_xml(io.BytesIO(content), f"the embedded {name}"), fmt)


def _embedded_invoice(reader: PdfReader) -> tuple[str, str, bytes] | None:
    """(name, format, content) of the first embedded file named as in ``ATTACHMENTS``; only that one is decoded."""
    by_name = {}
    for attachment in reader.attachment_list:
        by_name.setdefault(str(attachment.name).casefold(), attachment)
    for name, fmt in ATTACHMENTS.items():
        if name in by_name:
            return by_name[name].name, fmt, by_name[name].content
    return None


# ---------------------------------------------------------------------------------------------- XML


def _parse_xml(stream: BinaryIO, what: str) -> etree._Element:
    # huge_tree: a UBL may embed its PDF rendition in base64, a text node beyond libxml2's 10 MB; the input is
    # capped at max_bytes already, entities are never expanded (libxml2 still refuses an amplification).
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=True, remove_comments=True, remove_pis=True)
    try:
        tree = etree.parse(stream, parser)
    except etree.XMLSyntaxError as exc:
        raise EInvoiceError(f"{what} is not well-formed XML: {_reason(exc)}") from None
    except Exception as exc:
        raise EInvoiceError(f"{what} cannot be parsed: {_reason(exc)}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise EInvoiceError(f"{what} has a DOCTYPE: DTDs and entities are refused")
    return tree.getroot()


def _read_xml_root(root: etree._Element, container: str | None) -> EInvoice:
    """The terms of a UBL or CII root; ``container`` is the PDF's format, else the XML's own."""
    if root.tag in (f"{{{_UBL_INVOICE}}}Invoice", f"{{{_UBL_CREDIT_NOTE}}}CreditNote"):
        return _read_ubl(root, container or UBL)
    if root.tag == _CII_ROOT:
        return _read_cii(root, container or CII)
    raise EInvoiceError(f"an XML that is neither UBL nor CII: root {_clip(str(root.tag), 200)}")


class _Terms:
    """Typed terms from the elements under one node (ElementPath with the format's prefixes)."""

    def __init__(self, namespaces: dict[str, str]) -> None:
        self.ns = namespaces

    def node(self, parent: etree._Element | None, path: str) -> etree._Element | None:
        return None if parent is None else parent.find(path, self.ns)

    def nodes(self, parent: etree._Element | None, path: str) -> list[etree._Element]:
        return [] if parent is None else parent.findall(path, self.ns)

    def text(self, parent: etree._Element | None, path: str) -> str | None:
        return _text(self.node(parent, path))

    def amount(self, parent: etree._Element | None, path: str, term: str) -> Decimal | None:
        return _amount(self.node(parent, path), term)

    def iso_date(self, parent: etree._Element | None, path: str, term: str) -> date | None:
        value = self.text(parent, path)
        if value is None:
            return None
        match = _ISO_DATE.fullmatch(value)
        return _date(match, value, term)

    def date_102(self, parent: etree._Element | None, path: str, term: str) -> date | None:
        node = self.node(parent, path)
        value = _text(node)
        if node is None or value is None:
            return None
        written_as = node.get("format", "102").strip()
        if written_as != "102":
            raise EInvoiceError(f"{term} is written in date format {_clip(repr(written_as), 40)}, not 102 (YYYYMMDD)")
        return _date(_DATE_102.fullmatch(value), value, term)


def _text(node: etree._Element | None) -> str | None:
    if node is None:
        return None
    return "".join(node.itertext()).strip() or None


def _amount(node: etree._Element | None, term: str) -> Decimal | None:
    value = _text(node)
    if value is None:
        return None
    if not _DECIMAL.fullmatch(value):
        raise EInvoiceError(f"{term} is not an amount: {_clip(repr(value), 60)}")
    return Decimal(value)


def _date(match: re.Match[str] | None, value: str, term: str) -> date:
    try:
        if match is None:
            raise ValueError(value)
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise EInvoiceError(f"{term} is not a date: {_clip(repr(value), 60)}") from None


def _in_currency(amounts: list[etree._Element], currency: str | None, term: str) -> Decimal | None:
    """The amount whose ``currencyID`` is the document's (BT-110 when BT-111 gives the VAT in another), else the first."""
    if not amounts:
        return None
    chosen = next((a for a in amounts if (a.get("currencyID") or "").strip() == currency), amounts[0])
    return _amount(chosen, term)


def _read_ubl(root: etree._Element, fmt: str) -> EInvoice:
    t = _Terms(_UBL)
    credit_note = root.tag.endswith("}CreditNote")
    currency = t.text(root, "cbc:DocumentCurrencyCode")
    sums = t.node(root, "cac:LegalMonetaryTotal")
    type_code = t.text(root, "cbc:CreditNoteTypeCode" if credit_note else "cbc:InvoiceTypeCode")
    due_date = None
    for path in ("cbc:DueDate", "cac:PaymentMeans/cbc:PaymentDueDate", "cac:PaymentTerms/cbc:PaymentDueDate"):
        due_date = due_date or t.iso_date(root, path, "BT-9")
    return EInvoice(
        format=fmt,
        profile=t.text(root, "cbc:CustomizationID"),
        type_code=type_code or ("381" if credit_note else None),
        invoice_number=t.text(root, "cbc:ID"),
        issue_date=t.iso_date(root, "cbc:IssueDate", "BT-2"),
        due_date=due_date,
        currency=currency,
        seller=_ubl_party(t, t.node(root, "cac:AccountingSupplierParty/cac:Party")),
        buyer=_ubl_party(t, t.node(root, "cac:AccountingCustomerParty/cac:Party")),
        total_without_vat=t.amount(sums, "cbc:TaxExclusiveAmount", "BT-109"),
        vat_total=_in_currency(t.nodes(root, "cac:TaxTotal/cbc:TaxAmount"), currency, "BT-110"),
        total_with_vat=t.amount(sums, "cbc:TaxInclusiveAmount", "BT-112"),
        amount_due=t.amount(sums, "cbc:PayableAmount", "BT-115"),
        buyer_reference=t.text(root, "cbc:BuyerReference"),
        order_reference=t.text(root, "cac:OrderReference/cbc:ID"),
    )


def _ubl_party(t: _Terms, party: etree._Element | None) -> Party:
    vat_id = next((t.text(scheme, "cbc:CompanyID") for scheme in t.nodes(party, "cac:PartyTaxScheme")
                   if (t.text(scheme, "cac:TaxScheme/cbc:ID") or "").upper() == "VAT"), None)
    return Party(
        name=t.text(party, "cac:PartyLegalEntity/cbc:RegistrationName") or t.text(party, "cac:PartyName/cbc:Name"),
        legal_id=t.text(party, "cac:PartyLegalEntity/cbc:CompanyID"),
        vat_id=vat_id,
    )


def _read_cii(root: etree._Element, fmt: str) -> EInvoice:
    t = _Terms(_CII)
    document = t.node(root, "rsm:ExchangedDocument")
    transaction = t.node(root, "rsm:SupplyChainTradeTransaction")
    agreement = t.node(transaction, "ram:ApplicableHeaderTradeAgreement")
    settlement = t.node(transaction, "ram:ApplicableHeaderTradeSettlement")
    sums = t.node(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    currency = t.text(settlement, "ram:InvoiceCurrencyCode")
    due_date = None
    for payment_terms in t.nodes(settlement, "ram:SpecifiedTradePaymentTerms"):
        due_date = due_date or t.date_102(payment_terms, "ram:DueDateDateTime/udt:DateTimeString", "BT-9")
    return EInvoice(
        format=fmt,
        profile=t.text(root, "rsm:ExchangedDocumentContext/ram:GuidelineSpecifiedDocumentContextParameter/ram:ID"),
        type_code=t.text(document, "ram:TypeCode"),
        invoice_number=t.text(document, "ram:ID"),
        issue_date=t.date_102(document, "ram:IssueDateTime/udt:DateTimeString", "BT-2"),
        due_date=due_date,
        currency=currency,
        seller=_cii_party(t, t.node(agreement, "ram:SellerTradeParty")),
        buyer=_cii_party(t, t.node(agreement, "ram:BuyerTradeParty")),
        total_without_vat=t.amount(sums, "ram:TaxBasisTotalAmount", "BT-109"),
        vat_total=_in_currency(t.nodes(sums, "ram:TaxTotalAmount"), currency, "BT-110"),
        total_with_vat=t.amount(sums, "ram:GrandTotalAmount", "BT-112"),
        amount_due=t.amount(sums, "ram:DuePayableAmount", "BT-115"),
        buyer_reference=t.text(agreement, "ram:BuyerReference"),
        order_reference=t.text(agreement, "ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID"),
    )


def _cii_party(t: _Terms, party: etree._Element | None) -> Party:
    vat_id = next((_text(node) for node in t.nodes(party, "ram:SpecifiedTaxRegistration/ram:ID")
                   if (node.get("schemeID") or "").strip() == "VA"), None)
    return Party(
        name=t.text(party, "ram:Name"),
        legal_id=t.text(party, "ram:SpecifiedLegalOrganization/ram:ID"),
        vat_id=vat_id,
    )
