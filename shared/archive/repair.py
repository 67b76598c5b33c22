"""The repair sweep: a bounded pass that finds work nothing else would ever look at again.

    report = repair_sweep(services, now)      # at the end of every poll tick
    report.reindexed, report.adopted

Each run reads one page (``REPAIR_SWEEP_BATCH``) of unsettled rows and of inbox blobs, resuming from
a cursor row. A row without a due time or index entry is made due now; an inbox blob older than
``REPAIR_GRACE_MINUTES`` with no row is adopted (``Failed``, due now) for the upload watchdog.
Why: docs/guarantee.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core.exceptions import AzureError

from shared.ledger.rows import (
    FAILED, FINAL_STATES, SWEEP_PARTITION, Ledger, LedgerConflict, ledger_key, partition_for,
)
from shared.drop.routing import unaddressable
from shared.services import Services
from shared.drop.upload import record_refused

log = logging.getLogger(__name__)

CURSOR = "cursor"
_UNSETTLED = " and ".join(f"State ne '{state}'" for state in sorted(FINAL_STATES))


@dataclass
class SweepReport:
    rows: int = 0
    reindexed: int = 0
    blobs: int = 0
    adopted: int = 0


def repair_sweep(services: Services, now: datetime) -> SweepReport:
    settings = services.settings
    ledger = services.ledger
    report = SweepReport()
    cursor = ledger.get(SWEEP_PARTITION, CURSOR)
    rows_token = json.loads(cursor.get("RowsToken") or "null") if cursor else None
    blobs_marker = (cursor.get("BlobsMarker") or None) if cursor else None
    try:
        rows_token = _sweep_rows(ledger, settings.repair_sweep_batch, rows_token, now, report)
        blobs_marker = _sweep_inbox(services, settings.repair_sweep_batch, blobs_marker,
                                    now - timedelta(minutes=settings.repair_grace_minutes), report)
    except AzureError as exc:  # storage trouble: the next tick resumes from the saved cursor
        log.warning("repair sweep stopped early: %s", type(exc).__name__)
    fields = {"RowsToken": json.dumps(rows_token) if rows_token else None, "BlobsMarker": blobs_marker}
    try:
        if cursor is None:
            ledger.insert(SWEEP_PARTITION, CURSOR, fields)
        else:
            ledger.update(cursor, **fields)
    except LedgerConflict:
        pass  # a concurrent tick saved its own position; either is fine
    if report.reindexed or report.adopted:
        log.warning("repair sweep: %s", report)
    return report


def _sweep_rows(ledger: Ledger, batch: int, token, now: datetime, report: SweepReport):
    rows, token = ledger.scan_page(_UNSETTLED, batch, token)
    for entry in rows:
        report.rows += 1
        if entry.next_poll is None:
            try:
                ledger.update(entry, NextPollAt=now, LastError=entry.get("LastError") or "made due by the repair sweep")
            except LedgerConflict:
                continue  # changed meanwhile: whoever changed it set its due time
        elif not ledger.has_index(entry):
            ledger.reindex(entry)
        else:
            continue
        report.reindexed += 1
        log.warning("repair sweep: ledger %s/%s (%s) had no due index entry; due again", entry.partition, entry.key,
                    entry.state)
    return token


def _sweep_inbox(services: Services, batch: int, marker: str | None, older_than: datetime,
                 report: SweepReport) -> str | None:
    settings = services.settings
    ledger = services.ledger
    inbox = services.stores.container(settings.inbox_container)
    pages = inbox.list_blobs(include=["metadata"], results_per_page=batch).by_page(continuation_token=marker)
    for blob in next(pages, []):
        report.blobs += 1
        if blob.last_modified > older_than:
            continue
        key = ledger_key(settings.inbox_container, blob.name, blob.etag)
        partition = partition_for(blob.name)
        if ledger.get(partition, key) is not None:
            continue
        problem = unaddressable(blob.name)
        if problem:
            record_refused(services, settings.inbox_container, blob.name, blob.etag, blob.size, problem)
            report.adopted += 1
            continue
        fields = {"Source": (blob.metadata or {}).get("source", "drop"), "Container": settings.inbox_container,
                  "BlobPath": blob.name, "BlobETag": blob.etag.strip('"'), "Size": blob.size, "State": FAILED,
                  "Attempts": 0, "NextPollAt": ledger.clock(),
                  "LastError": "no blob event was ever handled for this file; adopted by the repair sweep"}
        try:
            ledger.insert(partition, key, fields)
        except LedgerConflict:
            continue  # its event arrived meanwhile
        report.adopted += 1
        log.warning("repair sweep: inbox blob %r had no ledger row; adopted (ledger %s)", blob.name[:300], key)
    return pages.continuation_token
