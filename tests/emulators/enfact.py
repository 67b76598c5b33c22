"""A real HTTP emulator of the enFact (onFact) REST API's invoice endpoints, for tests.

It follows the vendor's document (shared/specs/003_882778ba7fa61a78.txt, beside this
repository) wherever it says something: API-key authentication with the two headers
``X-SESSION-KEY`` and ``X-COMPANY-UUID`` on every request, ``GET /v1/invoices.json`` (the
list), ``GET /v1/invoices/:id.json`` (the detail), and the URL extension picking the format,
``.pdf``, ``.html`` or ``.xml`` for documents. Production base: ``https://api5.onfact.be``.

The public document shows every response body as ``{ // Response }``: **the JSON shapes
below are ours** (plausible, documented here, and what our client is written against).

Endpoints (method other than GET on a known route: 405 with ``Allow``; unknown route: 404):

* ``GET /v1/invoices.json`` -- the invoices of the company named by ``X-COMPANY-UUID``,
  newest first (by ``date``, then ``id``, both descending). Query parameters:

  - ``page``: 1-based page number, default 1; a page past the end answers no items;
  - ``limit``: page size, default ``page_size`` (20), 1..100;
  - ``date_from`` / ``date_to``: ``YYYY-MM-DD``, inclusive bounds on ``date`` (optional);
  - a malformed or out-of-range value answers 400 ``{"error": "..."}``; other parameters
    are ignored.

  Answer::

      {"items": [{"id": 5002, "number": "F2026-0002", "date": "2026-03-02",
                  "customer_name": "Client SA", "total": 121.0, "status": "sent",
                  "modified": "2026-03-02T09:15:00Z"}, ...],
       "page": 1, "limit": 20, "total": 2, "pages": 1}

  ``total`` counts the invoices matching the filter, ``pages`` = ceil(total / limit)
  (0 when there is none).

* ``GET /v1/invoices/{id}.json`` -- the detail::

      {"id": 5002, "number": "F2026-0002", "date": "2026-03-02",
       "customer": {"name": "Client SA", "vat": "BE0123456789"}, "total": 121.0,
       "currency": "EUR", "status": "sent", "modified": "2026-03-02T09:15:00Z",
       "lines": [{"description": "...", "quantity": 1.0, "unit_price": 100.0,
                  "vat_rate": 21.0, "total": 100.0}]}

  (``total`` includes VAT; ``lines`` are VAT-exclusive; ``customer.vat`` may be null).
* ``GET /v1/invoices/{id}.pdf`` -- the PDF (``application/pdf``, Content-Length).
* ``GET /v1/invoices/{id}.html`` / ``.xml`` -- a trivial rendering of the invoice.

An id unknown *for that company* answers 404 ``{"error": "..."}``. A missing or wrong
``X-SESSION-KEY``, or an ``X-COMPANY-UUID`` that is missing or not a known company, answers
403 ``{"error": "..."}`` (header names are case-insensitive; the UUID is compared
case-insensitively). Every request is recorded, and faults can be scripted (``inject``)
or drawn at random (``error_rate``, ``error_kinds``, ``seed``).

Usage::

    from tests.emulators.enfact import EnfactEmulator

    with EnfactEmulator(session_key="sk", companies={COMPANY: []}) as enfact:
        invoice = enfact.add_invoice(COMPANY, date="2026-03-02", total=242.0)
        enfact.inject("503", times=2, path_contains=".pdf")
        run_client(base_url=enfact.base_url, session_key="sk", company_uuid=COMPANY)
        assert enfact.calls("GET", f"/v1/invoices/{invoice['id']}.pdf")[-1].status == 200

Stand-alone, for a local runner (prints ``{"base_url": ..., "session_key": ...,
"companies": [...]}`` on one line, then serves until SIGINT/SIGTERM)::

    python -m tests.emulators.enfact --port 8082 --session-key SK \\
        --company 0b6a3c5e-1f0d-4c1e-9a55-2f1f6f0e9c01 --invoices 3
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from html import escape as html_escape
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

from tests.emulators._server import (
    CHUNK,
    EmulatorHandler,
    EmulatorServer,
    Fault,
    Headers,
    RecordedRequest,
    Reply,
    cli_parser,
    json_reply,
    run_cli,
)
from tests.emulators.enfact_invoices import EnfactInvoices, company_key, iso_date, minimal_pdf

__all__ = [
    "DEFAULT_COMPANY",
    "FAULT_KINDS",
    "EnfactEmulator",
    "Headers",
    "RecordedRequest",
    "main",
    "minimal_pdf",
]

DEFAULT_COMPANY = "0b6a3c5e-1f0d-4c1e-9a55-2f1f6f0e9c01"
FAULT_KINDS = frozenset({"500", "502", "503", "429", "drop", "slow"})
MAX_LIMIT = 100


# --------------------------------------------------------------------------- internals


def _error(status: int, text: str) -> Reply:
    return json_reply(status, {"error": text})


def _query_int(query: dict[str, list[str]], name: str, default: int, low: int,
               high: int | None) -> int | str:
    """The integer query parameter, or an error text."""
    values = query.get(name)
    if not values:
        return default
    text = values[-1].strip()
    if not re.fullmatch(r"[0-9]{1,9}", text):
        return f"{name} must be an integer, got {values[-1]!r}"
    number = int(text)
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        return f"{name} must be {bounds}, got {number}"
    return number


def _query_date(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values or not values[-1]:
        return None
    try:
        return iso_date(values[-1])
    except ValueError:
        raise ValueError(f"{name} must be a date YYYY-MM-DD, got {values[-1]!r}") from None


# ---------------------------------------------------------------------- HTTP plumbing


class _Handler(EmulatorHandler):
    server_version = "nginx"


def _discard_body(handler: BaseHTTPRequestHandler, headers: Headers) -> bool:
    """Read and drop the request body; False when it cannot be framed (close after)."""
    if headers.get("Transfer-Encoding") is not None:
        return False  # nothing here takes a body: no chunked decoding
    length = (headers.get("Content-Length") or "0").strip()
    if not re.fullmatch(r"[0-9]{1,18}", length):
        return False
    remaining = int(length)
    while remaining > 0:
        data = handler.rfile.read(min(CHUNK, remaining))
        if not data:
            handler.close_connection = True
            return True
        remaining -= len(data)
    return True


class EnfactEmulator(EmulatorServer):
    """enFact's invoice API (list, detail, documents) on a loopback port.

    ``companies`` maps a company UUID to its invoices, each a dict of ``add_invoice``'s
    keyword arguments (``id`` and ``customer_name`` are accepted for ``invoice_id`` and
    ``customer``). Default: one company, ``DEFAULT_COMPANY``, with no invoices.

    Settings that tests may change at any time (plain attributes): ``session_key``,
    ``page_size``, ``error_rate`` (probability of a random fault on each ``/v1/`` request),
    ``error_kinds`` (drawn uniformly; default "500", "429"), ``seed``.

    Recorded requests' ``form`` and ``files`` are always empty (no endpoint takes a body).
    """

    _name = "enfact"
    _handler_class = _Handler
    _fault_kinds = FAULT_KINDS
    _fault_texts = {"500": "Internal server error.", "429": "Too many requests, slow down."}
    _api_prefix = "/v1/"
    _no_route = "no route for {path}"
    _not_allowed = "{method} is not allowed on {path}"

    def __init__(
        self,
        *,
        session_key: str = "sk-test-session-key",
        companies: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        page_size: int = 20,
        port: int = 0,
    ) -> None:
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be between 1 and {MAX_LIMIT}")
        super().__init__(port=port)
        self.session_key = session_key
        self.page_size = page_size
        #: False: behave like an API that ignores ``date_from``/``date_to`` (they are not in enFact's doc).
        self.date_filters = True

        self._routes = (
            ("GET", re.compile(r"/v1/invoices\.json"), self._list),
            ("GET", re.compile(r"/v1/invoices/([^/]+)\.(json|pdf|html|xml)"), self._invoice),
        )
        self._store = EnfactInvoices({DEFAULT_COMPANY: []} if companies is None else companies)

    # ------------------------------------------------------------------ data

    @property
    def companies(self) -> list[str]:
        """The known company UUIDs, as given."""
        return self._store.companies

    def add_company(self, company_uuid: str) -> None:
        """Make ``company_uuid`` known (no invoices); nothing happens if it already is."""
        self._store.add_company(company_uuid)

    def add_invoice(self, company_uuid: str, **invoice: Any) -> dict[str, Any]:
        """Add an invoice to a known company (``EnfactInvoices.add_invoice``); returns its detail."""
        return self._store.add_invoice(company_uuid, **invoice)

    def remove_invoice(self, company_uuid: str, invoice_id: int) -> None:
        """Delete an invoice (its URLs answer 404 afterwards); KeyError if it is not there."""
        self._store.remove_invoice(company_uuid, invoice_id)

    def pdf_for(self, invoice_id: int) -> bytes:
        """The bytes ``GET /v1/invoices/{invoice_id}.pdf`` answers."""
        return self._store.pdf_for(invoice_id)

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        """The detail ``GET /v1/invoices/{invoice_id}.json`` answers."""
        return self._store.invoice(invoice_id)

    def invoices(self, company_uuid: str) -> list[dict[str, Any]]:
        """The company's invoices as list items, in the list's order (newest first)."""
        return self._store.invoices(company_uuid)

    # ------------------------------------------------------------- test controls

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ------------------------------------------------------------------ serving

    def _handle(self, handler: EmulatorHandler, method: str, path: str,
                query: dict[str, list[str]], headers: Headers, fault: Fault | None) -> Reply | None:
        reply: Reply | None
        if not _discard_body(handler, headers):
            reply = _error(400, "request bodies must be framed by Content-Length")
            reply.close = True
        else:
            reply = self._answer(fault, lambda: self._dispatch(method, path, query, headers))
        self._record(RecordedRequest(method, path, query, headers, {}, {},
                                     reply.status if reply else None, fault.kind if fault else None))
        return reply

    def _error(self, status: int, text: str) -> Reply:
        return _error(status, text)

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]],
                  headers: Headers) -> Reply:
        routed = self._route(method, path)
        if isinstance(routed, Reply):
            return routed
        denied = self._denied(headers)
        if denied is not None:
            return _error(403, denied)
        endpoint, args = routed
        company = company_key(headers["X-COMPANY-UUID"])
        return self._guarded(method, path, lambda: endpoint(*args, company=company, query=query))

    def _denied(self, headers: Headers) -> str | None:
        key = headers.get("X-SESSION-KEY")
        if not key:
            return "Missing X-SESSION-KEY header."
        if key.strip() != self.session_key:
            return "Invalid session key."
        company = headers.get("X-COMPANY-UUID")
        if not company or not company.strip():
            return "Missing X-COMPANY-UUID header."
        if not self._store.knows(company):
            return "Unknown company or no access to this company."
        return None

    # ---------------------------------------------------------------- endpoints

    def _list(self, *, company: str, query: dict[str, list[str]]) -> Reply:
        page = _query_int(query, "page", 1, 1, None)
        limit = _query_int(query, "limit", self.page_size, 1, MAX_LIMIT)
        problems = [value for value in (page, limit) if isinstance(value, str)]
        bounds: list[str | None] = []
        for name in ("date_from", "date_to"):
            try:
                bounds.append(_query_date(query, name))
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            return _error(400, "; ".join(problems))
        assert isinstance(page, int) and isinstance(limit, int)
        date_from, date_to = bounds if self.date_filters else (None, None)
        matching = self._store.invoices(company, date_from, date_to)
        start = (page - 1) * limit
        return json_reply(200, {"items": matching[start:start + limit], "page": page, "limit": limit,
                                "total": len(matching), "pages": math.ceil(len(matching) / limit)})

    def _invoice(self, raw_id: str, extension: str, *, company: str,
                 query: dict[str, list[str]]) -> Reply:
        served = self._store.served(int(raw_id), company) if re.fullmatch(r"[0-9]{1,18}", raw_id) else None
        if served is None:
            return _error(404, f"Invoice {raw_id} not found.")
        detail, pdf = served
        if extension == "json":
            return json_reply(200, detail)
        if extension == "pdf":
            filename = f"{detail['number']}.pdf".replace('"', "")
            ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
            disposition = f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"  # RFC 6266
            return Reply(200, pdf, "application/pdf", {"Content-Disposition": disposition})
        if extension == "html":
            text = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Facture "
                    f"{html_escape(detail['number'])}</title></head><body><h1>Facture "
                    f"{html_escape(detail['number'])}</h1><p>{html_escape(detail['date'])} - "
                    f"{html_escape(detail['customer']['name'])} - {detail['total']:.2f} EUR</p>"
                    "</body></html>")
            return Reply(200, text.encode("utf-8"), "text/html; charset=utf-8")
        text = ('<?xml version="1.0" encoding="utf-8"?><invoice>'
                f"<id>{detail['id']}</id><number>{xml_escape(detail['number'])}</number>"
                f"<date>{detail['date']}</date><customer>{xml_escape(detail['customer']['name'])}"
                f"</customer><total currency=\"EUR\">{detail['total']:.2f}</total></invoice>")
        return Reply(200, text.encode("utf-8"), "application/xml; charset=utf-8")


# ------------------------------------------------------------------------ command line


def _from_args(args: argparse.Namespace) -> EnfactEmulator:
    """The emulator the command line asks for, with its sample invoices."""
    companies = args.company or [DEFAULT_COMPANY]
    emulator = EnfactEmulator(session_key=args.session_key, page_size=args.page_size,
                              companies={company: [] for company in companies}, port=args.port)
    today = date.today()
    for company in companies:
        for age in range(args.invoices - 1, -1, -1):
            emulator.add_invoice(company, date=today - timedelta(days=age),
                                 total=round(121.0 * (age + 1), 2))
    return emulator


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; print the base URL (and credentials) as one JSON line first."""
    parser = cli_parser("tests.emulators.enfact", __doc__)
    parser.add_argument("--session-key", default="sk-test-session-key")
    parser.add_argument("--company", action="append", default=None,
                        help=f"a company UUID (repeatable); default {DEFAULT_COMPANY}")
    parser.add_argument("--invoices", type=int, default=0,
                        help="sample invoices to create per company (one a day, up to today)")
    parser.add_argument("--page-size", type=int, default=20)
    run_cli(parser, argv, _from_args,
            lambda emulator: {"base_url": emulator.base_url, "session_key": emulator.session_key,
                              "companies": emulator.companies})


if __name__ == "__main__":
    main()
