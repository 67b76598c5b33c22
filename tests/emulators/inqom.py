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

Uploads are parsed as a stream (``inqom_http``), file parts going to temporary files. The
documents live in ``inqom_documents``, the routes' answers in ``inqom_api``, the token endpoint
in ``inqom_identity``. Every request is recorded, and faults can be scripted (``inject``) or
drawn at random (``error_rate``).

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
import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from tests.emulators._server import (
    EmulatorHandler,
    EmulatorServer,
    Fault,
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
from tests.emulators.inqom_api import InqomApi
from tests.emulators.inqom_documents import STATUSES, InqomDocuments, check_flow
from tests.emulators.inqom_http import (
    FORBIDDEN,
    BadFraming,
    Body,
    BodyReader,
    Disconnected,
    Request,
    message,
    read_body,
    recorded,
    unlink,
)
from tests.emulators.inqom_identity import TOKEN_PATH, InqomIdentity

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

#: Legal-but-odd 2xx answers: the request is processed, then answered 200 with this body.
ODD_ANSWERS = {
    "ok_empty_array": lambda created: [],
    "ok_two_elements": lambda created: [created, dict(created)],
    "ok_no_id": lambda created: {k: v for k, v in created.items() if k not in ("Id", "DocumentId")},
}
#: The kinds ``inject`` takes: "drop_after_process" creates the document, then drops; the
#: ``ODD_ANSWERS`` kinds create it, then answer 200 with an empty array, two elements, or no id.
FAULT_KINDS = frozenset(
    {"500", "502", "503", "504", "429", "400", "403", "drop", "slow", "drop_after_process", *ODD_ANSWERS}
)


class _Handler(EmulatorHandler):
    server_version = "Kestrel"


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
    """

    _name = "inqom"
    _handler_class = _Handler
    _fault_kinds = FAULT_KINDS
    _fault_texts = {
        "500": "An error has occurred.",
        "429": "Rate limit is exceeded. Try again later.",
        "400": "The request is invalid.",
        "403": FORBIDDEN,
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
        self.status_flow = check_flow(status_flow)
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

        self._identity = InqomIdentity(self)
        self._store = InqomDocuments(self)
        self._tmpdir: str | None = None
        self._routes = (("POST", re.compile(re.escape(TOKEN_PATH)), self._identity.token),
                        *InqomApi(self, self._store).routes())

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
        self._identity.expire()

    def expire_public_urls(self) -> None:
        """Make every public download URL handed out so far expired (403)."""
        self._store.expire_links()

    def set_status(self, doc_id: int, status: str, reasons: Sequence[str] | None = None, *,
                   unknown: bool = False) -> None:
        """Pin a document's status (it no longer progresses) and its StatusReasons.

        ``unknown=True`` lets a test answer a status outside ``STATUSES`` (one Inqom may add one day)."""
        self._store.set_status(doc_id, status, reasons, unknown=unknown)

    def set_extracted(self, doc_id: int, **fields: Any) -> None:
        """Set what Inqom extracted from a document (``EXTRACTED_FIELDS`` names; ``None`` removes one)."""
        self._store.set_extracted(doc_id, fields)

    def set_flow(self, doc_id: int, flow: Sequence[str], polls_per_step: int | None = None) -> None:
        """Restart a document at ``flow[0]``; GETs then walk it along ``flow``."""
        self._store.set_flow(doc_id, flow, polls_per_step)

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
        return self._store.snapshot()

    def document_count(self) -> int:
        return self._store.count()

    # ------------------------------------------------------------------ serving

    def _handle(self, handler: EmulatorHandler, method: str, path: str,
                query: dict[str, list[str]], headers: Headers, fault: Fault | None) -> Reply | None:
        fault_kind = fault.kind if fault else None
        assert self._tmpdir is not None
        try:
            reader = BodyReader(handler.rfile, headers)
            body = read_body(reader, headers.get("Content-Type"), self._tmpdir, self.max_memory_part)
        except Disconnected:
            self._record(recorded(Request(method, path, query, headers, Body(None)), None, fault_kind))
            return None
        except BadFraming as exc:
            rejection = message(400, str(exc))
            rejection.close = True
            self._record(recorded(Request(method, path, query, headers, Body(None)), 400, fault_kind))
            return rejection
        request = Request(method, path, query, headers, body)
        try:
            reply = self._answer(fault, lambda: self._dispatch(request))
            self._record(recorded(request, reply.status if reply else None, fault_kind))
        finally:  # before answering: a client that got its answer finds no stray file
            for uploaded in body.files:
                if not uploaded.kept:
                    unlink(uploaded.path)
        return reply

    def _error(self, status: int, text: str) -> Reply:
        return message(status, text)

    def _answer(self, fault: Fault | None, dispatch: Callable[[], Reply]) -> Reply | None:
        odd = ODD_ANSWERS.get(fault.kind) if fault else None
        if odd is None:
            return super()._answer(fault, dispatch)
        reply = dispatch()
        if reply is None or reply.status != 200:
            return reply
        return json_reply(200, odd(json.loads(reply.body)))

    def _random_fault_applies(self, path: str) -> bool:
        return super()._random_fault_applies(path) or self.random_faults_on_all

    def _dispatch(self, request: Request) -> Reply:
        routed = self._route(request.method, request.path)
        if isinstance(routed, Reply):
            return routed
        if request.path.startswith("/api/") and not self._identity.authorized(request.headers):
            return message(403, FORBIDDEN)
        window = self._rate_window
        if window is not None and request.path.startswith("/api/"):
            wait = window.admit(f"{self.client_id}|{self.username}")  # tokens exist for this one credential
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                with self._lock:
                    self.rate_limited += 1
                reply = message(429, f"Rate limit is exceeded. Try again in {seconds} seconds.")
                reply.headers["Retry-After"] = str(seconds)
                return reply
        endpoint, args = routed
        return self._guarded(request.method, request.path, lambda: endpoint(*args, request=request))


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
