"""Shared pieces of the operator commands: errors, row access, column order, formatting."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import Any, Iterable, TextIO

from azure.data.tables import EntityProperty

from shared.archive.tags import LEDGER_COLUMNS
from shared.ledger.rows import DUPLICATE, STALE, TEXT_COLUMNS, UPLOADED, LedgerEntry, parse_iso
from shared.observability import redact

PROG = "inqom_bridge_cli"

#: States in which a document is with Inqom and the poller still follows it.
PENDING_STATES = (UPLOADED, DUPLICATE, STALE)

# Column groups, in the order ``show`` prints them and ``export`` writes them.
IDENTITY_COLUMNS = ("PartitionKey", "RowKey", "Source", "Container", "BlobPath", "BlobETag", "Size", "Kind",
                    "FolderId", "EnfactId")
STATE_COLUMNS = ("State", "Attempts", "Throttled", "ClaimUntil", "CreatedAt", "UploadedAt", "LastPolledAt", "NextPollAt",
                 "ArchivedAt", "UpdatedAt", "ReplayedAt", "ReplayCount", "ReplayedTo", "StateBeforeReplay")
INQOM_COLUMNS = ("InqomId", "ExtraInqomIds", "InqomStatus", "StatusReasons", "UnknownStatusLogged", "OriginId",
                 "Polls")
#: What Inqom extracted, stored when the document was archived (or by ``backfill-tags``).
EXTRACTED_COLUMNS = LEDGER_COLUMNS
#: What the structured e-invoice says (written at drop time), a business duplicate's first file, and where
#: Inqom's reading disagrees with the invoice (written when archived).
EINVOICE_COLUMNS = ("EInvoiceFormat", "EInvoiceError", "EInvoiceProfile", "EInvoiceTypeCode", "EInvoiceNumber",
                    "EInvoiceIssueDate", "EInvoiceDueDate", "EInvoiceCurrency", "EInvoiceSellerName",
                    "EInvoiceSellerId", "EInvoiceSellerVat", "EInvoiceBuyerName", "EInvoiceBuyerId",
                    "EInvoiceBuyerVat", "EInvoiceTotalWithoutVat", "EInvoiceVatTotal", "EInvoiceTotalWithVat",
                    "EInvoiceAmountDue", "EInvoiceBuyerReference", "EInvoiceOrderReference", "BusinessKey",
                    "Invoice", "DuplicateOf", "DuplicateOfPath", "DuplicateOfInqomId", "DuplicateSent",
                    "OcrMismatch", "OcrMismatchDetail")
CHECKSUM_COLUMNS = ("Sha1", "InqomChecksum", "ArchivedSha1", "ChecksumMismatches")
PATH_COLUMNS = ("ArchivePath", "TaggedAt", "QuarantinePath", "QuarantineReason")
ERROR_COLUMNS = ("LastError", "Errors")
SECTIONS = (
    ("Document", IDENTITY_COLUMNS),
    ("State and times", STATE_COLUMNS),
    ("Inqom", INQOM_COLUMNS),
    ("Extracted by Inqom", EXTRACTED_COLUMNS),
    ("From the e-invoice", EINVOICE_COLUMNS),
    ("Checksums", CHECKSUM_COLUMNS),
    ("Archive / quarantine", PATH_COLUMNS),
    ("Errors", ERROR_COLUMNS),
)
KNOWN_COLUMNS: tuple[str, ...] = tuple(column for _, columns in SECTIONS for column in columns)


class CliError(Exception):
    """A user error or a "not found": printed on stderr, exit code 1."""


def plain(value: Any) -> Any:
    """The Python value of a table property (``EntityProperty`` unwrapped)."""
    return value.value if isinstance(value, EntityProperty) else value


def row_dict(entry: LedgerEntry) -> dict[str, Any]:
    """All columns of a ledger row, PartitionKey and RowKey included."""
    row = {"PartitionKey": entry.partition, "RowKey": entry.key}
    row.update({name: plain(value) for name, value in entry.fields.items()})
    for name in TEXT_COLUMNS & row.keys():  # rows written before redaction covered ledger columns
        if isinstance(row[name], str):
            row[name] = redact(row[name])
    return row


def ordered_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Known columns first (fixed order), then every other column present, sorted."""
    seen: set[str] = set()
    for row in rows:
        seen.update(row)
    return list(KNOWN_COLUMNS) + sorted(seen - set(KNOWN_COLUMNS))


def is_empty(value: Any) -> bool:
    """The ledger clears a column by writing ''."""
    return value is None or value == ""


def text(value: Any) -> str:
    return "-" if is_empty(value) else str(value)


def started_at(row: dict[str, Any]) -> datetime | None:
    return parse_iso(row.get("UploadedAt") or None) or parse_iso(row.get("CreatedAt") or None)


def human_age(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def print_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(data, out, indent=2, ensure_ascii=False, default=str)
    out.write("\n")


def table(rows: list[list[str]], headers: list[str], out: TextIO | None = None, indent: str = "") -> None:
    """A plain left-aligned text table (last column not padded)."""
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = [str(cell).ljust(widths[i]) if i < len(row) - 1 else str(cell) for i, cell in enumerate(row)]
        out.write(indent + "  ".join(cells).rstrip() + "\n")
