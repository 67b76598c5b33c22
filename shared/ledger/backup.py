"""Daily export of the ledger table to one JSON Lines blob, each property with its Edm type (issue 22).

    report = export_ledger(stores.table("ledger"), stores.container("ledger-backup"))
    report.blob_name, report.rows, report.created      # 'ledger-2026-01-31.jsonl', 1234, True
    entity = entity_of(json.loads(line))               # a line back to the entity restore writes

One line per row, all partitions (the ``budget`` rows too): ``{"PartitionKey", "RowKey", "properties":
{name: [edm type, JSON value]}}``, so that a restore writes back exactly what was read (Edm.Guid stays a
Guid, Edm.Int64 an Int64, a DateTime keeps the service's 7 fractional digits). Azure Table storage has no
point-in-time restore: this file is the only way back. ``scripts/backup-ledger.py`` writes and reads the
same lines (export to a file, restore).

The blob is written as the archive is: blocks staged while the rows are read, then one Put Block List
with ``If-None-Match: *``, so a day's backup is written once and a second run that day changes nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient
from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)

BACKUP_BLOCK = 4 * 1024 * 1024
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass(frozen=True)
class BackupReport:
    """One export: the blob, the rows and bytes this run read, and whether it created the blob."""

    blob_name: str
    rows: int
    bytes: int
    created: bool


def backup_name(day: dt.date, prefix: str = "ledger") -> str:
    """``ledger-2026-01-31.jsonl``: one blob (or file) per UTC day."""
    return f"{prefix}-{day:%Y-%m-%d}.jsonl"


def _datetime_text(value: dt.datetime) -> str:
    # azure-data-tables returns a TablesEntityDatetime (a datetime truncated to microseconds) whose
    # tables_service_value is the service's own string, e.g. 2026-01-31T10:00:00.1234567Z.
    service_value = getattr(value, "tables_service_value", "")
    if service_value:
        return service_value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat()


def encode(value: Any) -> list[Any]:
    """[edm type, JSON value] of one property value as azure-data-tables 12.x returns it.

    Edm.Int64 comes as EntityProperty(int, INT64); Edm.Guid as uuid.UUID; Edm.DateTime as a
    TablesEntityDatetime; Edm.Binary as bytes; Int32, Double, Boolean and String as plain values.
    """
    if isinstance(value, EntityProperty):
        edm, raw = value.edm_type, value.value
        edm = edm.value if isinstance(edm, EdmType) else str(edm)
        if raw is None:
            return [edm, None]
        if edm == EdmType.BINARY.value:
            return [edm, base64.b64encode(raw).decode("ascii")]
        if edm == EdmType.DATETIME.value and isinstance(raw, dt.datetime):
            return [edm, _datetime_text(raw)]
        if edm == EdmType.DOUBLE.value and isinstance(raw, float) and not math.isfinite(raw):
            return [edm, encode(raw)[1]]
        if edm in (EdmType.INT64.value, EdmType.INT32.value) and not isinstance(raw, bool):
            return [edm, int(raw)]
        return [edm, raw if isinstance(raw, (str, int, float, bool)) else str(raw)]
    if value is None:
        return [EdmType.STRING.value, None]
    if isinstance(value, bool):
        return [EdmType.BOOLEAN.value, value]
    if isinstance(value, int):
        return [EdmType.INT32.value if -(2**31) <= value < 2**31 else EdmType.INT64.value, value]
    if isinstance(value, float):
        if math.isnan(value):
            return [EdmType.DOUBLE.value, "NaN"]
        if math.isinf(value):
            return [EdmType.DOUBLE.value, "Infinity" if value > 0 else "-Infinity"]
        return [EdmType.DOUBLE.value, value]
    if isinstance(value, uuid.UUID):
        return [EdmType.GUID.value, str(value)]
    if isinstance(value, dt.datetime):
        return [EdmType.DATETIME.value, _datetime_text(value)]
    if isinstance(value, (bytes, bytearray)):
        return [EdmType.BINARY.value, base64.b64encode(bytes(value)).decode("ascii")]
    return [EdmType.STRING.value, str(value)]


def decode(edm: str, value: Any) -> Any:
    """The property to write: always an EntityProperty, so the table gets exactly this Edm type."""
    if value is None:
        return None
    edm_type = EdmType(edm)
    if edm_type is EdmType.BINARY:
        return EntityProperty(base64.b64decode(value), EdmType.BINARY)
    if edm_type is EdmType.DATETIME:
        if isinstance(value, str) and value.endswith("Z"):
            # The service's own text (7 fractional digits): azure-data-tables sends a str as is.
            return EntityProperty(value, EdmType.DATETIME)
        # A file of an earlier version of the script (isoformat, 6 digits, "+00:00").
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return EntityProperty(parsed, EdmType.DATETIME)
    if edm_type is EdmType.INT64:
        return EntityProperty(int(value), EdmType.INT64)
    if edm_type is EdmType.INT32:
        return EntityProperty(int(value), EdmType.INT32)
    if edm_type is EdmType.DOUBLE:
        return EntityProperty(_NON_FINITE[value] if isinstance(value, str) else float(value), EdmType.DOUBLE)
    if edm_type is EdmType.BOOLEAN:
        return EntityProperty(bool(value), EdmType.BOOLEAN)
    if edm_type is EdmType.GUID:
        return EntityProperty(str(uuid.UUID(str(value))), EdmType.GUID)
    return EntityProperty(str(value), EdmType.STRING)


def row_line(entity: dict[str, Any]) -> str:
    """One entity as its JSON line (newline included)."""
    row = {
        "PartitionKey": entity["PartitionKey"],
        "RowKey": entity["RowKey"],
        "properties": {k: encode(v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey")},
    }
    return json.dumps(row, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n"


def entity_of(row: dict[str, Any]) -> dict[str, Any]:
    """A parsed line back to the entity to write (null properties left out, as the service stores them)."""
    entity = {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}
    entity.update({k: decode(edm, v) for k, (edm, v) in row["properties"].items() if v is not None})
    return entity


def blocks(lines: Iterable[str], block_size: int = BACKUP_BLOCK) -> Iterable[bytes]:
    """The UTF-8 bytes of ``lines`` cut into blocks of ``block_size`` (the last one shorter, none if empty)."""
    pending = bytearray()
    for line in lines:
        pending += line.encode("utf-8")
        while len(pending) >= block_size:
            yield bytes(pending[:block_size])
            del pending[:block_size]
    if pending:
        yield bytes(pending)


def export_ledger(table: TableClient, container: ContainerClient, *, now: dt.datetime | None = None,
                  block_size: int = BACKUP_BLOCK) -> BackupReport:
    """Write every row of ``table`` to today's (UTC) backup blob in ``container``, create-only.

    When today's blob exists (a second run, or a concurrent one that committed first) nothing is
    written and the report says ``created=False``; its rows and bytes are what this run read.
    """
    day = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).date()
    name = backup_name(day)
    blob = container.get_blob_client(name)
    try:
        size = blob.get_blob_properties().size
    except ResourceNotFoundError:
        pass
    else:
        log.info("ledger backup %s already exists (%d bytes): nothing written", name, size)
        return BackupReport(name, 0, 0, created=False)
    prefix = uuid.uuid4().hex[:16]  # a concurrent run stages its own uncommitted blocks
    rows = written = 0
    block_ids: list[str] = []

    def lines() -> Iterable[str]:
        nonlocal rows
        for entity in table.list_entities():
            rows += 1
            yield row_line(entity)

    try:
        for block in blocks(lines(), block_size):
            block_id = base64.b64encode(f"{prefix}{len(block_ids):08d}".encode()).decode()
            blob.stage_block(block_id, block)
            block_ids.append(block_id)
            written += len(block)
        blob.commit_block_list(block_ids, if_none_match="*")
    except HttpResponseError as exc:
        # Committed meanwhile by another run: the commit finds it (409 BlobAlreadyExists), or, under the
        # container's retention policy, staging a block onto the committed blob is refused.
        if not isinstance(exc, ResourceExistsError) and exc.error_code != "BlobImmutableDueToPolicy":
            raise
        log.info("ledger backup %s was written by another run: this one leaves it as it is", name)
        return BackupReport(name, rows, written, created=False)
    log.info("ledger backup %s: %d rows, %d bytes", name, rows, written)
    return BackupReport(name, rows, written, created=True)
