"""``backfill-tags``: what Inqom extracted, for documents archived before the archive was searchable.

    python -m inqom_bridge_cli backfill-tags [--folder ID] [--limit N] [--force] [--dry-run] [--no-progress]

For each ``Archived`` ledger row without ``TaggedAt`` (every archived row with ``--force``): one GET of
its Inqom document through the app's Inqom client (so under the fleet-wide Inqom rate budget; a
throttled call waits as long as Inqom or the budget asks, then goes on), then the archive copy gets its
index tags (Set Blob Tags: the content, metadata, ETag and last-modified time stay as they are; tags
someone else set are kept while the 10 fit), then the row gets the typed fields and ``TaggedAt``.
Tags first, row second: a run stopped anywhere is resumed by running it again, and a row already
tagged is skipped. A copy whose ``ledgerkey`` metadata names another row is never touched. The
original values stay on the row only (the copy's metadata is never rewritten).

This needs the Inqom credentials, like the app (Key Vault or the environment).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.archive.tags import ArchiveFields, EInvoiceFacts, archive_tags, merge_tags
from shared.http import ApiError, ThrottledError
from shared.ledger.rows import ARCHIVED, LedgerConflict, LedgerEntry, iso
from shared.observability import error_text
from shared.services import Services

from .common import is_empty
from .progress import Progress

#: Longest wait for one throttled call before it is tried again (Inqom's Retry-After is usually seconds).
MAX_THROTTLE_WAIT = 120.0
THROTTLE_RETRIES = 10


@dataclass
class TagBackfillReport:
    tagged: list[str] = field(default_factory=list)             # blob paths tagged
    without_data: list[str] = field(default_factory=list)       # tagged, but Inqom extracted nothing
    already: int = 0                                            # rows skipped: tagged before
    failed: list[tuple[str, str]] = field(default_factory=list)  # (ledger row, why)
    dropped_tags: list[tuple[str, list[str]]] = field(default_factory=list)  # others' tags that did not fit


def rows_to_tag(services: Services, folder: int | None, force: bool) -> tuple[list[LedgerEntry], int]:
    """Archived rows still to tag (oldest first) and the number already tagged."""
    query, params = "State eq @state", {"state": ARCHIVED}
    if folder is not None:
        query, params = query + " and PartitionKey eq @folder", {**params, "folder": str(folder)}
    rows, already = [], 0
    for entry in services.ledger.scan(query, **params):
        if is_empty(entry.get("ArchivePath")) or is_empty(entry.get("InqomId")):
            continue
        if not force and not is_empty(entry.get("TaggedAt")):
            already += 1
            continue
        rows.append(entry)
    rows.sort(key=lambda e: (str(e.get("ArchivedAt") or ""), e.partition, e.key))
    return rows, already


def _get_document(services: Services, entry: LedgerEntry, sleep=time.sleep):
    folder = int(entry.get("FolderId") or entry.partition)
    for attempt in range(THROTTLE_RETRIES + 1):
        try:
            return services.inqom.get_document(folder, int(entry.get("InqomId")))
        except ThrottledError as exc:  # the budget or Inqom says wait: wait, it is no failure
            if attempt == THROTTLE_RETRIES:
                raise
            sleep(min(exc.retry_after or 1.0, MAX_THROTTLE_WAIT))
    raise AssertionError("unreachable")


def tag_row(services: Services, entry: LedgerEntry, report: TagBackfillReport, dry_run: bool = False,
            sleep=time.sleep) -> ArchiveFields:
    """Tag one archived row's copy and store its fields (tags first, then the row); returns the fields."""
    container, _, name = str(entry.get("ArchivePath")).partition("/")
    blob = services.stores.container(container).get_blob_client(name)
    props = blob.get_blob_properties()
    if (props.metadata or {}).get("ledgerkey") != entry.key:
        raise RuntimeError(f"{container}/{name} holds another document's copy (ledgerkey); not tagged")
    document = _get_document(services, entry, sleep)
    fields = ArchiveFields.from_document(document)
    ours = archive_tags(entry.get("FolderId") or entry.partition, entry.get("Kind"), entry.get("InqomId"), fields,
                        EInvoiceFacts.from_row(entry))
    tags, dropped = merge_tags(blob.get_blob_tags() if props.tag_count else {}, ours)
    if dropped:
        report.dropped_tags.append((f"{container}/{name}", dropped))
    if dry_run:
        return fields
    blob.set_blob_tags(tags)  # a subresource: the copy's bytes, metadata and ETag are untouched
    changes = {**fields.ledger_columns(), "TaggedAt": iso(services.ledger.clock())}
    current: LedgerEntry | None = entry
    while current is not None:
        try:
            services.ledger.update(current, **changes)
            return fields
        except LedgerConflict:
            current = services.ledger.get(entry.partition, entry.key)
    raise RuntimeError("the ledger row disappeared while it was being tagged")


def backfill_tags(services: Services, folder: int | None = None, force: bool = False, dry_run: bool = False,
                  limit: int | None = None, progress: bool = True, sleep=time.sleep) -> TagBackfillReport:
    report = TagBackfillReport()
    rows, report.already = rows_to_tag(services, folder, force)
    if limit is not None:
        rows = rows[:limit]
    bar = Progress(len(rows), None, enabled=progress, unit="documents")
    try:
        for entry in rows:
            path = str(entry.get("ArchivePath"))
            bar.start_file(path)
            try:
                fields = tag_row(services, entry, report, dry_run, sleep)
            except (ApiError, AzureError, RuntimeError, ValueError) as exc:
                why = "the archive copy is missing" if isinstance(exc, ResourceNotFoundError) else error_text(exc)
                report.failed.append((f"{entry.partition}/{entry.key} ({path})", why))
                bar.finish_file(0, "failed")
                continue
            report.tagged.append(path)
            if fields.empty:
                report.without_data.append(path)
            bar.finish_file(0)
    finally:
        bar.close()
    return report


def run(services: Services, args: argparse.Namespace) -> int:
    report = backfill_tags(services, args.folder, args.force, args.dry_run, args.limit, progress=not args.no_progress)
    out = sys.stdout
    verb = "would tag" if args.dry_run else "tagged"
    for path, dropped in report.dropped_tags:
        out.write(f"note      {path}: its other tags {', '.join(dropped)} "
                  f"{'would not' if args.dry_run else 'did not'} fit beside the archive's (10 at most)\n")
    for row, why in report.failed:
        out.write(f"FAILED    {row}: {why}\n")
    out.write(f"{verb} {len(report.tagged)} archived document(s)"
              + (f" ({len(report.without_data)} without extracted data: tagged by folder, kind and Inqom id only)"
                 if report.without_data else "")
              + f", skipped {report.already} already tagged"
              + (f", failed {len(report.failed)} (run again to retry them)" if report.failed else "") + "\n")
    return 1 if report.failed else 0
