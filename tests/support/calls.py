"""How the simulation names an outgoing HTTP request: a ``Call`` (service, operation, target, app step).

    classifier = Classifier({10000: "blob", 8081: "inqom"}, {"inbox-abc": "inbox"})
    call = classifier.call(request, serial=3)          # e.g. Call("blob", "put", "inbox:11287/a.pdf", "upload…")
    call.name                                          # "upload.upload_inbox_blob: blob put inbox:11287/a.pdf"
    classifier.store_written(request)                  # "blob", "queue", "rows", or None for a read
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from shared.ledger.rows import PENDING_PARTITION, SYSTEM_PARTITIONS

_SHARED = Path(__file__).resolve().parents[2] / "shared"
#: Modules whose frames are plumbing, not the step a crash point is named after.
_PLUMBING = {"http", "storage", "client", "auth", "secrets", "observability"}  # module names (inqom/enfact client)
_ROW_KEYS = re.compile(r"PartitionKey='((?:[^']|'')*)',\s*RowKey='((?:[^']|'')*)'")

VersionKey = tuple[str, str]  # (blob name, ETag without quotes)


@dataclass(frozen=True)
class Call:
    service: str  # blob, table, queue, inqom, enfact
    op: str
    target: str
    caller: str
    chain: str = field(default="", compare=False)  # every app step on the stack, outermost first
    process: int = field(default=0, compare=False)  # ``Process.serial``; 0 outside any invocation
    version: VersionKey | None = field(default=None, compare=False)  # the blob version being uploaded
    keys: tuple[str, str] | None = field(default=None, compare=False)  # a table entity's (partition, row key)

    @property
    def crashable(self) -> bool:
        if self.service in ("inqom", "enfact"):
            return True
        if self.op.startswith("read") or self.op in ("list", "receive"):
            return False
        # The sweep's cursor and the rate budget's row: losing a write costs nothing, and how many of
        # them a run makes depends on timing, which would make crash points shift between runs.
        return not self.target.startswith(("sweep", "budget"))

    @property
    def mutates(self) -> bool:
        """Whether the call may change stored state that matters: anything but a storage read is assumed to,
        except a write of the rate budget's row (plumbing, as for crash points: how many a run makes
        depends on timing, and what it holds only paces calls)."""
        if self.service in ("blob", "table"):
            return not (self.op.startswith("read") or self.op == "list" or self.target.startswith("budget"))
        return True

    @property
    def name(self) -> str:
        return f"{self.caller}: {self.service} {self.op} {self.target}".strip()


class Classifier:
    """Names requests by the port they go to (``ports``: port -> service) and the storage name (``roles``)."""

    def __init__(self, ports: dict[int, str], roles: dict[str, str]) -> None:
        self.ports = ports
        self.roles = roles  # container / table / queue name -> role

    def call(self, request: requests.PreparedRequest, serial: int = 0) -> Call:
        """The request as a ``Call``, made by process ``serial`` (0: outside any invocation)."""
        url = urlsplit(request.url)
        service = self.ports.get(url.port or 0, "other")
        path = unquote(url.path)
        query = parse_qs(url.query)
        method = request.method
        caller, chain, version = _stack()

        def call(op: str, target: str, keys: tuple[str, str] | None = None) -> Call:
            return Call(service, op, target, caller, chain, serial, version, keys)

        if service == "blob":
            parts = path.split("/", 3)  # '', account, container, blob
            container = parts[2] if len(parts) > 2 else ""
            blob = parts[3] if len(parts) > 3 else ""
            role = self.roles.get(container, container)
            comp = (query.get("comp") or [""])[0]
            if method == "PUT":
                op = ("copy" if request.headers.get("x-ms-copy-source") else
                      {"block": "stage-block", "blocklist": "commit"}.get(comp, "put" if not comp else f"set-{comp}"))
            elif method == "DELETE":
                op = "delete"
            else:
                op = "list" if not blob else f"read-{comp or method.lower()}"
            return call(op, f"{role}:{blob}" if blob else role)
        if service == "table":
            table, _, keys = path.split("/", 2)[-1].partition("(")
            matched = _ROW_KEYS.search(keys)
            entity = (matched[1].replace("''", "'"), matched[2].replace("''", "'")) if matched else None
            partition = keys.split("'")[1] if "'" in keys else ""
            kind = ("index" if partition == PENDING_PARTITION else partition if partition in SYSTEM_PARTITIONS
                    else "row")
            if method == "GET":
                return call("read", kind if partition else "query", entity)
            op = {"POST": "insert", "PUT": "replace", "MERGE": "merge", "PATCH": "merge", "DELETE": "delete"}[method]
            if method == "POST":
                kind = _posted_partition(request)
            return call(op, kind, entity)
        if service == "queue":
            name = path.split("/")[2] if path.count("/") >= 2 else ""
            op = {"POST": "send", "GET": "receive", "DELETE": "delete", "PUT": "update"}.get(method, method)
            return call(op, self.roles.get(name, name))
        if service == "inqom":
            if "connect/token" in path:
                op = "token"
            elif path.endswith("/public-url"):
                op = "public-url"
            elif path.startswith("/public/"):
                op = "download"
            elif method == "POST":
                op = "upload-expense" if "expense-bills" in path else "upload"
            elif path.rstrip("/").endswith("/Documents"):
                op = "list-documents"
            else:
                op = "get-document"
            return call(op, "")
        if service == "enfact":
            op = "list" if path.endswith("invoices.json") else ("pdf" if path.endswith(".pdf") else "invoice")
            return call(op, "")
        return call(method, url.netloc)

    def store_written(self, request: requests.PreparedRequest) -> str | None:
        """"blob", "queue" or "rows" when the request may change blobs, messages, or document rows and
        their index entries (a receive, a GET, only hides messages: the harness alone receives)."""
        if request.method in ("GET", "HEAD"):
            return None
        url = urlsplit(request.url)
        service = self.ports.get(url.port or 0)
        if service in ("blob", "queue"):
            return service
        if service != "table":
            return None
        keys = unquote(url.path).partition("(")[2]
        partition = keys.split("'")[1] if "'" in keys else ""
        if request.method == "POST" and not partition:
            partition = _posted_partition(request)
        plumbing = set(SYSTEM_PARTITIONS) - {PENDING_PARTITION}  # the budget, the sweep cursor, claims on pushes
        return None if partition in plumbing else "rows"


def _posted_partition(request: requests.PreparedRequest) -> str:
    """Where a POSTed entity goes: "index", a system partition, or "row"."""
    try:
        partition = json.loads(request.body or b"{}").get("PartitionKey", "")
    except (ValueError, TypeError, AttributeError):
        return "row"
    if partition == PENDING_PARTITION:
        return "index"
    return partition if partition in SYSTEM_PARTITIONS else "row"


_MODULES: dict[str, str | None] = {}


def _app_module(filename: str) -> str | None:
    """The ``shared`` module a code file is (its stem), None for anything else; cached per file."""
    try:
        return _MODULES[filename]
    except KeyError:
        path = Path(filename)
        stem = path.stem if path.is_relative_to(_SHARED) else None
        _MODULES[filename] = stem
        return stem


def _stack() -> tuple[str, str, VersionKey | None]:
    """The app's own steps on the stack, plumbing left out: the innermost three (outermost first, e.g.
    'upload.upload_inbox_blob > rows.claim_upload > rows.insert'), all of them, and the blob version
    an ``upload.upload_inbox_blob`` frame on the stack is sending (its ``name`` and ``etag``)."""
    names: list[str] = []  # innermost first
    version: VersionKey | None = None
    frame = sys._getframe(2)
    while frame is not None:
        stem = _app_module(frame.f_code.co_filename)
        if stem is not None and stem not in _PLUMBING:
            name = f"{stem}.{frame.f_code.co_name}"
            if not names or names[-1] != name:
                names.append(name)
            if version is None and name == "upload.upload_inbox_blob":
                local = frame.f_locals
                if local.get("name") and local.get("etag"):
                    version = (str(local["name"]), str(local["etag"]).strip('"'))
        frame = frame.f_back
    return " > ".join(reversed(names[:3])), " > ".join(reversed(names)), version
