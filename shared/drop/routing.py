"""Inbox convention → upload instruction (pure; no I/O).

    {accountingFolderId}/supplier/{file}               purchase invoice  (TypeScan=Supplier)
    {accountingFolderId}/client/{file}                 sales invoice     (TypeScan=Client)
    {accountingFolderId}/other/{file}                  other document    (TypeScan=Others)
    {accountingFolderId}/expense/{beneficiary}/{file}  expense bill
    {accountingFolderId}/expense/{file}                expense bill, beneficiary from metadata

Blob metadata (names case-insensitive; values may be percent-encoded UTF-8 because blob
metadata is ASCII-only) may set ``docref``, ``sourceid``, ``withoutworkflow`` (true/false),
``documentname`` and ``beneficiary`` (overrides the path).

    route("11287/supplier/F-001.pdf", {}, size=52_000, rules=rules).type_scan   # 'Supplier'
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Mapping
from urllib.parse import unquote

KIND_TYPE_SCAN = {"supplier": "Supplier", "client": "Client", "other": "Others"}
EXPENSE = "expense"
KINDS = (*KIND_TYPE_SCAN, EXPENSE)
MAX_NAME_LENGTH = 255
MAX_FIELD_LENGTH = 255
MAX_FOLDER_ID = 2**63 - 1  # Inqom ids are 64-bit; a larger one cannot be stored or sent


class RoutingError(ValueError):
    """The blob does not fit the inbox convention or its limits; the message says why."""


@dataclass(frozen=True)
class RoutingRules:
    allowed_folder_ids: frozenset[int]
    allowed_extensions: frozenset[str]
    max_bytes: int


@dataclass(frozen=True)
class UploadInstruction:
    folder_id: int
    kind: str
    file_name: str
    type_scan: str | None = None
    beneficiary: str | None = None
    doc_ref: str | None = None
    source_id: str | None = None
    without_workflow: bool = False
    document_name: str | None = None

    @property
    def is_expense_bill(self) -> bool:
        return self.kind == EXPENSE


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def _clean_text(label: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise RoutingError(f"{label} is empty")
    if _has_control_chars(value):
        raise RoutingError(f"{label} contains control characters")
    if len(value) > MAX_FIELD_LENGTH:
        raise RoutingError(f"{label} is longer than {MAX_FIELD_LENGTH} characters")
    return value


def _metadata(raw: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): unquote(value) for key, value in (raw or {}).items()}


def _bool_field(value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise RoutingError(f"metadata withoutworkflow must be 'true' or 'false', not {value!r}")
    return lowered == "true"


def unaddressable(blob_name: str) -> str | None:
    """Why no storage client can address this blob by its name safely, or None.

    HTTP clients rewrite ``\\`` to ``/`` and collapse ``.``/``..`` path segments before the request
    leaves, so such a name reaches another URL than its own: with a signed request it fails, with a
    token it may name another blob. Such a blob is never read, moved or deleted by path.
    """
    if "\\" in blob_name:
        return "blob name contains a backslash, which storage clients turn into '/'"
    if any(segment in (".", "..") for segment in blob_name.split("/")):
        return "blob name contains a '.' or '..' segment, which HTTP clients collapse"
    if blob_name.endswith("."):
        return "blob name ends with a dot, which Azure Storage does not keep"
    return None


def route(blob_name: str, metadata: Mapping[str, str], size: int, rules: RoutingRules) -> UploadInstruction:
    """Decide what to send for inbox blob ``blob_name`` (relative to the container), or raise ``RoutingError``."""
    parts = blob_name.split("/")
    if len(parts) not in (3, 4) or any(not part for part in parts):
        raise RoutingError(
            f"path {blob_name!r} does not match '{{folderId}}/{{{'|'.join(KINDS)}}}/[beneficiary/]{{file}}'"
        )
    folder_text, kind = parts[0], parts[1].lower()
    if not folder_text.isascii() or not folder_text.isdigit() or not 0 < int(folder_text) <= MAX_FOLDER_ID:
        raise RoutingError(f"accounting folder id {folder_text[:40]!r} is not a positive integer below 2^63")
    folder_id = int(folder_text)
    if rules.allowed_folder_ids and folder_id not in rules.allowed_folder_ids:
        raise RoutingError(f"accounting folder {folder_id} is not in ALLOWED_FOLDER_IDS")
    if kind not in KINDS:
        raise RoutingError(f"kind {parts[1]!r} is not one of {', '.join(KINDS)}")
    if len(parts) == 4 and kind != EXPENSE:
        raise RoutingError(f"only expense documents take a beneficiary folder; {blob_name!r} has one")

    file_name = parts[-1]
    if _has_control_chars(file_name):
        raise RoutingError("file name contains control characters")
    if len(file_name) > MAX_NAME_LENGTH:
        raise RoutingError(f"file name is longer than {MAX_NAME_LENGTH} characters")
    extension = PurePosixPath(file_name).suffix.lower().lstrip(".")
    if extension not in rules.allowed_extensions:
        shown = f"'.{extension}'" if extension else "no extension"
        raise RoutingError(f"file type {shown} is not accepted (allowed: {', '.join(sorted(rules.allowed_extensions))})")
    if size <= 0:
        raise RoutingError("file is empty")
    if size > rules.max_bytes:
        raise RoutingError(f"file is {size} bytes, more than the {rules.max_bytes}-byte limit")

    meta = _metadata(metadata)
    doc_ref = _clean_text("metadata docref", meta["docref"]) if meta.get("docref") else None
    source_id = _clean_text("metadata sourceid", meta["sourceid"]) if meta.get("sourceid") else None
    document_name = _clean_text("metadata documentname", meta["documentname"]) if meta.get("documentname") else None
    without_workflow = _bool_field(meta.get("withoutworkflow"))

    if kind == EXPENSE:
        beneficiary = meta.get("beneficiary") or (parts[2] if len(parts) == 4 else "")
        if not beneficiary.strip():
            raise RoutingError("expense bill has no beneficiary (use expense/{beneficiary}/{file} or metadata beneficiary)")
        return UploadInstruction(
            folder_id, kind, file_name, beneficiary=_clean_text("beneficiary", beneficiary),
            doc_ref=doc_ref, source_id=source_id, document_name=document_name,
        )
    return UploadInstruction(
        folder_id, kind, file_name, type_scan=KIND_TYPE_SCAN[kind], doc_ref=doc_ref, source_id=source_id,
        without_workflow=without_workflow, document_name=document_name,
    )
