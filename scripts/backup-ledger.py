#!/usr/bin/env python3
"""Daily export (and restore) of the ledger table (issue 22).

Azure Table storage has no point-in-time restore, soft delete or versioning: a row overwritten or
deleted by mistake is gone. This script copies every row of the ledger table to one JSON Lines
file, each property with its Edm type, so that a restore writes back exactly what was read.

    # export (today's date in the name), optionally also to a blob container the firm owns
    python scripts/backup-ledger.py export --account <STORAGE_ACCOUNT_NAME> [--table ledger] \
        [--out backups/] [--upload-container-url https://<acct>.blob.core.windows.net/<container>]
    # restore (upsert: rows in the file replace the same rows in the table; others are left alone)
    python scripts/backup-ledger.py restore --account <STORAGE_ACCOUNT_NAME> --file backups/ledger-2026-01-31.jsonl

Identity: DefaultAzureCredential (`az login`, or a pipeline's workload identity). Export needs
Storage Table Data Reader on the table, restore Storage Table Data Contributor (the operator role
of infra/modules/roles.bicep has it); the upload needs Storage Blob Data Contributor on the target
container. Run it daily from the firm's scheduler (cron, a CI pipeline): see infra/README.md,
"Backup of the ledger" for why it is not a deployed automation.

Uses only packages of requirements.txt (azure-data-tables, azure-storage-blob, azure-identity).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode
from azure.identity import DefaultAzureCredential

STORAGE_SUFFIX = "core.windows.net"


def _encode(value: Any) -> list[Any]:
    """[edm type, JSON value] of one property value as azure-data-tables returns it."""
    if isinstance(value, EntityProperty):
        edm, raw = value.edm_type, value.value
        edm = edm.value if isinstance(edm, EdmType) else str(edm)
        if edm == EdmType.BINARY.value:
            return [edm, base64.b64encode(raw).decode("ascii")]
        if edm == EdmType.DATETIME.value and isinstance(raw, dt.datetime):
            return [edm, raw.isoformat()]
        return [edm, raw if isinstance(raw, (str, int, float, bool)) or raw is None else str(raw)]
    if isinstance(value, bool):
        return [EdmType.BOOLEAN.value, value]
    if isinstance(value, int):
        return [EdmType.INT32.value if -(2**31) <= value < 2**31 else EdmType.INT64.value, value]
    if isinstance(value, float):
        return [EdmType.DOUBLE.value, value]
    if isinstance(value, dt.datetime):
        return [EdmType.DATETIME.value, value.isoformat()]
    if isinstance(value, bytes):
        return [EdmType.BINARY.value, base64.b64encode(value).decode("ascii")]
    return [EdmType.STRING.value, str(value)]


def _decode(edm: str, value: Any) -> Any:
    if value is None:
        return None
    if edm == EdmType.BINARY.value:
        return base64.b64decode(value)
    if edm == EdmType.DATETIME.value:
        return dt.datetime.fromisoformat(value)
    if edm == EdmType.INT64.value:
        return EntityProperty(int(value), EdmType.INT64)
    if edm == EdmType.GUID.value:
        return EntityProperty(str(value), EdmType.GUID)
    return value


def _table(account: str, table: str) -> TableClient:
    return TableClient(endpoint=f"https://{account}.table.{STORAGE_SUFFIX}", table_name=table,
                       credential=DefaultAzureCredential())


def export(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.table}-{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}.jsonl"
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for entity in _table(args.account, args.table).list_entities():
            row = {
                "PartitionKey": entity["PartitionKey"],
                "RowKey": entity["RowKey"],
                "properties": {k: _encode(v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey")},
            }
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    print(f"backup-ledger: {count} rows -> {path}")
    if args.upload_container_url:
        from azure.storage.blob import ContainerClient

        container = ContainerClient.from_container_url(args.upload_container_url, credential=DefaultAzureCredential())
        with path.open("rb") as data:
            # overwrite=False: a day's backup is written once; a WORM container keeps it immutable.
            container.upload_blob(name=f"ledger/{path.name}", data=data, overwrite=False)
        print(f"backup-ledger: uploaded to {args.upload_container_url.rstrip('/')}/ledger/{path.name}")
    return 0


def restore(args: argparse.Namespace) -> int:
    client = _table(args.account, args.table)
    count = 0
    with Path(args.file).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            entity = {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}
            entity.update({k: _decode(edm, v) for k, (edm, v) in row["properties"].items()})
            client.upsert_entity(entity, mode=UpdateMode.REPLACE)
            count += 1
    print(f"backup-ledger: {count} rows restored into {args.table}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("export", "restore"):
        p = sub.add_parser(name)
        p.add_argument("--account", required=True, help="documents storage account (STORAGE_ACCOUNT_NAME output)")
        p.add_argument("--table", default="ledger", help="ledger table (LEDGER_TABLE output)")
    sub.choices["export"].add_argument("--out", default="backups", help="local directory of the JSON Lines file")
    sub.choices["export"].add_argument("--upload-container-url", default="", help="also upload to this blob container")
    sub.choices["restore"].add_argument("--file", required=True, help="a file written by export")
    args = parser.parse_args(argv)
    return export(args) if args.command == "export" else restore(args)


if __name__ == "__main__":
    sys.exit(main())
