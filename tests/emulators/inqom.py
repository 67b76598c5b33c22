"""A real HTTP emulator of Inqom's "API Accounting Documents", for tests.

It follows the vendor's document (shared/specs/000_68932b18630bf0e0.txt, beside this
repository) field by field and is strict wherever the document is: a client that passes
against it should pass against Inqom. One loopback server plays both hosts, the identity server
(``POST /identity/connect/token``) and the API:

* ``POST /api/accounting-documents/accounting-folders/{folderId}/Documents``
* ``GET  /api/accounting-documents/accounting-folders/{folderId}/Documents?pageNumber=N&pageSize=M``
  (the list, newest first: not in the seed document, named in Inqom's other documents and in
  issue 19; the bridge reads it to learn what an upload whose answer was lost created)
* ``GET  /api/accounting-documents/accounting-folders/{folderId}/Documents/{id}``
* ``GET  /api/accounting-documents/accounting-folders/{folderId}/Documents/{id}/public-url``
* ``POST /api/v1/accounting-folders/{folderId}/expense-bills``
* ``GET  /public/{token}/{name}?...&sig=...`` (the temporary download URLs it hands out)

Uploads are parsed as a stream (Content-Length or chunked), file parts go to temporary
files, so a large upload costs no memory. Every request is recorded, and faults can be
scripted (``inject``) or drawn at random (``error_rate``).

Usage::

    from tests.emulators.inqom import InqomEmulator

    with InqomEmulator(polls_per_step=2) as inqom:
        inqom.inject("503", times=2, path_contains="/Documents")
        run_client(token_url=inqom.token_url, base_url=inqom.base_url,
                   username=inqom.username, password=inqom.password,
                   client_id=inqom.client_id, client_secret=inqom.client_secret)
        upload = inqom.calls("POST", "/Documents")[-1]
        assert upload.form["TypeScan"] == "Supplier"
        assert upload.files["Document"].sha1_hex_upper == expected_sha1

Stand-alone, for a local runner (prints ``{"base_url": ..., "token_url": ...}`` on one
line, then serves until SIGINT/SIGTERM)::

    python -m tests.emulators.inqom --port 8081 --username U --password P \\
        --client-id C --client-secret S
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.message
import email.parser
import email.utils
import hashlib
import io
import itertools
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from tests.emulators._server import (
    CHUNK,
    EmulatorHandler,
    EmulatorServer,
    Fault,
    FileBody,
    Headers,
    RecordedFile,
    RecordedRequest,
    Reply,
    SlidingWindowLimit,
    TimedCall,
    cli_parser,
    json_reply,
    run_cli,
)

__all__ = [
    "FAULT_KINDS",
    "STATUSES",
    "Headers",
    "InqomEmulator",
    "RecordedFile",
    "RecordedRequest",
    "TimedCall",
    "main",
]

STATUSES = frozenset(
    {"Received", "ToReview", "Processing", "Duplicate", "Done", "ManualProcessing", "Deleted"}
    # Not in the spec, but answered by Inqom in practice: "Pending" (waiting), "Rejected" (final).
    | {"Pending", "Rejected"}
)
#: What Inqom extracts from a document (answered by GET Documents/{id} once set, null members left out).
EXTRACTED_FIELDS = ("CounterParty", "Amount", "EffectifDate", "DocRef", "Type", "UserDefinedThirdPartyName")
#: Legal-but-odd 2xx answers: the request is processed, then answered 200 with this body.
ODD_ANSWERS = {
    "ok_empty_array": lambda created: [],
    "ok_two_elements": lambda created: [created, dict(created)],
    "ok_no_id": lambda created: {k: v for k, v in created.items() if k not in ("Id", "DocumentId")},
}
FAULT_KINDS = frozenset(
    {"500", "502", "503", "504", "429", "400", "403", "drop", "slow", "drop_after_process", *ODD_ANSWERS}
)
MAX_PAGE_SIZE = 100
TYPE_SCANS = ("Client", "Supplier", "Others")
TOKEN_PATH = "/identity/connect/token"
TOKEN_FIELDS = ("username", "password", "grant_type", "scope", "client_id", "client_secret")
SCOPE = "openid apidata"

_MAX_FIELD = 64 * 1024  # largest accepted non-file multipart value
_MAX_PART_HEADERS = 16 * 1024
_MAX_URLENCODED = 64 * 1024
_OWNER_ID = 7498  # "OwnerId" of every document (the API user)
_FORBIDDEN = "Authorization has been denied for this request."


# --------------------------------------------------------------------------- internals


class _BadRequest(Exception):
    """The request body is malformed (answered 400 with this message)."""


class _BadFraming(Exception):
    """The body's framing is unusable: answered 400, then the connection is closed."""


class _Disconnected(Exception):
    """The client went away before sending its whole request."""


@dataclass
class _UploadedFile:
    name: str
    filename: str
    content_type: str | None
    size: int
    sha1: str
    data: bytes | None
    path: str
    kept: bool = False  # True once a document owns the temporary file

    def record(self) -> RecordedFile:
        return RecordedFile(self.filename, self.content_type, self.size, self.sha1, self.data)


@dataclass
class _Body:
    media_type: str | None
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[_UploadedFile] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    body: _Body


@dataclass
class _Document:
    id: int
    folder_id: int
    name: str
    original_name: str
    type: str
    size: int
    checksum: str
    path: str
    created_at: datetime
    source_id: str | None
    doc_ref: str | None
    beneficiary: str | None
    origin_id: int | None
    flow: tuple[str, ...]
    polls_per_step: int
    status: str = ""
    reasons: tuple[str, ...] = ()
    status_updated_at: datetime | None = None
    deleted_at: datetime | None = None
    step: int = 0
    polls: int = 0
    extracted: dict[str, Any] = field(default_factory=dict)  # EXTRACTED_FIELDS -> JSON value, as answered


@dataclass(frozen=True)
class _PublicLink:
    doc_id: int
    signature: str
    expires_at: float  # time.time()


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    """Format like .NET does in Inqom's answers: "2023-03-24T17:05:21.38Z"."""
    fraction = f"{moment.microsecond:06d}0".rstrip("0")
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def _message(status: int, text: str) -> Reply:
    return json_reply(status, {"Message": text})


def _oauth_error(error: str, description: str | None = None) -> Reply:
    payload = {"error": error}
    if description is not None:
        payload["error_description"] = description
    return json_reply(400, payload, {"Cache-Control": "no-store", "Pragma": "no-cache"})


def _storage_error(status: int, code: str, message: str, detail: str | None = None) -> Reply:
    """An Azure Blob Storage style XML error, as the public download URLs answer."""
    detail_xml = f"<AuthenticationErrorDetail>{detail}</AuthenticationErrorDetail>" if detail else ""
    text = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{code}</Code><Message>{message}\nRequestId:{uuid.uuid4()}\n"
        f"Time:{_iso(_now())}</Message>{detail_xml}</Error>"
    )
    return Reply(status, text.encode("utf-8"), "application/xml", {"x-ms-error-code": code})


def _positive_int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) and int(text) > 0 else None


def _check_flow(flow: Sequence[str]) -> tuple[str, ...]:
    steps = tuple(flow)
    if not steps or isinstance(flow, str):
        raise ValueError("a status flow is a non-empty sequence of statuses")
    unknown = [step for step in steps if step not in STATUSES]
    if unknown:
        raise ValueError(f"unknown status(es) {unknown}; valid: {sorted(STATUSES)}")
    return steps


# ------------------------------------------------------------------------ body parsing


class _BodyReader:
    """Reads a request body incrementally, framed by Content-Length or chunked encoding."""

    def __init__(self, rfile: io.BufferedIOBase, headers: Headers) -> None:
        self._rfile = rfile
        self._remaining = 0  # bytes left in the body (Content-Length) or in the chunk
        transfer_encoding = headers.get("Transfer-Encoding")
        length = headers.get("Content-Length")
        if transfer_encoding is not None:
            if transfer_encoding.strip().lower() != "chunked":
                raise _BadFraming(f"unsupported Transfer-Encoding {transfer_encoding!r}")
            self._chunked = True
            self._done = False
        else:
            if length is not None and not re.fullmatch(r"[0-9]{1,18}", length.strip()):
                raise _BadFraming(f"invalid Content-Length {length!r}")
            self._chunked = False
            self._remaining = int(length) if length is not None else 0
            self._done = self._remaining == 0

    def read(self, size: int = CHUNK) -> bytes:
        """Up to ``size`` bytes of the body; b"" once it is all read."""
        while not self._done:
            if self._remaining == 0:
                self._next_chunk()
                continue
            data = self._rfile.read(min(size, self._remaining))
            if not data:
                raise _Disconnected()
            self._remaining -= len(data)
            if self._remaining == 0:
                if self._chunked:
                    if self._rfile.read(2) != b"\r\n":
                        raise _BadFraming("chunk data not followed by CRLF")
                else:
                    self._done = True
            return data
        return b""

    def drain(self) -> None:
        while self.read():
            pass

    def _next_chunk(self) -> None:
        line = self._rfile.readline(1024)
        if not line:
            raise _Disconnected()
        size = line.rstrip(b"\r\n").split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size):
            raise _BadFraming(f"malformed chunk size line {line[:40]!r}")
        self._remaining = int(size, 16)
        if self._remaining == 0:
            while (trailer := self._rfile.readline(8192)) not in (b"\r\n", b"\n"):
                if not trailer:
                    raise _Disconnected()
            self._done = True


class _FilePart:
    """A file part being received: written to a temporary file, hashed as it comes."""

    def __init__(self, name: str, filename: str, content_type: str | None,
                 tmpdir: str, max_memory: int) -> None:
        self.name, self.filename, self.content_type = name, filename, content_type
        fd, self.path = tempfile.mkstemp(dir=tmpdir, suffix=".part")
        self._file = os.fdopen(fd, "wb")
        self._sha1 = hashlib.sha1()
        self._size = 0
        self._memory: bytearray | None = bytearray()
        self._max_memory = max_memory

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha1.update(data)
        self._size += len(data)
        if self._memory is not None:
            if self._size <= self._max_memory:
                self._memory += data
            else:
                self._memory = None

    def finish(self) -> _UploadedFile:
        self._file.close()
        data = bytes(self._memory) if self._memory is not None else None
        return _UploadedFile(self.name, self.filename, self.content_type, self._size,
                             self._sha1.hexdigest().upper(), data, self.path)

    def discard(self) -> None:
        self._file.close()
        _unlink(self.path)


class _FieldPart:
    """A plain (non-file) part: its value, kept in memory, at most _MAX_FIELD bytes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._value = bytearray()

    def write(self, data: bytes) -> None:
        self._value += data
        if len(self._value) > _MAX_FIELD:
            raise _BadRequest(f"form field {self.name!r} is larger than {_MAX_FIELD} bytes")

    def finish(self) -> tuple[str, str]:
        try:
            return self.name, self._value.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadRequest(f"form field {self.name!r} is not valid UTF-8") from None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _part_headers(raw: bytes) -> tuple[str, str | None, str | None]:
    """(name, filename or None, Content-Type or None) of a multipart part's headers.

    As in ASP.NET, a part is a file only when its Content-Disposition has a non-empty
    filename (or filename*).
    """
    message = email.parser.HeaderParser().parsestr(raw.decode("utf-8", errors="replace"))
    if message.get_content_disposition() != "form-data":
        raise _BadRequest("multipart part without 'Content-Disposition: form-data'")
    name = message.get_param("name", header="content-disposition")
    if isinstance(name, tuple):
        name = email.utils.collapse_rfc2231_value(name)
    if not name:
        raise _BadRequest("multipart part without a name")
    return name, message.get_filename() or None, message.get("content-type")


def _parse_multipart(reader: _BodyReader, boundary: str, tmpdir: str,
                     max_memory: int) -> tuple[list[tuple[str, str]], list[_UploadedFile]]:
    """Parse a multipart/form-data body as it streams in.

    Memory use is bounded by one read block plus the delimiter, whatever the part sizes.
    On error every temporary file created so far is removed and the rest of the body
    is drained, so the connection stays usable.
    """
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    keep = len(delimiter) - 1
    buf = bytearray(b"\r\n")  # so the first delimiter looks like every other one
    eof = False
    fields: list[tuple[str, str]] = []
    files: list[_UploadedFile] = []
    part: _FilePart | _FieldPart | None = None
    state = "preamble"

    def fill() -> None:
        nonlocal eof
        data = reader.read(CHUNK)
        eof = not data
        buf.extend(data)

    try:
        while state != "end":
            if state in ("preamble", "body"):
                index = buf.find(delimiter)
                if index < 0:
                    if eof:
                        raise _BadRequest("multipart body ends before its closing delimiter")
                    if len(buf) > keep:
                        if part is not None:
                            part.write(bytes(buf[:-keep]))
                        del buf[:-keep]
                    fill()
                    continue
                if part is not None:
                    part.write(bytes(buf[:index]))
                    if isinstance(part, _FilePart):
                        files.append(part.finish())
                    else:
                        fields.append(part.finish())
                    part = None
                del buf[:index + len(delimiter)]
                state = "delimiter"
            elif state == "delimiter":
                line_end = buf.find(b"\r\n")
                if buf.startswith(b"--"):
                    state = "end"
                elif line_end >= 0:
                    if buf[:line_end].strip(b" \t"):
                        raise _BadRequest("garbage after a multipart delimiter")
                    del buf[:line_end + 2]
                    state = "headers"
                elif eof or len(buf) > 1024:
                    raise _BadRequest("malformed multipart delimiter line")
                else:
                    fill()
            else:  # headers
                end = 0 if buf.startswith(b"\r\n") else buf.find(b"\r\n\r\n")
                if end < 0:
                    if eof or len(buf) > _MAX_PART_HEADERS:
                        raise _BadRequest("malformed multipart part headers")
                    fill()
                    continue
                name, filename, content_type = _part_headers(bytes(buf[:end]))
                del buf[:end + (2 if end == 0 else 4)]
                part = (_FilePart(name, filename, content_type, tmpdir, max_memory)
                        if filename is not None else _FieldPart(name))
                state = "body"
        reader.drain()  # the epilogue
    except BaseException as exc:
        if isinstance(part, _FilePart):
            part.discard()
        for uploaded in files:
            _unlink(uploaded.path)
        if isinstance(exc, _BadRequest):
            reader.drain()
        raise
    return fields, files


def _read_body(reader: _BodyReader, content_type: str | None, tmpdir: str,
               max_memory: int) -> _Body:
    """Read the whole body; the form is parsed for the two form media types."""
    message = email.message.Message()
    if content_type:
        message["Content-Type"] = content_type
    media_type = message.get_content_type() if content_type else None
    body = _Body(media_type)
    try:
        if media_type == "multipart/form-data":
            boundary = message.get_param("boundary")
            if not isinstance(boundary, str) or not boundary or not boundary.isascii():
                raise _BadRequest("multipart/form-data without a valid boundary")
            body.fields, body.files = _parse_multipart(reader, boundary, tmpdir, max_memory)
        elif media_type == "application/x-www-form-urlencoded":
            raw = bytearray()
            while chunk := reader.read():
                raw += chunk
                if len(raw) > _MAX_URLENCODED:
                    reader.drain()
                    raise _BadRequest("url-encoded body too large")
            try:
                body.fields = parse_qsl(raw.decode("ascii"), keep_blank_values=True,
                                        strict_parsing=True, errors="strict")
            except (UnicodeDecodeError, ValueError) as exc:
                raise _BadRequest(f"malformed url-encoded body: {exc}") from None
        else:
            reader.drain()
    except _BadRequest as exc:
        body.error = str(exc)
    return body


def _recorded(request: _Request, status: int | None, fault: str | None) -> RecordedRequest:
    """``request`` as recorded: the first value of each form field and file part."""
    files: dict[str, RecordedFile] = {}
    for uploaded in request.body.files:
        files.setdefault(uploaded.name, uploaded.record())
    form: dict[str, str] = {}
    for name, value in request.body.fields:
        form.setdefault(name, value)
    return RecordedRequest(request.method, request.path, request.query, request.headers,
                           form, files, status, fault)


# ---------------------------------------------------------------------- HTTP plumbing


class _Handler(EmulatorHandler):
    server_version = "Kestrel"


def _file_part(request: _Request, name: str, errors: list[str]) -> Any:
    """The required, non-empty file part ``name``, or None with the reason added to ``errors``."""
    part = next((f for f in request.body.files if f.name == name), None)
    if part is None:
        errors.append(f"{name} (a file part) is required")
    elif part.size == 0:
        errors.append(f"{name} is empty")
    return part


class InqomEmulator(EmulatorServer):
    """Inqom's identity server and accounting-documents API on a loopback port.

    Settings that tests may change at any time (plain attributes):

    * ``get_as_array`` (True): GET Documents/{id} answers a one-element array, as the
      spec's example; False answers the object.
    * ``use_origine_typo`` (True): duplicates carry ``OrigineId`` (the spec's example)
      instead of ``OriginId``.
    * ``status_reasons_as_list`` (False): ``StatusReasons`` is one enum string as the spec
      says ("None", "ExerciseLockedForDates", flags joined with ", "); True sends a list.
    * ``folders`` (None = every folder exists), ``unknown_folders`` (404),
      ``forbidden_folders`` (403, the user has no rights on them).
    * ``flow_for_name``: original file name (or DocumentName) -> status flow, applied to
      documents created afterwards.
    * ``extraction_for_name``: original file name (or DocumentName) -> what Inqom extracted
      (``EXTRACTED_FIELDS`` names, JSON values as Inqom answers them; ``None`` leaves one out),
      applied to documents created afterwards; ``set_extracted`` changes one document's.
    * ``public_url_ttl``, ``corrupt_next_downloads``, ``redirect_public_to``.
    * ``error_rate``, ``error_kinds``, ``seed``, ``random_faults_on_all``: random faults
      (on ``/api/`` paths, or on every path with ``random_faults_on_all``).
    * ``token_ttl``, ``status_flow``, ``polls_per_step``: defaults for what comes next.

    Fault kinds: ``FAULT_KINDS`` ("drop_after_process" creates the document, then drops; the
    ``ODD_ANSWERS`` kinds create it, then answer 200 with an empty array, two elements, or no id).
    """

    _name = "inqom"
    _handler_class = _Handler
    _fault_kinds = FAULT_KINDS
    _fault_texts = {
        "500": "An error has occurred.",
        "429": "Rate limit is exceeded. Try again later.",
        "400": "The request is invalid.",
        "403": _FORBIDDEN,
        "504": "The gateway timed out.",
    }
    _api_prefix = "/api/"
    _no_route = "No HTTP resource was found that matches {path}"
    _not_allowed = "The requested resource does not support {method}"

    def __init__(
        self,
        *,
        username: str = "api@example.test",
        password: str = "pw-secret",
        client_id: str = "client-id",
        client_secret: str = "client-secret",
        token_ttl: float = 3600,
        status_flow: Sequence[str] = ("Received", "Processing", "Done"),
        polls_per_step: int = 1,
        public_url_ttl: float = 300.0,
        max_memory_part: int = 1 << 20,
        rate_limit: float | None = None,
        port: int = 0,
    ) -> None:
        if polls_per_step < 1:
            raise ValueError("polls_per_step must be >= 1")
        super().__init__(port=port)
        self.username = username
        self.password = password
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.status_flow = _check_flow(status_flow)
        self.polls_per_step = polls_per_step
        self.public_url_ttl = public_url_ttl
        self.max_memory_part = max_memory_part

        self.get_as_array = True
        self.use_origine_typo = True
        self.status_reasons_as_list = False
        self.folders: set[int] | None = None
        self.unknown_folders: set[int] = set()
        self.forbidden_folders: set[int] = set()
        self.flow_for_name: dict[str, Sequence[str]] = {}
        self.extraction_for_name: dict[str, dict[str, Any]] = {}
        self.corrupt_next_downloads = 0
        self.redirect_public_to: str | None = None
        self.random_faults_on_all = False
        self.rate_limited = 0  # API calls refused by ``rate_limit`` (429 + Retry-After)
        self._rate_window: SlidingWindowLimit | None = None
        self.rate_limit = rate_limit

        self._tokens: dict[str, float] = {}  # token -> time.monotonic() expiry
        self._documents: dict[int, _Document] = {}
        self._links: dict[str, _PublicLink] = {}
        self._ids = itertools.count(1_000_001)
        self._tmpdir: str | None = None
        self._routes = (
            ("POST", re.compile(re.escape(TOKEN_PATH)), self._token),
            ("POST", re.compile(r"/api/accounting-documents/accounting-folders/([^/]+)/Documents/?"),
             self._upload_document),
            ("GET", re.compile(r"/api/accounting-documents/accounting-folders/([^/]+)/Documents/?"),
             self._list_documents),
            ("GET", re.compile(r"/api/accounting-documents/accounting-folders/([^/]+)/Documents/([^/]+)/?"),
             self._get_document),
            ("GET", re.compile(
                r"/api/accounting-documents/accounting-folders/([^/]+)/Documents/([^/]+)/public-url/?"),
             self._public_url),
            ("POST", re.compile(r"/api/v1/accounting-folders/([^/]+)/expense-bills/?"),
             self._upload_expense_bill),
            ("GET", re.compile(r"/public/([^/]+)/([^/]+)"), self._download),
        )

    # ------------------------------------------------------------------ lifecycle

    def _prepare(self) -> None:
        self._tmpdir = tempfile.mkdtemp(prefix="inqom-emulator-")

    def _clean_up(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def temp_dir(self) -> str | None:
        """The private directory holding received files (removed by ``stop()``)."""
        return self._tmpdir

    # ------------------------------------------------------------- test controls

    def expire_tokens(self) -> None:
        """Make every token issued so far invalid (API calls with it get 403)."""
        with self._lock:
            self._tokens.clear()

    def expire_public_urls(self) -> None:
        """Make every public download URL handed out so far expired (403)."""
        with self._lock:
            for token, link in self._links.items():
                self._links[token] = replace(link, expires_at=0.0)

    def set_status(self, doc_id: int, status: str, reasons: Sequence[str] | None = None, *,
                   unknown: bool = False) -> None:
        """Pin a document's status (it no longer progresses) and its StatusReasons.

        ``unknown=True`` lets a test answer a status outside ``STATUSES`` (one Inqom may add one day)."""
        if not unknown:
            _check_flow([status])
        with self._lock:
            document = self._document(doc_id)
            document.flow, document.step, document.polls = (status,), 0, 0
            self._apply_status(document, status, tuple(reasons or ()))

    def set_extracted(self, doc_id: int, **fields: Any) -> None:
        """Set what Inqom extracted from a document (``EXTRACTED_FIELDS`` names; ``None`` removes one)."""
        unknown = sorted(set(fields) - set(EXTRACTED_FIELDS))
        if unknown:
            raise ValueError(f"unknown extracted field(s) {unknown}; valid: {list(EXTRACTED_FIELDS)}")
        with self._lock:
            self._document(doc_id).extracted.update(fields)

    def set_flow(self, doc_id: int, flow: Sequence[str], polls_per_step: int | None = None) -> None:
        """Restart a document at ``flow[0]``; GETs then walk it along ``flow``."""
        steps = _check_flow(flow)
        if polls_per_step is not None and polls_per_step < 1:
            raise ValueError("polls_per_step must be >= 1")
        with self._lock:
            document = self._document(doc_id)
            document.flow, document.step, document.polls = steps, 0, 0
            if polls_per_step is not None:
                document.polls_per_step = polls_per_step
            self._apply_status(document, steps[0], ())

    @property
    def rate_limit(self) -> float | None:
        """API requests per second allowed per credential (any 1-second window); above it, 429 with
        ``Retry-After`` (whole seconds, at least 1), as Inqom does above about 15/s. None: no limit."""
        window = self._rate_window
        return window.limit if window else None

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        self._rate_window = SlidingWindowLimit(value) if value else None

    def token_calls(self) -> list[RecordedRequest]:
        """Recorded requests to the token endpoint (``len()`` for the count)."""
        return self.calls(path_contains=TOKEN_PATH)

    @property
    def documents(self) -> dict[int, dict[str, Any]]:
        """Every document, id -> the object GET Documents/{id} answers (without polling)."""
        with self._lock:
            return {doc_id: self._document_json(doc) for doc_id, doc in self._documents.items()}

    def document_count(self) -> int:
        with self._lock:
            return len(self._documents)

    # ------------------------------------------------------------------ serving

    def _handle(self, handler: EmulatorHandler, method: str, path: str,
                query: dict[str, list[str]], headers: Headers, fault: Fault | None) -> Reply | None:
        fault_kind = fault.kind if fault else None
        assert self._tmpdir is not None
        try:
            reader = _BodyReader(handler.rfile, headers)
            body = _read_body(reader, headers.get("Content-Type"), self._tmpdir, self.max_memory_part)
        except _Disconnected:
            self._record(_recorded(_Request(method, path, query, headers, _Body(None)), None, fault_kind))
            return None
        except _BadFraming as exc:
            rejection = _message(400, str(exc))
            rejection.close = True
            self._record(_recorded(_Request(method, path, query, headers, _Body(None)), 400, fault_kind))
            return rejection
        request = _Request(method, path, query, headers, body)
        try:
            reply = self._answer(fault, lambda: self._dispatch(request))
            self._record(_recorded(request, reply.status if reply else None, fault_kind))
        finally:  # before answering: a client that got its answer finds no stray file
            for uploaded in body.files:
                if not uploaded.kept:
                    _unlink(uploaded.path)
        return reply

    def _error(self, status: int, text: str) -> Reply:
        return _message(status, text)

    def _answer(self, fault: Fault | None, dispatch) -> Reply | None:
        odd = ODD_ANSWERS.get(fault.kind) if fault else None
        if odd is None:
            return super()._answer(fault, dispatch)
        reply = dispatch()
        if reply is None or reply.status != 200:
            return reply
        return json_reply(200, odd(json.loads(reply.body)))

    def _random_fault_applies(self, path: str) -> bool:
        return super()._random_fault_applies(path) or self.random_faults_on_all

    def _dispatch(self, request: _Request) -> Reply:
        routed = self._route(request.method, request.path)
        if isinstance(routed, Reply):
            return routed
        if request.path.startswith("/api/") and not self._authorized(request.headers):
            return _message(403, _FORBIDDEN)
        window = self._rate_window
        if window is not None and request.path.startswith("/api/"):
            wait = window.admit(f"{self.client_id}|{self.username}")  # tokens exist for this one credential
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                with self._lock:
                    self.rate_limited += 1
                reply = _message(429, f"Rate limit is exceeded. Try again in {seconds} seconds.")
                reply.headers["Retry-After"] = str(seconds)
                return reply
        endpoint, args = routed
        return self._guarded(request.method, request.path, lambda: endpoint(*args, request=request))

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        with self._lock:
            expiry = self._tokens.get(token.strip())
        return expiry is not None and time.monotonic() < expiry

    # ---------------------------------------------------------------- endpoints

    def _token(self, request: _Request) -> Reply:
        body = request.body
        if body.media_type != "application/x-www-form-urlencoded":
            return _oauth_error("invalid_request", "Content-Type must be application/x-www-form-urlencoded, "
                                f"got {request.headers.get('Content-Type')!r}")
        if body.error:
            return _oauth_error("invalid_request", body.error)
        names = [name for name, _ in body.fields]
        problems = []
        missing = [name for name in TOKEN_FIELDS if name not in names]
        if missing:
            problems.append("missing field(s): " + ", ".join(missing))
        extra = sorted(set(names) - set(TOKEN_FIELDS))
        if extra:
            problems.append("unexpected field(s): " + ", ".join(extra))
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append("field(s) sent more than once: " + ", ".join(repeated))
        if problems:
            return _oauth_error("invalid_request", "; ".join(problems))
        form = dict(body.fields)
        if form["client_id"] != self.client_id or form["client_secret"] != self.client_secret:
            return _oauth_error("invalid_client")
        if form["grant_type"] != "password":
            return _oauth_error("invalid_request", f'grant_type must be "password", got {form["grant_type"]!r}')
        if form["scope"] != SCOPE:
            return _oauth_error("invalid_request", f'scope must be exactly "{SCOPE}", got {form["scope"]!r}')
        if form["username"] != self.username or form["password"] != self.password:
            return _oauth_error("invalid_grant")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
        return json_reply(200, {"access_token": token, "expires_in": int(self.token_ttl),
                                "token_type": "Bearer", "scope": SCOPE},
                          {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _upload_document(self, folder: str, *, request: _Request) -> Reply:
        fields = ("TypeScan", "FileSource", "DocRef", "SourceId", "WithoutWorkflow", "DocumentName")
        errors = self._form_errors(folder, request.body, fields, ("Document",))
        form = {name: value for name, value in request.body.fields if value}  # "" binds as null
        type_scan, file_source = form.get("TypeScan"), form.get("FileSource")
        if type_scan not in TYPE_SCANS:
            errors.append(f"TypeScan must be one of {', '.join(TYPE_SCANS)}, got {type_scan!r}")
        if file_source != "Api":
            errors.append(f'FileSource must be "Api", got {file_source!r}')
        if form.get("WithoutWorkflow", "false") not in ("true", "false"):
            errors.append(f'WithoutWorkflow must be "true" or "false", got {form["WithoutWorkflow"]!r}')
        document = _file_part(request, "Document", errors)
        if errors:
            return _message(400, "; ".join(errors))
        assert document is not None and type_scan is not None
        folder_id = int(folder)
        denied = self._folder_denied(folder_id)
        if denied:
            return denied
        created = self._create_document(
            folder_id, document, name=form.get("DocumentName") or document.filename,
            original_name=document.filename, type_scan=type_scan, source_id=form.get("SourceId"),
            doc_ref=form.get("DocRef"), beneficiary=None)
        return json_reply(200, created)

    def _upload_expense_bill(self, folder: str, *, request: _Request) -> Reply:
        fields = ("BeneficiaryFullName", "FileNameWithExtension", "DocumentReference")
        errors = self._form_errors(folder, request.body, fields, ("File",))
        form = {name: value for name, value in request.body.fields if value}
        beneficiary = (form.get("BeneficiaryFullName") or "").strip()
        file_name = (form.get("FileNameWithExtension") or "").strip()
        if not beneficiary:
            errors.append("BeneficiaryFullName is required")
        if not re.search(r"[^./\\]\.[A-Za-z0-9]{1,10}$", file_name):
            errors.append(f"FileNameWithExtension must be a file name with an extension, got {file_name!r}")
        bill = _file_part(request, "File", errors)
        if errors:
            return _message(400, "; ".join(errors))
        assert bill is not None
        folder_id = int(folder)
        denied = self._folder_denied(folder_id)
        if denied:
            return denied
        created = self._create_document(
            folder_id, bill, name=file_name, original_name=file_name, type_scan="Others",
            source_id=None, doc_ref=form.get("DocumentReference"), beneficiary=beneficiary)
        return json_reply(200, {"DocumentId": created["Id"]})

    def _list_documents(self, folder: str, *, request: _Request) -> Reply:
        """One page of the folder's documents, newest first (the statuses as they stand, no polling)."""
        folder_id = _positive_int(folder)
        page, size = (_positive_int((request.query.get(name) or ["1"])[0]) for name in ("pageNumber", "pageSize"))
        if folder_id is None or page is None or size is None or size > MAX_PAGE_SIZE:
            return _message(400, f"accountingFolderId, pageNumber and pageSize (1-{MAX_PAGE_SIZE}) must be "
                                 "positive integers")
        denied = self._folder_denied(folder_id)
        if denied:
            return denied
        with self._lock:
            newest_first = sorted((d for d in self._documents.values() if d.folder_id == folder_id),
                                  key=lambda d: d.id, reverse=True)
            payload = [self._document_json(d) for d in newest_first[(page - 1) * size: page * size]]
        return json_reply(200, payload)

    def _get_document(self, folder: str, doc_id: str, *, request: _Request) -> Reply:
        found = self._find(folder, doc_id)
        if isinstance(found, Reply):
            return found
        with self._lock:
            found.polls += 1
            if found.polls >= found.polls_per_step and found.step < len(found.flow) - 1:
                found.step, found.polls = found.step + 1, 0
                self._apply_status(found, found.flow[found.step], ())
            payload = self._document_json(found)
        return json_reply(200, [payload] if self.get_as_array else payload)

    def _public_url(self, folder: str, doc_id: str, *, request: _Request) -> Reply:
        found = self._find(folder, doc_id)
        if isinstance(found, Reply):
            return found
        token = secrets.token_urlsafe(18)
        signature = base64.b64encode(secrets.token_bytes(32)).decode("ascii")  # has + / =
        expires_at = time.time() + self.public_url_ttl
        with self._lock:
            self._links[token] = _PublicLink(found.id, signature, expires_at)
        expiry = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sas = urlencode({"sv": "2021-08-06", "se": expiry, "sr": "b", "sp": "r", "sig": signature},
                        quote_via=quote, safe="")
        return json_reply(200, f"{self.base_url}/public/{token}/{quote(found.original_name, safe='')}?{sas}")

    def _download(self, token: str, name: str, *, request: _Request) -> Reply:
        with self._lock:
            link = self._links.get(token)
            document = self._documents.get(link.doc_id) if link else None
        if link is None or document is None or unquote(name) != document.original_name:
            return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        if self.redirect_public_to:
            return Reply(302, headers={"Location": self.redirect_public_to})
        auth_failed = ("Server failed to authenticate the request. Make sure the value of "
                       "Authorization header is formed correctly including the signature.")
        if request.query.get("sig") != [link.signature]:
            return _storage_error(403, "AuthenticationFailed", auth_failed,
                                  "Signature did not match. String to sign used was r")
        if time.time() >= link.expires_at:
            expired = email.utils.formatdate(link.expires_at, usegmt=True)
            return _storage_error(403, "AuthenticationFailed", auth_failed,
                                  f"Signed expiry time [{expired}] has expired: must be after the "
                                  f"current time [{email.utils.formatdate(usegmt=True)}]")
        with self._lock:
            corrupt = self.corrupt_next_downloads > 0
            if corrupt:
                self.corrupt_next_downloads -= 1
        return Reply(200, content_type="application/octet-stream",
                     headers={"x-ms-blob-type": "BlockBlob"},
                     file=FileBody(document.path, document.size,
                                   document.size // 2 if corrupt else None))

    # ----------------------------------------------------------------- helpers

    def _form_errors(self, folder: str, body: _Body, fields: Collection[str],
                     files: Collection[str]) -> list[str]:
        """Problems with the path's folder id and the multipart form's shape."""
        errors = [] if _positive_int(folder) else [f"accountingFolderId must be a positive integer, got {folder!r}"]
        if body.media_type != "multipart/form-data":
            return [*errors, f"Content-Type must be multipart/form-data, got {body.media_type!r}"]
        if body.error:
            return [*errors, body.error]
        names = [name for name, _ in body.fields] + [part.name for part in body.files]
        for name in sorted(set(names)):
            if name not in fields and name not in files:
                errors.append(f"unknown form field {name!r}")
            elif names.count(name) > 1:
                errors.append(f"form field {name!r} sent more than once")
        errors += [f"{part.name} must be a plain form field, not a file part"
                   for part in body.files if part.name in fields]
        errors += [f"{name} must be a file part (Content-Disposition with a filename)"
                   for name, _ in body.fields if name in files]
        return errors

    def _folder_denied(self, folder_id: int) -> Reply | None:
        if folder_id in self.forbidden_folders:
            return _message(403, _FORBIDDEN)
        if folder_id in self.unknown_folders or (self.folders is not None and folder_id not in self.folders):
            return _message(404, f"Accounting folder {folder_id} not found")
        return None

    def _find(self, folder: str, doc_id: str) -> _Document | Reply:
        folder_id, document_id = _positive_int(folder), _positive_int(doc_id)
        if folder_id is None or document_id is None:
            return _message(400, "accountingFolderId and the document id must be positive integers")
        denied = self._folder_denied(folder_id)
        if denied:
            return denied
        with self._lock:
            document = self._documents.get(document_id)
        if document is None or document.folder_id != folder_id:
            return _message(404, f"Document {document_id} not found in accounting folder {folder_id}")
        return document

    def _document(self, doc_id: int) -> _Document:
        try:
            return self._documents[doc_id]
        except KeyError:
            raise KeyError(f"no document {doc_id}") from None

    def _create_document(self, folder_id: int, upload: _UploadedFile, *, name: str,
                         original_name: str, type_scan: str, source_id: str | None,
                         doc_ref: str | None, beneficiary: str | None) -> dict[str, Any]:
        with self._lock:
            original = next((doc for doc in self._documents.values()
                             if doc.folder_id == folder_id and doc.checksum == upload.sha1
                             and doc.deleted_at is None), None)
            if original is not None:
                flow: tuple[str, ...] = ("Duplicate",)
            else:
                chosen = self.flow_for_name.get(original_name) or self.flow_for_name.get(name)
                flow = _check_flow(chosen) if chosen else self.status_flow
            document = _Document(
                id=next(self._ids), folder_id=folder_id, name=name, original_name=original_name,
                type=type_scan, size=upload.size, checksum=upload.sha1, path=upload.path,
                created_at=_now(), source_id=source_id, doc_ref=doc_ref, beneficiary=beneficiary,
                origin_id=original.id if original else None, flow=flow,
                polls_per_step=self.polls_per_step)
            extraction = self.extraction_for_name.get(original_name) or self.extraction_for_name.get(name)
            document.extracted.update(extraction or {})
            self._apply_status(document, flow[0], ())
            upload.kept = True
            self._documents[document.id] = document
            return self._document_json(document)

    @staticmethod
    def _apply_status(document: _Document, status: str, reasons: tuple[str, ...]) -> None:
        moment = _now()
        document.status, document.reasons, document.status_updated_at = status, reasons, moment
        if status == "Deleted":
            document.deleted_at = document.deleted_at or moment
        else:
            document.deleted_at = None

    def _document_json(self, doc: _Document) -> dict[str, Any]:
        """The document as Inqom serialises it: null members are left out."""
        reasons: str | list[str] = (list(doc.reasons) if self.status_reasons_as_list
                                    else ", ".join(doc.reasons) or "None")
        payload: dict[str, Any] = {
            "Id": doc.id,
            "AccountingFolderId": doc.folder_id,
            "Name": doc.name,
            "Type": doc.type,
            "Size": math.ceil(doc.size / 1024),
            ("OrigineId" if self.use_origine_typo else "OriginId"): doc.origin_id,
            "DeletedAt": _iso(doc.deleted_at) if doc.deleted_at else None,
            "CreatedAt": _iso(doc.created_at),
            "Source": "Api",
            "SourceId": doc.source_id,
            "ClientSource": "Web",
            "DocRef": doc.doc_ref,
            "Checksum": doc.checksum,
            "Status": doc.status,
            "StatusReason": ", ".join(doc.reasons) or None,
            "StatusReasons": reasons,
            "StatusUpdatedAt": _iso(doc.status_updated_at) if doc.status_updated_at else None,
            "FileUrl": f"https://storage.invalid/enterprises/{doc.id}/{quote(doc.original_name)}",
            "OwnerId": _OWNER_ID,
            "OriginalName": doc.original_name,
            "ContentSource": "DocData",
            "UserDefinedThirdPartyName": doc.beneficiary,
        }
        payload.update(doc.extracted)
        return {key: value for key, value in payload.items() if value is not None}


# ------------------------------------------------------------------------ command line


def _from_args(args: argparse.Namespace) -> InqomEmulator:
    """The emulator the command line asks for."""
    return InqomEmulator(
        username=args.username, password=args.password, client_id=args.client_id,
        client_secret=args.client_secret, token_ttl=args.token_ttl,
        status_flow=args.status_flow.split(","), polls_per_step=args.polls_per_step,
        public_url_ttl=args.public_url_ttl, rate_limit=args.rate_limit or None, port=args.port)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; print the URLs as one JSON line first."""
    parser = cli_parser("tests.emulators.inqom", __doc__)
    parser.add_argument("--username", default="api@example.test")
    parser.add_argument("--password", default="pw-secret")
    parser.add_argument("--client-id", default="client-id")
    parser.add_argument("--client-secret", default="client-secret")
    parser.add_argument("--token-ttl", type=float, default=3600)
    parser.add_argument("--status-flow", default="Received,Processing,Done",
                        help="comma-separated statuses a new document walks through")
    parser.add_argument("--polls-per-step", type=int, default=1)
    parser.add_argument("--public-url-ttl", type=float, default=300.0)
    parser.add_argument("--rate-limit", type=float, default=0.0,
                        help="API requests/s per credential; above it 429 + Retry-After (0 = no limit)")
    run_cli(parser, argv, _from_args,
            lambda emulator: {"base_url": emulator.base_url, "token_url": emulator.token_url})


if __name__ == "__main__":
    main()
