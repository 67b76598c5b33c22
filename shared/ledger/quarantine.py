"""Setting a document aside: its blob moves to the quarantine container, the reason to its metadata and ledger row.

    entry = quarantine_document(services, partition, key, fields, "file type '.exe' is not accepted")
    entry = finish_quarantine(services, entry)      # the poller, for a row left ``Quarantining``

Intent first (``Quarantining``, reason, due time), then the move, then the final state
(``Quarantined``, or ``Deleted`` for a document Inqom deleted); a crash in between leaves a due row
that the poller finishes. Why: docs/guarantee.md.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared import metrics
from shared.blobmove import BlobGone, BlobReplaced, move_blob
from shared.ledger.rows import DELETED, FINAL_STATES, QUARANTINED, QUARANTINING, SUPERSEDED, LedgerConflict, LedgerEntry

if TYPE_CHECKING:  # the ledger sits below the services that wire it
    from shared.services import Services

log = logging.getLogger(__name__)

_OUTCOMES = {QUARANTINED: metrics.QUARANTINED, DELETED: metrics.DELETED, SUPERSEDED: metrics.SUPERSEDED}
#: When the poller finishes a quarantine whose worker died before moving the blob.
FINISH_AFTER = timedelta(minutes=5)


def quarantine_document(services: Services, partition: str, key: str, fields: dict[str, Any], reason: str,
                        entry: LedgerEntry | None = None, final_state: str = QUARANTINED,
                        **extra: Any) -> LedgerEntry:
    """Record the intent on the row (created from ``fields`` when ``entry`` is None), then move the blob."""
    ledger = services.ledger
    intent = {"State": QUARANTINING, "FinalState": final_state, "QuarantineReason": reason, "LastError": reason,
              "ClaimUntil": None, "NextPollAt": ledger.clock() + FINISH_AFTER, **extra}
    decided_on = _version(entry)
    while True:
        try:
            if entry is None:
                entry = ledger.insert(partition, key, {**fields, **{k: v for k, v in intent.items() if v is not None}})
            else:
                entry = ledger.update(entry, **intent)
            break
        except LedgerConflict:
            entry = ledger.get(partition, key)
            if entry is not None and _version(entry) != decided_on:
                # Someone moved the row on meanwhile (a concurrent delivery quarantining it too, or another
                # worker's upload that succeeded): their state stands, ours was decided on an old one.
                if entry.state != QUARANTINING:
                    return entry
                break
    return finish_quarantine(services, entry)


def _version(entry: LedgerEntry | None) -> tuple[Any, Any] | None:
    """What the decision to quarantine was based on: the row's state and its claim number."""
    return None if entry is None else (entry.state, entry.get("Attempts"))


def finish_quarantine(services: Services, entry: LedgerEntry) -> LedgerEntry:
    """Move the blob (if still there) and give the row its final state; safe to repeat."""
    settings = services.settings
    ledger = services.ledger
    reason = entry.get("QuarantineReason") or "quarantined"
    final_state = entry.get("FinalState") or QUARANTINED
    changes: dict[str, Any] = {"NextPollAt": None, "ClaimUntil": None}
    try:
        moved_to = move_blob(services.stores, entry.get("Container") or settings.inbox_container, entry.get("BlobPath"),
                             settings.quarantine_container, owner=entry.key,
                             extra_metadata={"reason": reason, "ledgerkey": entry.key},
                             expected_etag=entry.get("BlobETag"))
        changes.update(State=final_state, QuarantinePath=f"{settings.quarantine_container}/{moved_to}")
    except (BlobReplaced, BlobGone) as exc:
        # That version is no longer in the inbox (replaced or removed by someone): nothing to move.
        changes.update(State=final_state if final_state != QUARANTINED else SUPERSEDED,
                       LastError=f"{reason} — not quarantined: {exc}")
    while True:
        try:
            entry = ledger.update(entry, **changes)
            break
        except LedgerConflict:
            current = ledger.get(entry.partition, entry.key)
            if current is None or current.state != QUARANTINING:
                return current or entry
            entry = current
    metrics.document_outcome(_OUTCOMES.get(entry.state, metrics.QUARANTINED))
    log.warning("%s %s (ledger %s): %s", entry.state.lower(), entry.get("BlobPath"), entry.key, entry.get("LastError"))
    return entry
