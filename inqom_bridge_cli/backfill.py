"""``backfill``: upload a local directory tree into the inbox, skipping what was already sent.

Every regular file at any depth is uploaded as ``{folder}/{kind}/[beneficiary/]{name}``, where
``name`` is its path relative to the directory with the subdirectories flattened into the file
name with ``_`` (``2024/03/F-1.pdf`` → ``2024_03_F-1.pdf``), so files of the same name in
different subdirectories stay distinct. Files the routing rules would quarantine (extension,
size, empty, name) and names that collide after flattening are refused and reported, not uploaded.

A file is skipped when its SHA-1 (upper-case hex, as the uploader records ``Sha1``) is on a
document row of that folder in any state but Quarantined, when an earlier file of this run has
the same content, or when the inbox already holds a blob of that name (it is not overwritten).
Files are streamed: hashed and uploaded from the open file in 4 MiB blocks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import ContainerClient

from shared.ledger.rows import QUARANTINED
from shared.drop.routing import EXPENSE, RoutingError, route
from shared.services import Services
from shared.storage import STORAGE_TIMEOUT, StorageClients

from .common import CliError, human_bytes
from .progress import Progress

BLOCK = 4 * 1024 * 1024
FLATTEN_SEPARATOR = "_"


@dataclass
class Planned:
    path: Path
    relative: str
    blob_name: str
    size: int


@dataclass
class BackfillReport:
    uploaded: list[tuple[str, str]] = field(default_factory=list)   # (relative, blob name)
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (relative, why)
    refused: list[tuple[str, str]] = field(default_factory=list)    # (relative, why)
    failed: list[tuple[str, str]] = field(default_factory=list)     # (relative, error)
    uploaded_bytes: int = 0


def streaming_container(stores: StorageClients, name: str) -> ContainerClient:
    """A client of ``name`` on the same account and credential that uploads in ``BLOCK``-sized blocks.

    The SDK's defaults would read a file of up to 64 MiB into memory for a single put.
    """
    service = stores.blobs
    return ContainerClient(service.url, name, credential=service.credential, max_single_put_size=BLOCK,
                           max_block_size=BLOCK, connection_timeout=10, read_timeout=STORAGE_TIMEOUT)


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest().upper()


def sent_checksums(services: Services, folder: int) -> set[str]:
    """SHA-1s of documents of ``folder`` already handed to the bridge (any state but Quarantined)."""
    sums = set()
    for entry in services.ledger.scan("PartitionKey eq @folder", folder=str(folder)):
        sha1 = entry.get("Sha1")
        if sha1 and entry.state != QUARANTINED:
            sums.add(str(sha1).upper())
    return sums


def plan(services: Services, root: Path, folder: int, kind: str, beneficiary: str | None,
         report: BackfillReport) -> list[Planned]:
    prefix = f"{folder}/{kind}/" + (f"{beneficiary}/" if beneficiary else "")
    planned: list[Planned] = []
    by_name: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            relative = path.relative_to(root).as_posix()
            if not path.is_file():
                report.refused.append((relative, "not a regular file"))
                continue
            blob_name = prefix + FLATTEN_SEPARATOR.join(path.relative_to(root).parts)
            try:
                size = path.stat().st_size
            except OSError as exc:
                report.refused.append((relative, f"cannot read: {exc.strerror or exc}"))
                continue
            try:
                route(blob_name, {}, size, services.routing_rules)
            except RoutingError as exc:
                report.refused.append((relative, str(exc)))
                continue
            if blob_name in by_name:
                report.refused.append((relative, f"inbox name {blob_name!r} is also the name of {by_name[blob_name]}"))
                continue
            by_name[blob_name] = relative
            planned.append(Planned(path, relative, blob_name, size))
    return planned


def backfill(services: Services, root: Path, folder: int, kind: str, beneficiary: str | None = None,
             dry_run: bool = False, progress: bool = True) -> BackfillReport:
    settings = services.settings
    report = BackfillReport()
    files = plan(services, root, folder, kind, beneficiary, report)
    known = sent_checksums(services, folder)
    inbox_names = {b.name for b in services.stores.container(settings.inbox_container)
                   .list_blobs(name_starts_with=f"{folder}/{kind}/")}
    inbox = streaming_container(services.stores, settings.inbox_container)
    bar = Progress(len(files), sum(f.size for f in files), enabled=progress)
    seen: dict[str, str] = {}
    try:
        for item in files:
            bar.start_file(item.relative)
            try:
                sha1 = sha1_of(item.path)
            except OSError as exc:
                report.failed.append((item.relative, f"cannot read: {exc.strerror or exc}"))
                bar.finish_file(item.size, "failed")
                continue
            if sha1 in known:
                report.skipped.append((item.relative, f"already sent (SHA-1 {sha1} is in the ledger of folder {folder})"))
                bar.finish_file(item.size, "already sent")
                continue
            if sha1 in seen:
                report.skipped.append((item.relative, f"same content as {seen[sha1]}"))
                bar.finish_file(item.size, "same content")
                continue
            seen[sha1] = item.relative
            if item.blob_name in inbox_names:
                report.skipped.append((item.relative, f"already in the inbox as {item.blob_name}"))
                bar.finish_file(item.size, "in inbox")
                continue
            if dry_run:
                report.uploaded.append((item.relative, item.blob_name))
                bar.finish_file(item.size, "dry run")
                continue
            try:
                with open(item.path, "rb") as handle:
                    inbox.upload_blob(item.blob_name, handle, length=item.size, overwrite=False,
                                      metadata={"source": "backfill"}, max_concurrency=1,
                                      progress_hook=lambda current, total: bar.file_bytes(current))
            except ResourceExistsError:
                report.skipped.append((item.relative, f"already in the inbox as {item.blob_name}"))
                bar.finish_file(item.size, "in inbox")
                continue
            except (AzureError, OSError) as exc:
                report.failed.append((item.relative, str(exc).splitlines()[0] if str(exc) else repr(exc)))
                bar.finish_file(item.size, "failed")
                continue
            report.uploaded.append((item.relative, item.blob_name))
            report.uploaded_bytes += item.size
            bar.finish_file(item.size)
    finally:
        bar.close()
    return report


def run(services: Services, args: argparse.Namespace) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        raise CliError(f"{args.directory!r} is not a directory")
    kind = args.kind
    beneficiary = (args.beneficiary or "").strip() or None
    if kind == EXPENSE and not beneficiary:
        raise CliError("expense documents need --beneficiary NAME (the inbox path is {folder}/expense/{beneficiary}/{file})")
    if kind != EXPENSE and beneficiary:
        raise CliError(f"--beneficiary is only for --kind expense, not {kind}")
    if beneficiary and "/" in beneficiary:
        raise CliError("--beneficiary must not contain '/'")
    rules = services.routing_rules
    if rules.allowed_folder_ids and args.folder not in rules.allowed_folder_ids:
        raise CliError(f"accounting folder {args.folder} is not in ALLOWED_FOLDER_IDS; every file would be quarantined")

    report = backfill(services, root, args.folder, kind, beneficiary, dry_run=args.dry_run,
                      progress=not args.no_progress)
    out = sys.stdout
    verb = "would upload" if args.dry_run else "uploaded"
    for relative, blob_name in report.uploaded:
        out.write(f"{verb:<9} {relative} -> {services.settings.inbox_container}/{blob_name}\n")
    for relative, why in report.skipped:
        out.write(f"skipped   {relative}: {why}\n")
    for relative, why in report.refused:
        out.write(f"refused   {relative}: {why}\n")
    for relative, why in report.failed:
        out.write(f"FAILED    {relative}: {why}\n")
    out.write(f"\n{verb} {len(report.uploaded)} ({human_bytes(report.uploaded_bytes)}), "
              f"skipped {len(report.skipped)} (already sent or already in the inbox), "
              f"refused {len(report.refused)}" + (f", failed {len(report.failed)}" if report.failed else "") + "\n")
    if report.uploaded and not args.dry_run:
        out.write("In Azure, Event Grid starts an upload for each new inbox blob; locally the local runner "
                  "(scripts/run.sh) picks them up from Azurite.\n")
    if report.refused or report.failed:
        print("backfill: some files were refused or failed (listed above); exit code 1", file=sys.stderr)
        return 1
    return 0
