"""The scaffolding the loopback HTTP emulators share (``inqom``, ``enfact``).

``EmulatorServer`` serves a subclass's routes from a daemon thread on 127.0.0.1: start/stop
(closing open connections), routing with 404/405 answers, and endpoint bugs kept in
``internal_errors`` (answered 500). Its base ``EmulatorControls`` holds scripted and random
faults and the recorded requests. A subclass supplies its routes, how it reads a request
(``_handle``), its error bodies and fault texts.
``cli_parser`` and ``run_cli`` are the stand-alone command line both emulators offer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import re
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

JSON_TYPE = "application/json; charset=utf-8"
CHUNK = 64 * 1024  # read/write block size


# ------------------------------------------------------------------ what is recorded


class Headers(dict[str, str]):
    """Request headers; keys are stored lower-case and every lookup ignores case.

    A header sent several times is kept once, its values joined with ", ".
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        for name, value in items:
            self[name] = f"{self[name]}, {value}" if name in self else value

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class RecordedFile:
    """A file part as received: ``data`` holds the bytes when size <= max_memory_part."""

    filename: str
    content_type: str | None
    size: int
    sha1_hex_upper: str
    data: bytes | None


@dataclass(frozen=True)
class TimedCall:
    """When a request was answered (``time.monotonic()``), and how (``status`` None: no answer)."""

    at: float
    method: str
    path: str
    status: int | None
    fault: str | None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it, and what it did about it.

    ``status`` is the status code answered (None when the connection was dropped or the
    client went away); ``fault`` is the injected fault's kind, or None.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    form: dict[str, str]
    files: dict[str, RecordedFile]
    status: int | None
    fault: str | None


# ------------------------------------------------------------------ replies and faults


@dataclass(frozen=True)
class FileBody:
    """A reply body streamed from a file."""

    path: str
    size: int
    corrupt_at: int | None  # offset of the byte to flip, if any


@dataclass
class Reply:
    """An answer; ``close`` closes the connection after it."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    file: FileBody | None = None
    close: bool = False


@dataclass
class Fault:
    """A fault waiting for its next ``remaining`` matching requests."""

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


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Reply(status, body, JSON_TYPE, dict(headers or {}))


Endpoint = Callable[..., Reply]
Route = tuple[str, re.Pattern[str], Endpoint]


HANG_SECONDS = 24 * 3600.0


class SlidingWindowLimit:
    """At most ``limit`` requests per key in any ``window`` seconds (a sliding log of admitted requests).

    ``admit(key)`` is None when the request is admitted (and counted), else the seconds until the
    key's oldest admitted request leaves the window. Refused requests do not count.
    """

    def __init__(self, limit: float, window: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if limit <= 0 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = window
        self._allowed = max(1, int(limit * window))
        self._clock = clock
        self._lock = threading.Lock()
        self._logs: dict[str, deque[float]] = {}

    def admit(self, key: str) -> float | None:
        with self._lock:
            now = self._clock()
            log = self._logs.setdefault(key, deque())
            while log and log[0] <= now - self.window:
                log.popleft()
            if len(log) < self._allowed:
                log.append(now)
                return None
            return log[0] + self.window - now

# ---------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer,
                 handler_class: type[EmulatorHandler]) -> None:
        self.emulator = emulator
        super().__init__(address, handler_class)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.emulator._log.debug("connection error from %s", client_address, exc_info=True)


class EmulatorHandler(BaseHTTPRequestHandler):
    """Hands every request to the emulator; subclasses set ``server_version``."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY the body would wait ~40 ms for
    # the client's delayed ACK on every response.
    disable_nagle_algorithm = True
    server: _HTTPServer

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
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        self.server.emulator._log.info("%s - %s", self.address_string(), format % args)

    def send_reply(self, reply: Reply) -> None:
        """Write ``reply``, always with a Content-Length, streaming file bodies."""
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(reply.file.size if reply.file else len(reply.body)))
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if reply.file is None:
            self.wfile.write(reply.body)
            return
        corrupt_at = reply.file.corrupt_at
        with open(reply.file.path, "rb") as source:
            offset = 0
            while chunk := source.read(CHUNK):
                if corrupt_at is not None and offset <= corrupt_at < offset + len(chunk):
                    flipped = bytearray(chunk)
                    flipped[corrupt_at - offset] ^= 0xFF
                    chunk = bytes(flipped)
                self.wfile.write(chunk)
                offset += len(chunk)


# ------------------------------------------------------------ faults and records


class EmulatorControls:
    """What a test scripts and reads on an emulator: faults (queued or drawn at random) and the
    requests recorded.

    Settings that tests may change at any time (plain attributes): ``error_rate``
    (probability of a random fault on each request ``_random_fault_applies`` to),
    ``error_kinds`` (drawn uniformly; default "500", "429"), ``seed``, ``latency`` (seconds
    every answer waits, like a distant server), ``hang_rate`` (probability that such a request
    is read and then never answered: the socket stays open until the emulator stops).
    """

    _fault_kinds: ClassVar[frozenset[str]]
    _fault_texts: ClassVar[Mapping[str, str]]  # error text of each status fault but 502/503
    _api_prefix: ClassVar[str]  # random faults hit paths starting with this

    def __init__(self) -> None:
        self.error_rate = 0.0
        self.latency = 0.0
        self.hang_rate = 0.0
        self._error_kinds: tuple[str, ...] = ("500", "429")
        self._lock = threading.RLock()
        self._stopping = threading.Event()  # set while stopping: delayed answers give up waiting
        self._seed = 0
        self._rng = random.Random(self._seed)
        self._requests: list[RecordedRequest] = []
        self._timeline: list[TimedCall] = []
        self._faults: list[Fault] = []

    # ------------------------------------------------------------- test controls

    def inject(self, kind: str, *, times: int = 1, path_contains: str | None = None,
               method: str | None = None, retry_after: float | str | None = None,
               delay: float = 0.0) -> None:
        """Queue a fault for the next ``times`` matching requests (queued faults go first).

        Kinds (the emulator module's ``FAULT_KINDS``): an HTTP status such as "500" or "503"
        (that answer, with Retry-After when ``retry_after`` is given), "drop" (read the
        request, close without answer), "slow" (answer normally after ``delay`` s),
        "drop_after_process" (do the work, then close without answer). ``delay`` applies
        to every kind.
        """
        if kind not in self._fault_kinds:
            raise ValueError(f"unknown fault kind {kind!r}; valid: {sorted(self._fault_kinds)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(Fault(kind, times, path_contains,
                                      method.upper() if method else None,
                                      None if retry_after is None else str(retry_after), delay))

    @property
    def error_kinds(self) -> tuple[str, ...]:
        """Fault kinds drawn (uniformly) for random faults."""
        return self._error_kinds

    @error_kinds.setter
    def error_kinds(self, kinds: Sequence[str]) -> None:
        unknown = set(kinds) - self._fault_kinds
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
        """A snapshot of every request recorded so far, oldest first."""
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
            self._timeline.clear()

    def timeline(self, path_contains: str | None = None) -> list[TimedCall]:
        """When each recorded request was answered (oldest first), for rates over time."""
        with self._lock:
            return [c for c in self._timeline if path_contains is None or path_contains in c.path]

    def counters(self, path_contains: str | None = None) -> dict[str, int]:
        """Recorded requests: ``answered`` (any status but 429), ``refused`` (429), ``unanswered``."""
        counts = {"answered": 0, "refused": 0, "unanswered": 0}
        for call in self.timeline(path_contains):
            kind = "unanswered" if call.status is None else "refused" if call.status == 429 else "answered"
            counts[kind] += 1
        return counts

    # ------------------------------------------------------------------ answering

    def _error(self, status: int, text: str) -> Reply:
        """The API's error answer carrying ``text``."""
        raise NotImplementedError

    def _random_fault_applies(self, path: str) -> bool:
        return path.startswith(self._api_prefix)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
            if self.hang_rate > 0 and self._random_fault_applies(path) and self._rng.random() < self.hang_rate:
                return Fault("drop", 1, None, None, None, HANG_SECONDS)  # waits until stop(), then closes
            if self.error_rate > 0 and self._random_fault_applies(path) and self._rng.random() < self.error_rate:
                return Fault(self._rng.choice(self._error_kinds), 1, None, None, None, 0.0)
        return None

    def _answer(self, fault: Fault | None, dispatch: Callable[[], Reply]) -> Reply | None:
        """``dispatch()``'s reply, or what ``fault`` makes of it (after its delay); None closes."""
        if fault is not None and fault.delay > 0:
            self._stopping.wait(fault.delay)
        if self.latency > 0:
            self._stopping.wait(self.latency)
        kind = fault.kind if fault else None
        if kind == "drop":
            return None
        if fault is not None and kind not in ("slow", "drop_after_process"):
            return self._fault_reply(fault)
        reply = dispatch()
        return None if kind == "drop_after_process" else reply

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.kind in ("502", "503"):
            title = "502 Bad Gateway" if fault.kind == "502" else "503 Service Unavailable"
            html = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
            reply = Reply(int(fault.kind), html.encode(), "text/html")
        else:
            reply = self._error(int(fault.kind), self._fault_texts[fault.kind])
        if fault.retry_after is not None:
            reply.headers["Retry-After"] = fault.retry_after
        return reply

    def _record(self, recorded: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(recorded)
            self._timeline.append(TimedCall(time.monotonic(), recorded.method, recorded.path, recorded.status,
                                            recorded.fault))


# ---------------------------------------------------------------------- the server


class EmulatorServer(EmulatorControls):
    """An HTTP API emulator on a loopback port, serving the subclass's ``_routes``, with the
    faults and records of ``EmulatorControls``."""

    host = "127.0.0.1"
    _name: ClassVar[str]  # in thread names and log lines
    _handler_class: ClassVar[type[EmulatorHandler]]
    _no_route: ClassVar[str]  # 404 text, formatted with path=
    _not_allowed: ClassVar[str]  # 405 text, formatted with method= and path=
    _routes: tuple[Route, ...]

    def __init__(self, *, port: int = 0) -> None:
        super().__init__()
        self.internal_errors: list[str] = []  # tracebacks of emulator bugs (answered 500)
        self._log = logging.getLogger(type(self).__module__)
        self._requested_port = port
        self._idle = threading.Condition(self._lock)
        self._connections: set[socket.socket] = set()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind 127.0.0.1 (port 0 = a free port) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        self._prepare()
        try:
            self._server = _HTTPServer((self.host, self._requested_port), self, self._handler_class)
        except OSError:
            self._clean_up()
            raise
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"{self._name}-emulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and release what ``start`` prepared."""
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
        self._clean_up()

    def __enter__(self) -> Self:
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

    def _prepare(self) -> None:
        """Called by ``start`` before binding."""

    def _clean_up(self) -> None:
        """Called by ``stop`` once serving has ended, and by ``start`` when binding fails."""

    # ------------------------------------------------------------------ serving

    def _connection_opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._idle:
            self._connections.discard(connection)
            self._idle.notify_all()

    def _serve(self, handler: EmulatorHandler) -> None:
        target = urlsplit(handler.path)
        query = parse_qs(target.query, keep_blank_values=True)
        headers = Headers(handler.headers.items())
        fault = self._take_fault(handler.command, target.path)
        reply = self._handle(handler, handler.command, target.path, query, headers, fault)
        if reply is None:
            handler.close_connection = True
        else:
            handler.send_reply(reply)

    def _handle(self, handler: EmulatorHandler, method: str, path: str,
                query: dict[str, list[str]], headers: Headers, fault: Fault | None) -> Reply | None:
        """Read the request's body, answer it (``_answer``) and record it; None closes."""
        raise NotImplementedError

    def _route(self, method: str, path: str) -> tuple[Endpoint, tuple[str, ...]] | Reply:
        """The endpoint for ``method path`` and its path arguments, or the 404/405 answer."""
        matches = [(route_method, endpoint, match) for route_method, pattern, endpoint in self._routes
                   if (match := pattern.fullmatch(path))]
        if not matches:
            return self._error(404, self._no_route.format(path=path))
        chosen = next(((endpoint, match.groups()) for route_method, endpoint, match in matches
                       if route_method == method), None)
        if chosen is None:
            reply = self._error(405, self._not_allowed.format(method=method, path=path))
            reply.headers["Allow"] = ", ".join(sorted({m for m, _, _ in matches}))
            return reply
        return chosen

    def _guarded(self, method: str, path: str, call: Callable[[], Reply]) -> Reply:
        """``call()``; an exception is an emulator bug: answered 500, kept in ``internal_errors``."""
        try:
            return call()
        except Exception:
            self._log.exception("%s emulator error on %s %s", self._name, method, path)
            with self._lock:
                self.internal_errors.append(traceback.format_exc())
            return self._error(500, self._fault_texts["500"])


# ------------------------------------------------------------------------ command line


_E = TypeVar("_E", bound=EmulatorServer)


def cli_parser(module: str, description: str | None) -> argparse.ArgumentParser:
    """The ``python -m module`` parser, with ``--port``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    return parser


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            build: Callable[[argparse.Namespace], _E], describe: Callable[[_E], dict[str, Any]]) -> None:
    """Build the emulator from ``argv``, print ``describe(emulator)`` as one JSON line once it
    serves, then serve until SIGINT/SIGTERM."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator = build(args)
    with emulator:
        print(json.dumps(describe(emulator)), flush=True)
        stop.wait()
