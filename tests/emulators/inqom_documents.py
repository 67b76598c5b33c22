"""Inqom's documents in the emulator: each one's status flow, what was extracted from it, and the
public download links handed out for it, serialised as Inqom answers them.

    store = InqomDocuments(emulator)  # reads the emulator's flow and serialisation settings
    created = store.create(11287, upload, name="a.pdf", original_name="a.pdf", type_scan="Supplier",
                           source_id=None, doc_ref=None, beneficiary=None)
    assert store.poll(store.get(created["Id"]))["Status"] == "Processing"
"""

from __future__ import annotations

import base64
import itertools
import math
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from tests.emulators.inqom_http import UploadedFile

STATUSES = frozenset(
    {"Received", "ToReview", "Processing", "Duplicate", "Done", "ManualProcessing", "Deleted"}
    # Not in the spec, but answered by Inqom in practice: "Pending" (waiting), "Rejected" (final).
    | {"Pending", "Rejected"}
)
#: What Inqom extracts from a document (answered by GET Documents/{id} once set, null members left out).
EXTRACTED_FIELDS = ("CounterParty", "Amount", "EffectifDate", "DocRef", "Type", "UserDefinedThirdPartyName")
_OWNER_ID = 7498  # "OwnerId" of every document (the API user)


@dataclass
class Document:
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
class PublicLink:
    doc_id: int
    signature: str
    expires_at: float  # time.time()


class DocumentSettings(Protocol):
    """The emulator's settings the store reads (tests change them at any time)."""

    status_flow: tuple[str, ...]
    polls_per_step: int
    flow_for_name: dict[str, Sequence[str]]
    extraction_for_name: dict[str, dict[str, Any]]
    use_origine_typo: bool
    status_reasons_as_list: bool


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Format like .NET does in Inqom's answers: "2023-03-24T17:05:21.38Z"."""
    fraction = f"{moment.microsecond:06d}0".rstrip("0")
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def check_flow(flow: Sequence[str]) -> tuple[str, ...]:
    steps = tuple(flow)
    if not steps or isinstance(flow, str):
        raise ValueError("a status flow is a non-empty sequence of statuses")
    unknown = [step for step in steps if step not in STATUSES]
    if unknown:
        raise ValueError(f"unknown status(es) {unknown}; valid: {sorted(STATUSES)}")
    return steps


class InqomDocuments:
    """Every document by id, and the public links to them by token (thread-safe)."""

    def __init__(self, settings: DocumentSettings) -> None:
        self._settings = settings
        self._lock = threading.RLock()
        self.by_id: dict[int, Document] = {}
        self.links: dict[str, PublicLink] = {}
        self._ids = itertools.count(1_000_001)

    # ------------------------------------------------------------------ documents

    def create(self, folder_id: int, upload: UploadedFile, *, name: str, original_name: str,
               type_scan: str, source_id: str | None, doc_ref: str | None,
               beneficiary: str | None) -> dict[str, Any]:
        """Store the upload as a new document (a "Duplicate" when the folder has its bytes); its JSON."""
        settings = self._settings
        with self._lock:
            original = next((doc for doc in self.by_id.values()
                             if doc.folder_id == folder_id and doc.checksum == upload.sha1
                             and doc.deleted_at is None), None)
            if original is not None:
                flow: tuple[str, ...] = ("Duplicate",)
            else:
                chosen = settings.flow_for_name.get(original_name) or settings.flow_for_name.get(name)
                flow = check_flow(chosen) if chosen else settings.status_flow
            document = Document(
                id=next(self._ids), folder_id=folder_id, name=name, original_name=original_name,
                type=type_scan, size=upload.size, checksum=upload.sha1, path=upload.path,
                created_at=now(), source_id=source_id, doc_ref=doc_ref, beneficiary=beneficiary,
                origin_id=original.id if original else None, flow=flow,
                polls_per_step=settings.polls_per_step)
            extraction = (settings.extraction_for_name.get(original_name)
                          or settings.extraction_for_name.get(name))
            document.extracted.update(extraction or {})
            self._apply_status(document, flow[0], ())
            upload.kept = True
            self.by_id[document.id] = document
            return self.json(document)

    def get(self, doc_id: int) -> Document:
        with self._lock:
            try:
                return self.by_id[doc_id]
            except KeyError:
                raise KeyError(f"no document {doc_id}") from None

    def in_folder(self, folder_id: int, doc_id: int) -> Document | None:
        with self._lock:
            document = self.by_id.get(doc_id)
        return document if document is not None and document.folder_id == folder_id else None

    def page(self, folder_id: int, page: int, size: int) -> list[dict[str, Any]]:
        """One page of the folder's documents, newest first (the statuses as they stand, no polling)."""
        with self._lock:
            newest_first = sorted((d for d in self.by_id.values() if d.folder_id == folder_id),
                                  key=lambda d: d.id, reverse=True)
            return [self.json(d) for d in newest_first[(page - 1) * size: page * size]]

    def poll(self, document: Document) -> dict[str, Any]:
        """The document's JSON as a GET answers it, every ``polls_per_step`` GETs a step further."""
        with self._lock:
            document.polls += 1
            if document.polls >= document.polls_per_step and document.step < len(document.flow) - 1:
                document.step, document.polls = document.step + 1, 0
                self._apply_status(document, document.flow[document.step], ())
            return self.json(document)

    def snapshot(self) -> dict[int, dict[str, Any]]:
        """Every document, id -> its JSON (without polling)."""
        with self._lock:
            return {doc_id: self.json(doc) for doc_id, doc in self.by_id.items()}

    def count(self) -> int:
        with self._lock:
            return len(self.by_id)

    def set_status(self, doc_id: int, status: str, reasons: Sequence[str] | None, *, unknown: bool) -> None:
        """Pin the document's status; ``unknown`` lets it be outside ``STATUSES``."""
        if not unknown:
            check_flow([status])
        with self._lock:
            document = self.get(doc_id)
            document.flow, document.step, document.polls = (status,), 0, 0
            self._apply_status(document, status, tuple(reasons or ()))

    def set_extracted(self, doc_id: int, fields: dict[str, Any]) -> None:
        unknown = sorted(set(fields) - set(EXTRACTED_FIELDS))
        if unknown:
            raise ValueError(f"unknown extracted field(s) {unknown}; valid: {list(EXTRACTED_FIELDS)}")
        with self._lock:
            self.get(doc_id).extracted.update(fields)

    def set_flow(self, doc_id: int, flow: Sequence[str], polls_per_step: int | None) -> None:
        """Restart the document at ``flow[0]``, ``polls_per_step`` GETs a step if given."""
        steps = check_flow(flow)
        if polls_per_step is not None and polls_per_step < 1:
            raise ValueError("polls_per_step must be >= 1")
        with self._lock:
            document = self.get(doc_id)
            document.flow, document.step, document.polls = steps, 0, 0
            if polls_per_step is not None:
                document.polls_per_step = polls_per_step
            self._apply_status(document, steps[0], ())

    # ---------------------------------------------------------------------- links

    def link(self, document: Document, ttl: float) -> tuple[str, PublicLink]:
        """A new public link to ``document``, valid ``ttl`` seconds: its token and itself."""
        token = secrets.token_urlsafe(18)
        signature = base64.b64encode(secrets.token_bytes(32)).decode("ascii")  # has + / =
        link = PublicLink(document.id, signature, time.time() + ttl)
        with self._lock:
            self.links[token] = link
        return token, link

    def linked(self, token: str) -> tuple[PublicLink, Document] | None:
        """The link with this token and its document, if both exist."""
        with self._lock:
            link = self.links.get(token)
            document = self.by_id.get(link.doc_id) if link else None
        return (link, document) if link is not None and document is not None else None

    def expire_links(self) -> None:
        with self._lock:
            for token, link in self.links.items():
                self.links[token] = replace(link, expires_at=0.0)

    # ---------------------------------------------------------------- serialising

    @staticmethod
    def _apply_status(document: Document, status: str, reasons: tuple[str, ...]) -> None:
        moment = now()
        document.status, document.reasons, document.status_updated_at = status, reasons, moment
        if status == "Deleted":
            document.deleted_at = document.deleted_at or moment
        else:
            document.deleted_at = None

    def json(self, doc: Document) -> dict[str, Any]:
        """The document as Inqom serialises it: null members are left out."""
        settings = self._settings
        reasons: str | list[str] = (list(doc.reasons) if settings.status_reasons_as_list
                                    else ", ".join(doc.reasons) or "None")
        payload: dict[str, Any] = {
            "Id": doc.id,
            "AccountingFolderId": doc.folder_id,
            "Name": doc.name,
            "Type": doc.type,
            "Size": math.ceil(doc.size / 1024),
            ("OrigineId" if settings.use_origine_typo else "OriginId"): doc.origin_id,
            "DeletedAt": iso(doc.deleted_at) if doc.deleted_at else None,
            "CreatedAt": iso(doc.created_at),
            "Source": "Api",
            "SourceId": doc.source_id,
            "ClientSource": "Web",
            "DocRef": doc.doc_ref,
            "Checksum": doc.checksum,
            "Status": doc.status,
            "StatusReason": ", ".join(doc.reasons) or None,
            "StatusReasons": reasons,
            "StatusUpdatedAt": iso(doc.status_updated_at) if doc.status_updated_at else None,
            "FileUrl": f"https://storage.invalid/enterprises/{doc.id}/{quote(doc.original_name)}",
            "OwnerId": _OWNER_ID,
            "OriginalName": doc.original_name,
            "ContentSource": "DocData",
            "UserDefinedThirdPartyName": doc.beneficiary,
        }
        payload.update(doc.extracted)
        return {key: value for key, value in payload.items() if value is not None}
