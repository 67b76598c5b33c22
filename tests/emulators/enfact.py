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
import contextlib
import itertools
import json
import logging
import math
import random
import re
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape as html_escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape as xml_escape

from tests.emulators.inqom import Headers, RecordedRequest

__all__ = [
    "DEFAULT_COMPANY",
    "FAULT_KINDS",
    "EnfactEmulator",
    "Headers",
    "RecordedRequest",
    "main",
    "minimal_pdf",
]

_log = logging.getLogger(__name__)

DEFAULT_COMPANY = "0b6a3c5e-1f0d-4c1e-9a55-2f1f6f0e9c01"
FAULT_KINDS = frozenset({"500", "502", "503", "429", "drop", "slow"})
MAX_LIMIT = 100
FIRST_ID = 5001
JSON_TYPE = "application/json; charset=utf-8"
_CHUNK = 64 * 1024
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


# --------------------------------------------------------------------------- internals


@dataclass
class _Invoice:
    id: int
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


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False


@dataclass
class _Fault:
    kind: str
    remaining: int
    path_contains: str | None
    method: str | None
    retry_after: str | None
    delay: float

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return _Reply(status, body, JSON_TYPE, dict(headers or {}))


def _error(status: int, text: str) -> _Reply:
    return _json(status, {"error": text})


def _fault_reply(fault: _Fault) -> _Reply:
    if fault.kind in ("502", "503"):
        title = "502 Bad Gateway" if fault.kind == "502" else "503 Service Unavailable"
        html = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
        reply = _Reply(int(fault.kind), html.encode(), "text/html")
    elif fault.kind == "429":
        reply = _error(429, "Too many requests, slow down.")
    else:
        reply = _error(500, "Internal server error.")
    if fault.retry_after is not None:
        reply.headers["Retry-After"] = fault.retry_after
    return reply


def _company_key(company_uuid: str) -> str:
    return company_uuid.strip().lower()


def _iso_date(value: str | date | None) -> str:
    if value is None:
        return date.today().isoformat()
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not _DATE.fullmatch(value):
        raise ValueError(f"date must be YYYY-MM-DD, got {value!r}")
    return date.fromisoformat(value).isoformat()


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
        return _iso_date(values[-1])
    except ValueError:
        raise ValueError(f"{name} must be a date YYYY-MM-DD, got {values[-1]!r}") from None


# ---------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: EnfactEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.emulator._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._connection_closed(self.connection)

    def do_GET(self) -> None:
        self.server.emulator._serve(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def version_string(self) -> str:
        return "nginx"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        _log.info("%s - %s", self.address_string(), format % args)

    def discard_body(self, headers: Headers) -> bool:
        """Read and drop the request body; False when it cannot be framed (close after)."""
        if headers.get("Transfer-Encoding") is not None:
            return False  # nothing here takes a body: no chunked decoding
        length = (headers.get("Content-Length") or "0").strip()
        if not re.fullmatch(r"[0-9]{1,18}", length):
            return False
        remaining = int(length)
        while remaining > 0:
            data = self.rfile.read(min(_CHUNK, remaining))
            if not data:
                self.close_connection = True
                return True
            remaining -= len(data)
        return True

    def send_reply(self, reply: _Reply) -> None:
        """Write ``reply``, always with a Content-Length."""
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply.body)


_Route = tuple[str, re.Pattern[str], Callable[..., _Reply]]


class EnfactEmulator:
    """enFact's invoice API (list, detail, documents) on a loopback port.

    ``companies`` maps a company UUID to its invoices, each a dict of ``add_invoice``'s
    keyword arguments (``id`` and ``customer_name`` are accepted for ``invoice_id`` and
    ``customer``). Default: one company, ``DEFAULT_COMPANY``, with no invoices.

    Settings that tests may change at any time (plain attributes): ``session_key``,
    ``page_size``, ``error_rate`` (probability of a random fault on each ``/v1/`` request),
    ``error_kinds`` (drawn uniformly; default "500", "429"), ``seed``.
    """

    host = "127.0.0.1"

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
        self.session_key = session_key
        self.page_size = page_size
        self.error_rate = 0.0
        self._error_kinds: tuple[str, ...] = ("500", "429")
        self.internal_errors: list[str] = []  # tracebacks of emulator bugs (answered 500)

        self._requested_port = port
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._seed = 0
        self._rng = random.Random(self._seed)
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._companies: dict[str, str] = {}  # normalised key -> UUID as given
        self._invoices: dict[int, _Invoice] = {}
        self._numbers: dict[str, itertools.count[int]] = {}
        self._ids = itertools.count(FIRST_ID)
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: tuple[_Route, ...] = (
            ("GET", re.compile(r"/v1/invoices\.json"), self._list),
            ("GET", re.compile(r"/v1/invoices/([^/]+)\.(json|pdf|html|xml)"), self._invoice),
        )
        for company, invoices in ({DEFAULT_COMPANY: []} if companies is None else companies).items():
            self.add_company(company)
            for spec in invoices:
                kwargs = {_ALIASES.get(key, key): value for key, value in spec.items()}
                unknown = set(kwargs) - _INVOICE_KEYS
                if unknown:
                    raise ValueError(f"unknown invoice field(s) {sorted(unknown)}")
                self.add_invoice(company, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EnfactEmulator:
        """Bind 127.0.0.1 (port 0 = a free port) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"enfact-emulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        deadline = time.monotonic() + 5
        with self._idle:
            while self._connections and time.monotonic() < deadline:
                for connection in list(self._connections):
                    with contextlib.suppress(OSError):
                        connection.shutdown(socket.SHUT_RDWR)
                self._idle.wait(0.1)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> EnfactEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ data

    @property
    def companies(self) -> list[str]:
        """The known company UUIDs, as given."""
        with self._lock:
            return list(self._companies.values())

    def add_company(self, company_uuid: str) -> None:
        """Make ``company_uuid`` known (no invoices); nothing happens if it already is."""
        key = _company_key(company_uuid)
        if not key:
            raise ValueError("a company UUID is required")
        with self._lock:
            self._companies.setdefault(key, company_uuid.strip())
            self._numbers.setdefault(key, itertools.count(1))

    def add_invoice(
        self,
        company_uuid: str,
        *,
        invoice_id: int | None = None,
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
        companies). ``number``: default "F{year}-{n:04d}", n counting the company's
        invoices. ``date``: ISO "YYYY-MM-DD", default today. ``total`` includes VAT;
        ``lines`` default to one 21 % line. ``pdf``: default a one-page PDF generated here
        (see ``pdf_for``). ``modified`` is set to the current UTC time.
        """
        key = _company_key(company_uuid)
        day = _iso_date(date)
        with self._lock:
            if key not in self._companies:
                raise KeyError(f"unknown company {company_uuid!r}")
            if invoice_id is None:
                invoice_id = next(self._ids)
                while invoice_id in self._invoices:
                    invoice_id = next(self._ids)
            elif isinstance(invoice_id, bool) or not isinstance(invoice_id, int) or invoice_id < 1:
                raise ValueError(f"invoice_id must be a positive integer, got {invoice_id!r}")
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
            if invoice is None or invoice.company != _company_key(company_uuid):
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

    def invoices(self, company_uuid: str) -> list[dict[str, Any]]:
        """The company's invoices as list items, in the list's order (newest first)."""
        with self._lock:
            return [invoice.summary() for invoice in self._sorted(_company_key(company_uuid))]

    # ------------------------------------------------------------- test controls

    def inject(self, kind: str, *, times: int = 1, path_contains: str | None = None,
               method: str | None = None, retry_after: float | str | None = None,
               delay: float = 0.0) -> None:
        """Queue a fault for the next ``times`` matching requests (queued faults go first).

        Kinds: "500", "502", "503", "429" (that answer, with Retry-After when
        ``retry_after`` is given), "drop" (read the request, close without answer),
        "slow" (answer normally after ``delay`` s). ``delay`` applies to every kind.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; valid: {sorted(FAULT_KINDS)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(_Fault(kind, times, path_contains,
                                       method.upper() if method else None,
                                       None if retry_after is None else str(retry_after), delay))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def error_kinds(self) -> tuple[str, ...]:
        """Fault kinds drawn (uniformly) for random faults."""
        return self._error_kinds

    @error_kinds.setter
    def error_kinds(self, kinds: Sequence[str]) -> None:
        unknown = set(kinds) - FAULT_KINDS
        if not kinds or unknown:
            raise ValueError(f"error_kinds must be non-empty fault kinds; unknown: {sorted(unknown)}")
        self._error_kinds = tuple(kinds)

    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        with self._lock:
            self._seed = value
            self._rng = random.Random(value)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request recorded so far, oldest first.

        ``form`` and ``files`` are always empty here (no endpoint takes a body);
        ``status`` is None when the connection was dropped.
        """
        with self._lock:
            return list(self._requests)

    def calls(self, method: str | None = None, path_contains: str | None = None) -> list[RecordedRequest]:
        """Recorded requests with this method (any case) whose path contains this text."""
        return [r for r in self.requests
                if (method is None or r.method == method.upper())
                and (path_contains is None or path_contains in r.path)]

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------------ serving

    def _connection_opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._idle:
            self._connections.discard(connection)
            self._idle.notify_all()

    def _serve(self, handler: _Handler) -> None:
        target = urlsplit(handler.path)
        method, path = handler.command, target.path
        query = parse_qs(target.query, keep_blank_values=True)
        headers = Headers(handler.headers.items())
        fault = self._take_fault(method, path)
        fault_kind = fault.kind if fault else None
        reply: _Reply | None
        if not handler.discard_body(headers):
            reply = _error(400, "request bodies must be framed by Content-Length")
            reply.close = True
        else:
            if fault is not None and fault.delay > 0:
                self._stopping.wait(fault.delay)
            if fault_kind == "drop":
                reply = None
            elif fault is not None and fault_kind != "slow":
                reply = _fault_reply(fault)
            else:
                reply = self._dispatch(method, path, query, headers)
        with self._lock:
            self._requests.append(RecordedRequest(method, path, query, headers, {}, {},
                                                  reply.status if reply else None, fault_kind))
        if reply is None:
            handler.close_connection = True
        else:
            handler.send_reply(reply)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
            if self.error_rate > 0 and path.startswith("/v1/") and self._rng.random() < self.error_rate:
                return _Fault(self._rng.choice(self._error_kinds), 1, None, None, None, 0.0)
        return None

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]],
                  headers: Headers) -> _Reply:
        matches = [(route_method, handler, match) for route_method, pattern, handler in self._routes
                   if (match := pattern.fullmatch(path))]
        if not matches:
            return _error(404, f"no route for {path}")
        chosen = next(((handler, match) for route_method, handler, match in matches
                       if route_method == method), None)
        if chosen is None:
            reply = _error(405, f"{method} is not allowed on {path}")
            reply.headers["Allow"] = ", ".join(sorted({m for m, _, _ in matches}))
            return reply
        denied = self._denied(headers)
        if denied is not None:
            return _error(403, denied)
        handler, match = chosen
        company = _company_key(headers["X-COMPANY-UUID"])
        try:
            return handler(*match.groups(), company=company, query=query)
        except Exception:  # an emulator bug: answer 500 and keep it for the test to see
            _log.exception("enfact emulator error on %s %s", method, path)
            with self._lock:
                self.internal_errors.append(traceback.format_exc())
            return _error(500, "Internal server error.")

    def _denied(self, headers: Headers) -> str | None:
        key = headers.get("X-SESSION-KEY")
        if not key:
            return "Missing X-SESSION-KEY header."
        if key.strip() != self.session_key:
            return "Invalid session key."
        company = headers.get("X-COMPANY-UUID")
        if not company or not company.strip():
            return "Missing X-COMPANY-UUID header."
        with self._lock:
            if _company_key(company) not in self._companies:
                return "Unknown company or no access to this company."
        return None

    def _sorted(self, company: str) -> list[_Invoice]:
        return sorted((invoice for invoice in self._invoices.values() if invoice.company == company),
                      key=lambda invoice: (invoice.date, invoice.id), reverse=True)

    # ---------------------------------------------------------------- endpoints

    def _list(self, *, company: str, query: dict[str, list[str]]) -> _Reply:
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
        date_from, date_to = bounds
        with self._lock:
            matching = [invoice.summary() for invoice in self._sorted(company)
                        if (date_from is None or invoice.date >= date_from)
                        and (date_to is None or invoice.date <= date_to)]
        start = (page - 1) * limit
        return _json(200, {"items": matching[start:start + limit], "page": page, "limit": limit,
                           "total": len(matching), "pages": math.ceil(len(matching) / limit)})

    def _invoice(self, raw_id: str, extension: str, *, company: str,
                 query: dict[str, list[str]]) -> _Reply:
        with self._lock:
            invoice = (self._invoices.get(int(raw_id))
                       if re.fullmatch(r"[0-9]{1,18}", raw_id) else None)
            if invoice is None or invoice.company != company:
                return _error(404, f"Invoice {raw_id} not found.")
            detail, pdf = invoice.detail(), invoice.pdf
        if extension == "json":
            return _json(200, detail)
        if extension == "pdf":
            filename = f"{detail['number']}.pdf".replace('"', "")
            return _Reply(200, pdf, "application/pdf",
                          {"Content-Disposition": f'inline; filename="{filename}"'})
        if extension == "html":
            text = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Facture "
                    f"{html_escape(detail['number'])}</title></head><body><h1>Facture "
                    f"{html_escape(detail['number'])}</h1><p>{html_escape(detail['date'])} - "
                    f"{html_escape(detail['customer']['name'])} - {detail['total']:.2f} EUR</p>"
                    "</body></html>")
            return _Reply(200, text.encode("utf-8"), "text/html; charset=utf-8")
        text = ('<?xml version="1.0" encoding="utf-8"?><invoice>'
                f"<id>{detail['id']}</id><number>{xml_escape(detail['number'])}</number>"
                f"<date>{detail['date']}</date><customer>{xml_escape(detail['customer']['name'])}"
                f"</customer><total currency=\"EUR\">{detail['total']:.2f}</total></invoice>")
        return _Reply(200, text.encode("utf-8"), "application/xml; charset=utf-8")


# ------------------------------------------------------------------------ command line


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; print the base URL (and credentials) as one JSON line first."""
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.enfact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--session-key", default="sk-test-session-key")
    parser.add_argument("--company", action="append", default=None,
                        help=f"a company UUID (repeatable); default {DEFAULT_COMPANY}")
    parser.add_argument("--invoices", type=int, default=0,
                        help="sample invoices to create per company (one a day, up to today)")
    parser.add_argument("--page-size", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    companies = args.company or [DEFAULT_COMPANY]
    emulator = EnfactEmulator(session_key=args.session_key, page_size=args.page_size,
                              companies={company: [] for company in companies}, port=args.port)
    today = date.today()
    for company in companies:
        for age in range(args.invoices - 1, -1, -1):
            emulator.add_invoice(company, date=today - timedelta(days=age),
                                 total=round(121.0 * (age + 1), 2))
    with emulator:
        print(json.dumps({"base_url": emulator.base_url, "session_key": emulator.session_key,
                          "companies": emulator.companies}), flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
