"""enFact's data in the emulator: the companies it knows, their invoices and the invoices' PDFs.

    invoices = EnfactInvoices({"0b6a3c5e-...": []})
    detail = invoices.add_invoice("0b6a3c5e-...", date="2026-03-02", total=242.0)
    assert invoices.pdf_for(detail["id"]).startswith(b"%PDF-1.4")
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

__all__ = ["FIRST_ID", "EnfactInvoices", "company_key", "iso_date", "minimal_pdf"]

FIRST_ID = 5001
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INVOICE_KEYS = {"invoice_id", "number", "date", "customer", "total", "pdf", "status", "vat", "lines"}
_ALIASES = {"id": "invoice_id", "customer_name": "customer"}


# --------------------------------------------------------------------------- the PDF


def _pdf_text(text: str) -> bytes:
    """``text`` as a PDF literal string body (latin-1, backslash-escaped)."""
    raw = text.encode("latin-1", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def minimal_pdf(lines: Sequence[str]) -> bytes:
    """A small, valid one-page A4 PDF 1.4 showing ``lines`` in Helvetica.

    Written by hand: catalog, pages, page, font, content stream, then a cross-reference
    table whose offsets point at each "N 0 obj", the trailer and ``startxref``.
    """
    content = b"BT\n/F1 14 Tf\n72 770 Td\n18 TL\n"
    content += b"".join(b"(" + _pdf_text(line) + b") Tj T*\n" for line in lines)
    content += b"ET\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"  # every entry is exactly 20 bytes
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# ------------------------------------------------------------------------ the invoices


@dataclass
class _Invoice:
    id: int | str  # a str only when a test asks for an odd id (see ``add_invoice``)
    company: str  # normalised (lower-case) company UUID
    number: str
    date: str
    customer: str
    vat: str | None
    total: float
    status: str
    lines: list[dict[str, Any]]
    modified: str
    pdf: bytes

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "number": self.number, "date": self.date,
                "customer_name": self.customer, "total": self.total, "status": self.status,
                "modified": self.modified}

    def detail(self) -> dict[str, Any]:
        return {"id": self.id, "number": self.number, "date": self.date,
                "customer": {"name": self.customer, "vat": self.vat}, "total": self.total,
                "currency": "EUR", "status": self.status, "modified": self.modified,
                "lines": [dict(line) for line in self.lines]}


def company_key(company_uuid: str) -> str:
    return company_uuid.strip().lower()


def iso_date(value: str | date | None) -> str:
    if value is None:
        return date.today().isoformat()
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not _DATE.fullmatch(value):
        raise ValueError(f"date must be YYYY-MM-DD, got {value!r}")
    return date.fromisoformat(value).isoformat()


class EnfactInvoices:
    """The known companies and their invoices, by id (thread-safe).

    ``companies`` maps a company UUID to its invoices, each a dict of ``add_invoice``'s
    keyword arguments (``id`` and ``customer_name`` are accepted for ``invoice_id`` and
    ``customer``).
    """

    def __init__(self, companies: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self._lock = threading.RLock()
        self._companies: dict[str, str] = {}  # normalised key -> UUID as given
        self._invoices: dict[int | str, _Invoice] = {}
        self._numbers: dict[str, itertools.count[int]] = {}
        self._ids = itertools.count(FIRST_ID)
        for company, invoices in companies.items():
            self.add_company(company)
            for spec in invoices:
                kwargs = {_ALIASES.get(key, key): value for key, value in spec.items()}
                unknown = set(kwargs) - _INVOICE_KEYS
                if unknown:
                    raise ValueError(f"unknown invoice field(s) {sorted(unknown)}")
                self.add_invoice(company, **kwargs)

    @property
    def companies(self) -> list[str]:
        """The known company UUIDs, as given."""
        with self._lock:
            return list(self._companies.values())

    def knows(self, company_uuid: str) -> bool:
        with self._lock:
            return company_key(company_uuid) in self._companies

    def add_company(self, company_uuid: str) -> None:
        """Make ``company_uuid`` known (no invoices); nothing happens if it already is."""
        key = company_key(company_uuid)
        if not key:
            raise ValueError("a company UUID is required")
        with self._lock:
            self._companies.setdefault(key, company_uuid.strip())
            self._numbers.setdefault(key, itertools.count(1))

    def add_invoice(
        self,
        company_uuid: str,
        *,
        invoice_id: int | str | None = None,
        number: str | None = None,
        date: str | date | None = None,  # noqa: A002 -- the field's name
        customer: str = "Client SA",
        total: float = 121.0,
        pdf: bytes | None = None,
        status: str = "sent",
        vat: str | None = "BE0123456789",
        lines: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Add an invoice to a known company; returns its detail (as ``.json`` answers it).

        ``invoice_id``: default the next free integer from 5001 (ids are unique across
        companies); a non-empty string is taken as it is, so that the list shows the odd ids a
        real API might (``"1/2"``, ``"a#b"``), though only integer ids are served by the detail
        and document URLs. ``number``: default "F{year}-{n:04d}", n counting the company's
        invoices. ``date``: ISO "YYYY-MM-DD", default today. ``total`` includes VAT;
        ``lines`` default to one 21 % line. ``pdf``: default a one-page PDF generated here
        (see ``pdf_for``). ``modified`` is set to the current UTC time.
        """
        key = company_key(company_uuid)
        day = iso_date(date)
        with self._lock:
            if key not in self._companies:
                raise KeyError(f"unknown company {company_uuid!r}")
            if invoice_id is None:
                invoice_id = next(self._ids)
                while invoice_id in self._invoices:
                    invoice_id = next(self._ids)
            elif not (isinstance(invoice_id, str) and invoice_id
                      or isinstance(invoice_id, int) and not isinstance(invoice_id, bool) and invoice_id >= 1):
                raise ValueError(f"invoice_id must be a positive integer or a non-empty string, got {invoice_id!r}")
            elif invoice_id in self._invoices:
                raise ValueError(f"invoice {invoice_id} already exists")
            if number is None:
                number = f"F{day[:4]}-{next(self._numbers[key]):04d}"
            amount = round(float(total), 2)
            if lines is None:
                net = round(amount / 1.21, 2)
                lines = [{"description": f"Prestation de services ({number})", "quantity": 1.0,
                          "unit_price": net, "vat_rate": 21.0, "total": net}]
            invoice = _Invoice(
                id=invoice_id, company=key, number=number, date=day, customer=customer, vat=vat,
                total=amount, status=status, lines=[dict(line) for line in lines],
                modified=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), pdf=b"")
            invoice.pdf = bytes(pdf) if pdf is not None else minimal_pdf([
                f"Facture {number}", f"Date: {day}", f"Client: {customer}",
                f"Total: {amount:.2f} EUR", f"Ref: {self._companies[key]}/{invoice_id}"])
            self._invoices[invoice_id] = invoice
            return invoice.detail()

    def remove_invoice(self, company_uuid: str, invoice_id: int) -> None:
        """Delete an invoice (its URLs answer 404 afterwards); KeyError if it is not there."""
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is None or invoice.company != company_key(company_uuid):
                raise KeyError(f"no invoice {invoice_id} in company {company_uuid!r}")
            del self._invoices[invoice_id]

    def pdf_for(self, invoice_id: int) -> bytes:
        """The bytes ``GET /v1/invoices/{invoice_id}.pdf`` answers."""
        with self._lock:
            try:
                return self._invoices[invoice_id].pdf
            except KeyError:
                raise KeyError(f"no invoice {invoice_id}") from None

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        """The detail ``GET /v1/invoices/{invoice_id}.json`` answers."""
        with self._lock:
            try:
                return self._invoices[invoice_id].detail()
            except KeyError:
                raise KeyError(f"no invoice {invoice_id}") from None

    def invoices(self, company_uuid: str, date_from: str | None = None,
                 date_to: str | None = None) -> list[dict[str, Any]]:
        """The company's invoices as list items, in the list's order (newest first), dated
        within the inclusive bounds given."""
        with self._lock:
            return [invoice.summary() for invoice in self._sorted(company_key(company_uuid))
                    if (date_from is None or invoice.date >= date_from)
                    and (date_to is None or invoice.date <= date_to)]

    def served(self, invoice_id: int, company: str) -> tuple[dict[str, Any], bytes] | None:
        """The detail and PDF of the company's invoice ``invoice_id``, or None."""
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is None or invoice.company != company_key(company):
                return None
            return invoice.detail(), invoice.pdf

    def _sorted(self, company: str) -> list[_Invoice]:
        return sorted((invoice for invoice in self._invoices.values() if invoice.company == company),
                      key=lambda invoice: (invoice.date, isinstance(invoice.id, str), invoice.id),
                      reverse=True)  # ids of one type compare among themselves
