"""Reading an Inqom request: its body framed by Content-Length or chunked, and the form in it;
``message`` is the API's error answer.

Multipart bodies are parsed as they stream in, file parts going to temporary files, so a large
upload costs no memory::

    body = read_body(BodyReader(handler.rfile, headers), headers.get("Content-Type"), tmpdir, 1 << 20)
    errors = form_errors(folder, body, ("TypeScan", "FileSource"), ("Document",))
"""

from __future__ import annotations

import contextlib
import email.message
import email.parser
import email.utils
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from tests.emulators._server import CHUNK, Headers, RecordedFile, RecordedRequest, Reply, json_reply

FORBIDDEN = "Authorization has been denied for this request."
_MAX_FIELD = 64 * 1024  # largest accepted non-file multipart value
_MAX_PART_HEADERS = 16 * 1024
_MAX_URLENCODED = 64 * 1024


class _BadRequest(Exception):
    """The request body is malformed (answered 400 with this message)."""


class BadFraming(Exception):
    """The body's framing is unusable: answered 400, then the connection is closed."""


class Disconnected(Exception):
    """The client went away before sending its whole request."""


@dataclass
class UploadedFile:
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
class Body:
    media_type: str | None
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)
    error: str | None = None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    body: Body


def message(status: int, text: str) -> Reply:
    """Inqom's error answer: ``{"Message": text}``."""
    return json_reply(status, {"Message": text})


def positive_int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) and int(text) > 0 else None


# ------------------------------------------------------------------------ body parsing


class BodyReader:
    """Reads a request body incrementally, framed by Content-Length or chunked encoding."""

    def __init__(self, rfile: io.BufferedIOBase, headers: Headers) -> None:
        self._rfile = rfile
        self._remaining = 0  # bytes left in the body (Content-Length) or in the chunk
        transfer_encoding = headers.get("Transfer-Encoding")
        length = headers.get("Content-Length")
        if transfer_encoding is not None:
            if transfer_encoding.strip().lower() != "chunked":
                raise BadFraming(f"unsupported Transfer-Encoding {transfer_encoding!r}")
            self._chunked = True
            self._done = False
        else:
            if length is not None and not re.fullmatch(r"[0-9]{1,18}", length.strip()):
                raise BadFraming(f"invalid Content-Length {length!r}")
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
                raise Disconnected()
            self._remaining -= len(data)
            if self._remaining == 0:
                if self._chunked:
                    if self._rfile.read(2) != b"\r\n":
                        raise BadFraming("chunk data not followed by CRLF")
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
            raise Disconnected()
        size = line.rstrip(b"\r\n").split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size):
            raise BadFraming(f"malformed chunk size line {line[:40]!r}")
        self._remaining = int(size, 16)
        if self._remaining == 0:
            while (trailer := self._rfile.readline(8192)) not in (b"\r\n", b"\n"):
                if not trailer:
                    raise Disconnected()
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

    def finish(self) -> UploadedFile:
        self._file.close()
        data = bytes(self._memory) if self._memory is not None else None
        return UploadedFile(self.name, self.filename, self.content_type, self._size,
                             self._sha1.hexdigest().upper(), data, self.path)

    def discard(self) -> None:
        self._file.close()
        unlink(self.path)


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


def unlink(path: str) -> None:
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


def _parse_multipart(reader: BodyReader, boundary: str, tmpdir: str,
                     max_memory: int) -> tuple[list[tuple[str, str]], list[UploadedFile]]:
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
    files: list[UploadedFile] = []
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
            unlink(uploaded.path)
        if isinstance(exc, _BadRequest):
            reader.drain()
        raise
    return fields, files


def read_body(reader: BodyReader, content_type: str | None, tmpdir: str,
               max_memory: int) -> Body:
    """Read the whole body; the form is parsed for the two form media types."""
    message = email.message.Message()
    if content_type:
        message["Content-Type"] = content_type
    media_type = message.get_content_type() if content_type else None
    body = Body(media_type)
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


def recorded(request: Request, status: int | None, fault: str | None) -> RecordedRequest:
    """``request`` as recorded: the first value of each form field and file part."""
    files: dict[str, RecordedFile] = {}
    for uploaded in request.body.files:
        files.setdefault(uploaded.name, uploaded.record())
    form: dict[str, str] = {}
    for name, value in request.body.fields:
        form.setdefault(name, value)
    return RecordedRequest(request.method, request.path, request.query, request.headers,
                           form, files, status, fault)



def file_part(request: Request, name: str, errors: list[str]) -> UploadedFile | None:
    """The required, non-empty file part ``name``, or None with the reason added to ``errors``."""
    part = next((f for f in request.body.files if f.name == name), None)
    if part is None:
        errors.append(f"{name} (a file part) is required")
    elif part.size == 0:
        errors.append(f"{name} is empty")
    return part


def form_errors(folder: str, body: Body, fields: Collection[str],
                files: Collection[str]) -> list[str]:
    """Problems with the path's folder id and the multipart form's shape."""
    errors = [] if positive_int(folder) else [f"accountingFolderId must be a positive integer, got {folder!r}"]
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
