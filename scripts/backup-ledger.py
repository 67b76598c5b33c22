#!/usr/bin/env python3
"""Restore (and on-demand export) of the ledger table (issue 22).

Azure Table storage has no point-in-time restore, soft delete or versioning: a row overwritten or
deleted by mistake is gone. The app's `backup_ledger` timer writes every row to one JSON Lines blob
a day in the `ledger-backup` container (shared/ledger/backup.py, whose serialization this script
uses: each property with its Edm type, so a restore writes back exactly what was read). This script
restores such a blob or file, and exports to a local file on demand (before a risky change).

    # restore today's backup blob: stop the function app first (az functionapp stop -g <rg> -n <app>), start it after
    python scripts/backup-ledger.py restore --account <STORAGE_ACCOUNT_NAME> \
        --from-blob https://<acct>.blob.core.windows.net/ledger-backup/ledger-2026-01-31.jsonl
    # or a local file written by export
    python scripts/backup-ledger.py restore --account <STORAGE_ACCOUNT_NAME> --file backups/ledger-2026-01-31.jsonl
    # export now (today's date in the name), optionally also to a blob container the firm owns
    python scripts/backup-ledger.py export --account <STORAGE_ACCOUNT_NAME> [--table ledger] \
        [--out backups/] [--upload-container-url https://<acct>.blob.core.windows.net/<container>]

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
--account (another cloud, a private endpoint name, Azurite). A URL (table endpoint, upload
container or --from-blob) that carries a SAS query string is used with that SAS alone, and its
query string is never printed.

Identity: DefaultAzureCredential (`az login`, or a pipeline's workload identity), unless the URL
carries a SAS. Export needs Storage Table Data Reader on the table, restore Storage Table Data
Contributor (the operator role of infra/modules/roles.bicep has it), --from-blob Storage Blob Data
Reader on the ledger-backup container (the operator is granted it); the upload needs Storage Blob
Data Contributor on the target container. See infra/README.md, "Backup of the ledger".

Run it from a checkout of this repository (it imports shared/); it needs only requirements.txt.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, UpdateMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: one serialization, the app's
from shared.ledger.backup import backup_name, entity_of, row_line  # noqa: E402
from shared.ledger.rows import BUDGET_PARTITION  # noqa: E402

DEFAULT_ENDPOINT_SUFFIX = "core.windows.net"


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
    path = out_dir / backup_name(dt.datetime.now(dt.timezone.utc).date(), args.table)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for entity in _table(args).list_entities():
            handle.write(row_line(entity))
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


def _download(url: str, into: Path) -> Path:
    """The backup blob at ``url`` streamed to a local file (the daily export of the app's timer)."""
    from azure.storage.blob import BlobClient

    blob = BlobClient.from_blob_url(url, credential=_credential(url))
    path = into / Path(blob.blob_name).name
    with path.open("wb") as handle:
        blob.download_blob().readinto(handle)
    print(f"backup-ledger: downloaded {redact(url)}")
    return path


def restore(args: argparse.Namespace) -> int:
    if args.from_blob:
        with tempfile.TemporaryDirectory() as tmp:
            return _restore(args, _download(args.from_blob, Path(tmp)))
    return _restore(args, Path(args.file))


def _restore(args: argparse.Namespace, path: Path) -> int:
    client = _table(args)
    restored = skipped_existing = skipped_budget = 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            if row["PartitionKey"] == BUDGET_PARTITION:
                skipped_budget += 1
                continue
            entity = entity_of(row)
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
    source = sub.choices["restore"].add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="a file written by export")
    source.add_argument("--from-blob", default="",
                        help="a blob written by the app's daily backup, as <container URL>/<blob> (a SAS is used as is)")
    sub.choices["restore"].add_argument("--overwrite", action="store_true",
                                        help="replace rows that exist (default: keep them, insert only missing rows)")
    args = parser.parse_args(argv)
    return export(args) if args.command == "export" else restore(args)


if __name__ == "__main__":
    sys.exit(main())
