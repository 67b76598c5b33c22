#!/usr/bin/env python3
"""Daily export (and restore) of the ledger table (issue 22).

Azure Table storage has no point-in-time restore, soft delete or versioning: a row overwritten or
deleted by mistake is gone. This script copies every row of the ledger table to one JSON Lines
file, each property with its Edm type, so that a restore writes back exactly what was read
(Edm.Guid stays a Guid, Edm.Int64 an Int64, and a DateTime keeps the service's 7 fractional digits).

    # export (today's date in the name), optionally also to a blob container the firm owns
    python scripts/backup-ledger.py export --account <STORAGE_ACCOUNT_NAME> [--table ledger] \
        [--out backups/] [--upload-container-url https://<acct>.blob.core.windows.net/<container>]
    # restore: stop the function app first (az functionapp stop -g <rg> -n <app>), start it after
    python scripts/backup-ledger.py restore --account <STORAGE_ACCOUNT_NAME> --file backups/ledger-2026-01-31.jsonl

Restore is safe on a live ledger by default: it only inserts rows that do not exist in the table
(a row deleted by mistake comes back; a row that moved on since the backup is left as it is, so a
document already sent to Inqom is not put back to "pending" and sent twice). `--overwrite` replaces
existing rows with the file's version (UpdateMode.REPLACE) - only for a table known to be damaged.
Rows of the "budget" partition (the Inqom rate budget) are exported but never restored, with or
without --overwrite: they are pacing state that the app rebuilds, and an old copy would reset it.
Stop the function app (az functionapp stop -g <rg> -n <app>) before a restore, so that nothing
writes to the ledger while the rows come back; start it again afterwards (az functionapp start).
The restore prints how many rows it restored, skipped as existing and skipped as budget rows.

Endpoint: https://<account>.table.<--endpoint-suffix> (default core.windows.net; e.g.
core.usgovcloudapi.net, core.chinacloudapi.cn), or a full `--table-endpoint` URL instead of
--account (another cloud, a private endpoint name, Azurite). A URL (table endpoint or upload
container) that carries a SAS query string is used with that SAS alone, and its query string is
never printed.

Identity: DefaultAzureCredential (`az login`, or a pipeline's workload identity), unless the URL
carries a SAS. Export needs Storage Table Data Reader on the table, restore Storage Table Data
Contributor (the operator role of infra/modules/roles.bicep has it); the upload needs Storage Blob
Data Contributor on the target container. Run it daily from the firm's scheduler (cron, a CI
pipeline): see infra/README.md, "Backup of the ledger" for why it is not a deployed automation.

Uses only packages of requirements.txt (azure-data-tables, azure-storage-blob, azure-identity).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import math
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode

DEFAULT_ENDPOINT_SUFFIX = "core.windows.net"
# The Inqom rate budget's partition in the ledger table (shared.ledger.rows.BUDGET_PARTITION); not
# imported so that the script runs with requirements.txt alone, outside the app's source tree.
BUDGET_PARTITION = "budget"
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def redact(url: str) -> str:
    """The URL without its query string (a SAS is a credential) nor fragment, for printing."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _has_query(url: str) -> bool:
    return bool(urlsplit(url).query)


def _credential(url: str) -> Any:
    """None when the URL carries a SAS (its query string), else DefaultAzureCredential."""
    if _has_query(url):
        return None
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _datetime_text(value: dt.datetime) -> str:
    # azure-data-tables returns a TablesEntityDatetime (a datetime truncated to microseconds) whose
    # tables_service_value is the service's own string, e.g. 2026-01-31T10:00:00.1234567Z.
    service_value = getattr(value, "tables_service_value", "")
    if service_value:
        return service_value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat()


def _encode(value: Any) -> list[Any]:
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
            return [edm, _encode(raw)[1]]
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


def _decode(edm: str, value: Any) -> Any:
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
        # A file of an earlier version of this script (isoformat, 6 digits, "+00:00").
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


def _endpoint(args: argparse.Namespace) -> str:
    if args.table_endpoint:
        return args.table_endpoint
    return f"https://{args.account}.table.{args.endpoint_suffix.strip('.')}"


def _table(args: argparse.Namespace) -> TableClient:
    endpoint = _endpoint(args)
    return TableClient(endpoint=endpoint, table_name=args.table, credential=_credential(endpoint))


def _where(args: argparse.Namespace) -> str:
    return f"{redact(_endpoint(args)).rstrip('/')}/{args.table}"


def export(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.table}-{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}.jsonl"
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for entity in _table(args).list_entities():
            row = {
                "PartitionKey": entity["PartitionKey"],
                "RowKey": entity["RowKey"],
                "properties": {k: _encode(v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey")},
            }
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n")
            count += 1
    print(f"backup-ledger: {count} rows of {_where(args)} -> {path}")
    if args.upload_container_url:
        from azure.storage.blob import ContainerClient

        url = args.upload_container_url
        container = ContainerClient.from_container_url(url, credential=_credential(url))
        with path.open("rb") as data:
            # overwrite=False: a day's backup is written once; a WORM container keeps it immutable.
            container.upload_blob(name=f"ledger/{path.name}", data=data, overwrite=False)
        print(f"backup-ledger: uploaded to {redact(url).rstrip('/')}/ledger/{path.name}")
    return 0


def restore(args: argparse.Namespace) -> int:
    client = _table(args)
    restored = skipped_existing = skipped_budget = 0
    with Path(args.file).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            if row["PartitionKey"] == BUDGET_PARTITION:
                skipped_budget += 1
                continue
            entity = {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}
            entity.update({k: _decode(edm, v) for k, (edm, v) in row["properties"].items() if v is not None})
            if args.overwrite:
                client.upsert_entity(entity, mode=UpdateMode.REPLACE)
            else:
                try:
                    client.create_entity(entity)
                except ResourceExistsError:
                    skipped_existing += 1
                    continue
            restored += 1
    verb = "restored (existing rows replaced)" if args.overwrite else "restored"
    print(f"backup-ledger: {restored} rows {verb} into {_where(args)}")
    print(f"backup-ledger: {skipped_existing} rows skipped because they exist"
          + ("" if args.overwrite else " (left as they are; --overwrite replaces them)"))
    print(f"backup-ledger: {skipped_budget} rows of the '{BUDGET_PARTITION}' partition skipped "
          "(Inqom rate-budget pacing state, never restored: the app rebuilds it)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("export", "restore"):
        p = sub.add_parser(name)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--account", help="documents storage account (STORAGE_ACCOUNT_NAME output)")
        where.add_argument("--table-endpoint", default="",
                           help="full table endpoint URL instead of --account (optionally with a SAS query string)")
        p.add_argument("--endpoint-suffix", default=DEFAULT_ENDPOINT_SUFFIX,
                       help=f"storage endpoint suffix with --account (default {DEFAULT_ENDPOINT_SUFFIX})")
        p.add_argument("--table", default="ledger", help="ledger table (LEDGER_TABLE output)")
    sub.choices["export"].add_argument("--out", default="backups", help="local directory of the JSON Lines file")
    sub.choices["export"].add_argument("--upload-container-url", default="",
                                       help="also upload to this blob container (a SAS in the URL is used as is)")
    sub.choices["restore"].add_argument("--file", required=True, help="a file written by export")
    sub.choices["restore"].add_argument("--overwrite", action="store_true",
                                        help="replace rows that exist (default: keep them, insert only missing rows)")
    args = parser.parse_args(argv)
    return export(args) if args.command == "export" else restore(args)


if __name__ == "__main__":
    sys.exit(main())
