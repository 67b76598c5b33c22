"""Drop → Inqom: send one inbox blob to Inqom exactly once, or quarantine it with the reason.

    outcome = upload_inbox_blob(services, blob_client)   # blob_client: the trigger's BlobClient

Check the name → route → claim the row (fenced, renewed by a ``ClaimKeeper``) → if an earlier claim
may have reached Inqom, look in Inqom's document list instead of sending → else stream the blob →
record the Inqom id(s) and schedule the first poll. Permanent failures (routing, Inqom 400/404)
quarantine; others are recorded and re-raised for the host to retry, until ``UPLOAD_MAX_ATTEMPTS``
(then quarantine; refused credentials are retried). Throttling hands the upload back to the poller
without raising. The inbox blob stays until the poller archives it.
Why: docs/guarantee.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from shared.auth import AuthenticationError
from shared.inqom.budget import MAX_SHARED_HOLD
from shared.http import ApiError, DeadlineExceeded, ThrottledError
from shared.inqom.client import InqomDocument, UploadUnconfirmed
from shared.ledger.rows import (
    DUPLICATE, FAILED, QUARANTINING, REFUSED, SUPERSEDED, UPLOADED, ClaimKeeper, Ledger, LedgerConflict, LedgerEntry,
    iso, ledger_key, partition_for,
)
from shared import metrics
from shared.observability import bind, error_text
from shared.inqom.polling import PollPolicy
from shared.ledger.quarantine import finish_quarantine, quarantine_document
from shared.drop.duplicates import FirstCopy, claim_invoice, invoice_identity
from shared.drop.routing import RoutingError, UploadInstruction, route, unaddressable
from shared.drop.structured import REPLAY_OF, SEND_DUPLICATE, read_at_door
from shared.services import Services
from shared.storage import BlobRangeReader

log = logging.getLogger(__name__)

#: Pages of 100 of a folder's document list (newest first) read to find an earlier send: the send being
#: looked for is recent, and a folder taking more than 2,000 documents meanwhile is not a case we meet.
LOOKUP_PAGES = 20


@dataclass(frozen=True)
class UploadOutcome:
    key: str
    state: str
    inqom_id: int | None = None
    reason: str | None = None


def upload_inbox_blob(services: Services, blob: BlobClient) -> UploadOutcome:
    settings = services.settings
    container = blob.container_name
    problem = unaddressable(blob.blob_name)
    if problem:
        return _refuse(services, container, blob.blob_name, problem)
    try:
        props = blob.get_blob_properties()
    except ResourceNotFoundError:
        log.info("inbox blob %s is gone (already archived or quarantined); nothing to do", blob.blob_name)
        return UploadOutcome("", "Gone")
    name, etag, size = props.name, props.etag, props.size
    metadata = dict(props.metadata or {})
    key = ledger_key(container, name, etag)
    partition = partition_for(name)
    bind(ledger_key=key, enfact_id=metadata.get("enfactid"))
    base_fields = {
        "Source": metadata.get("source", "drop"), "Container": container, "BlobPath": name,
        "BlobETag": etag.strip('"'), "Size": size, "EnfactId": metadata.get("enfactid"),
    }
    ledger = services.ledger
    try:
        instruction = route(name, metadata, size, services.routing_rules)
    except RoutingError as exc:
        adopted = ledger.get(partition, key)  # e.g. a row the repair sweep created for a blob whose event was lost
        if adopted is None or (adopted.state == FAILED and adopted.get("InqomId") in (None, "")):
            return _outcome(quarantine_document(services, partition, key, base_fields, str(exc), entry=adopted),
                            reason=str(exc))
        if adopted.state == QUARANTINING:
            return _outcome(finish_quarantine(services, adopted), reason=str(exc))
        log.info("blob %s (ledger %s) is refused by routing but its row is %s; left as it is", name, key, adopted.state)
        return UploadOutcome(key, adopted.state or "", reason=str(exc))

    fields = {**base_fields, "Kind": instruction.kind, "FolderId": instruction.folder_id}
    entry = ledger.claim_upload(partition, key, fields, settings.upload_claim_seconds)
    if entry is None:
        current = ledger.get(partition, key)
        log.info("blob %s (ledger %s) needs no upload: %s", name, key, current.state if current else "?")
        return UploadOutcome(key, current.state if current else "Unknown", current.get("InqomId") if current else None)

    try:
        entry, first = _at_the_door(services, blob, entry, instruction.folder_id, size, etag, metadata)
    except ResourceModifiedError:
        return _superseded(ledger, entry)
    except Exception as exc:  # storage hiccup while reading: the host retries, the watchdog backs it up
        _record_failure(ledger, entry, error_text(exc), settings.upload_claim_seconds,
                        Unsent=int(entry.get("Unsent") or 0) + 1)
        raise
    if first is not None:
        return _hold_duplicate(services, entry, fields, first)

    readers: list[BlobRangeReader] = []

    def open_blob() -> BlobRangeReader:
        readers.append(BlobRangeReader(blob, size, etag))
        return readers[-1]

    keeper = ClaimKeeper(ledger, entry, settings.upload_claim_seconds)
    found: list[InqomDocument] = []
    try:
        with keeper:
            if _may_have_been_sent(entry):
                found = _find_sent(services, instruction, key, _blob_sha1(open_blob), size)
            if not found:
                try:
                    found = [_send(services, instruction, key, open_blob)]
                except UploadUnconfirmed:
                    found = _find_sent(services, instruction, key, readers[-1].sha1.hexdigest().upper(), size)
                    if not found:
                        raise
    except ResourceModifiedError:
        return _superseded(ledger, keeper.entry)
    except ThrottledError as exc:
        return _hand_back(services, keeper.entry, exc)
    except DeadlineExceeded as exc:  # the poll tick driving this watchdog upload ran out of time: not an attempt
        _settle(ledger, keeper.entry, State=FAILED, CutShort=int(keeper.entry.get("CutShort") or 0) + 1,
                ClaimUntil=None, NextPollAt=ledger.clock(), LastError="upload cut short by the poll tick's deadline",
                **_unsent(keeper.entry, exc))
        raise
    except ApiError as exc:
        claimed = keeper.entry
        failures = _failed_attempts(claimed)
        if exc.permanent:
            return _outcome(quarantine_document(services, partition, key, fields, str(exc), entry=claimed,
                                                **_unsent(claimed, exc)), reason=str(exc))
        # Refused credentials are retried until fixed, however long: no document is to blame.
        if failures >= settings.upload_max_attempts and not isinstance(exc, AuthenticationError):
            reason = f"gave up after {failures} attempts: {exc}"
            return _outcome(quarantine_document(services, partition, key, fields, reason, entry=claimed,
                                                **_unsent(claimed, exc)), reason=reason)
        _record_failure(ledger, claimed, str(exc), settings.upload_claim_seconds, **_unsent(claimed, exc))
        log.warning("upload of %s (ledger %s) failed, attempt %d of %d: %s",
                    name, key, failures, settings.upload_max_attempts, exc)
        raise
    except Exception as exc:  # storage hiccup mid-read, a bug: never leave the row claimed and unseen
        _record_failure(ledger, keeper.entry, error_text(exc), settings.upload_claim_seconds)
        raise

    document, *extra = sorted(found, key=lambda d: d.id)
    bind(inqom_id=document.id)
    now = ledger.clock()
    sha1 = readers[-1].sha1.hexdigest().upper()
    state = DUPLICATE if document.status == "Duplicate" else UPLOADED
    recorded = ledger.record_sent(
        keeper.entry, document.id, State=state, InqomStatus=document.status, OriginId=document.origin_id,
        Sha1=sha1, InqomChecksum=document.checksum, UploadedAt=iso(now), ClaimUntil=None, LastError=None,
        NextPollAt=now + PollPolicy.from_settings(settings).first_poll(), Polls=0,
    )
    for other in extra:  # earlier attempts whose answers were lost each made one
        recorded = ledger.record_sent(recorded, other.id)
    if extra:
        log.error("blob %s (ledger %s) reached Inqom %d times (answers lost): document %s is followed, %s linked "
                  "to the row as extra uploads", name, key, len(found), document.id, ",".join(str(d.id) for d in extra))
    if recorded.get("InqomId") != document.id:
        log.error("blob %s (ledger %s) was sent to Inqom twice (its claim was taken over): document %s is linked "
                  "to the row as an extra upload of document %s", name, key, document.id, recorded.get("InqomId"))
        return UploadOutcome(key, recorded.state or "", document.id, reason="sent twice; linked")
    metrics.document_outcome(metrics.DUPLICATE if state == DUPLICATE else metrics.UPLOADED)
    log.info("uploaded %s (ledger %s) to Inqom folder %s as document %s (%s)",
             name, key, instruction.folder_id, document.id, document.status or "accepted")
    return UploadOutcome(key, state, document.id)


def _at_the_door(services: Services, blob: BlobClient, entry: LedgerEntry, folder_id: int, size: int, etag: str,
                 metadata: dict[str, str]) -> tuple[LedgerEntry, FirstCopy | None]:
    """Read the document's own terms onto its row (once per blob version) and claim its business key:
    the copy already holding the invoice, when this one is to be held instead of sent."""
    ledger = services.ledger
    if entry.get("EInvoiceFormat") in (None, ""):
        columns = read_at_door(blob, entry.get("BlobPath") or "", size, etag, metadata, services.settings)
        identity = invoice_identity(folder_id, columns)
        if identity is not None:
            columns.update(BusinessKey=identity.key, Invoice=str(identity))
        entry = ledger.update(entry, **{k: v for k, v in columns.items() if v is not None})
    identity = invoice_identity(folder_id, {name: entry.get(name) for name in entry.fields})
    if identity is None:
        return entry, None
    first = claim_invoice(ledger, entry, identity, replaying=unquote(metadata.get(REPLAY_OF, "")) or None)
    if first is None or entry.get("DuplicateSent"):  # one sent as a duplicate before: its outcome is followed, never held
        return entry, None
    duplicate = {"DuplicateOf": f"{first.partition}/{first.key}", "DuplicateOfPath": first.path,
                 "DuplicateOfInqomId": first.inqom_id}
    forced = unquote(metadata.get(SEND_DUPLICATE, "")).lower() == "true"
    if services.settings.business_duplicates == "hold" and not forced:
        return entry, first
    log.warning("ledger %s is invoice %s, which %s already holds (ledger %s); sent all the same (%s)", entry.key,
                entry.get("EInvoiceNumber"), first.path, first.key,
                "replayed with --force" if forced else "BUSINESS_DUPLICATES=send")
    return ledger.update(entry, **duplicate, DuplicateSent=True), None


def _hold_duplicate(services: Services, entry: LedgerEntry, fields: dict, first: FirstCopy) -> UploadOutcome:
    """Not sent: set aside in quarantine, linked to the copy holding the invoice (``replay --force`` sends it)."""
    reason = f"duplicate invoice {entry.get('EInvoiceNumber')} of {first.path}"
    held = quarantine_document(services, entry.partition, entry.key, fields, reason, entry=entry,
                               DuplicateOf=f"{first.partition}/{first.key}", DuplicateOfPath=first.path,
                               DuplicateOfInqomId=first.inqom_id, Unsent=int(entry.get("Unsent") or 0) + 1)
    return _outcome(held, reason=reason)


def _superseded(ledger: Ledger, entry: LedgerEntry) -> UploadOutcome:
    _settle(ledger, entry, State=SUPERSEDED, ClaimUntil=None, NextPollAt=None,
            LastError="blob was replaced during upload; the new version is handled by its own trigger")
    metrics.document_outcome(metrics.SUPERSEDED)
    return UploadOutcome(entry.key, SUPERSEDED, reason="replaced during upload")


def _may_have_been_sent(entry: LedgerEntry) -> bool:
    """Whether an earlier claim of this row may have reached Inqom: one that crashed, or whose outcome was
    unknown. Claims known not to have sent anything are counted in ``Unsent``."""
    earlier = int(entry.get("Attempts") or 1) - 1
    return earlier > int(entry.get("Unsent") or 0)


def _unsent(entry: LedgerEntry, exc: Exception) -> dict[str, int]:
    """The ``Unsent`` count to write when this attempt ends in ``exc``: grown when Inqom surely made nothing."""
    if getattr(exc, "outcome_unknown", True):
        return {}
    return {"Unsent": int(entry.get("Unsent") or 0) + 1}


def _blob_sha1(open_blob) -> str:
    reader = open_blob()
    while reader.read(4 * 1024 * 1024):
        pass
    return reader.sha1.hexdigest().upper()


def _find_sent(services: Services, instruction: UploadInstruction, key: str, sha1: str,
               size: int) -> list[InqomDocument]:
    """What Inqom made of earlier sends of this blob version (its document list, newest first).

    A document answered without ``Checksum`` is matched by what else it carries: its ``SourceId``, or
    for an expense bill (which carries none) its name, beneficiary and size (``Size``, in whole KiB).
    """
    source_id = instruction.source_id or key

    def ours(document: InqomDocument) -> bool:
        if document.checksum and document.checksum.upper() != sha1:
            return False
        if instruction.is_expense_bill:
            same_size = document.checksum or document.size_kib == -(-size // 1024)
            return (bool(same_size) and document.name == instruction.file_name
                    and (document.third_party_name or "") == (instruction.beneficiary or ""))
        return document.source_id == source_id

    found = services.inqom.find_documents(instruction.folder_id, ours, max_pages=LOOKUP_PAGES)
    log.warning("ledger %s: an earlier send may have reached Inqom; its document list shows %s", key,
                ", ".join(str(d.id) for d in found) or "nothing of this file, so it is sent")
    return found


def _failed_attempts(entry: LedgerEntry) -> int:
    """Claims that ended in failure or a crash: throttled or deadline-cut hand-backs are not failures."""
    return int(entry.get("Attempts") or 1) - int(entry.get("Throttled") or 0) - int(entry.get("CutShort") or 0)


def _outcome(entry: LedgerEntry, reason: str) -> UploadOutcome:
    return UploadOutcome(entry.key, entry.state or "", reason=reason)


def _settle(ledger: Ledger, entry: LedgerEntry, **changes) -> None:
    try:
        ledger.update(entry, **changes)
    except LedgerConflict:
        log.warning("ledger %s changed meanwhile; its own due time stays", entry.key)


def _record_failure(ledger: Ledger, entry: LedgerEntry, error: str, retry_after_seconds: float, **extra) -> None:
    """Failed, to be retried by the host; the pending-index entry is a watchdog in case it is not."""
    _settle(ledger, entry, State=FAILED, LastError=error, ClaimUntil=None,
            NextPollAt=ledger.clock() + timedelta(seconds=retry_after_seconds), **extra)


def _hand_back(services: Services, entry: LedgerEntry, exc: ThrottledError) -> UploadOutcome:
    """Inqom asked us to slow down: not a failed attempt; the poller drives it again when Inqom said."""
    ledger = services.ledger
    wait = min(exc.retry_after if exc.retry_after is not None else services.settings.http_backoff_cap,
               MAX_SHARED_HOLD)
    due = ledger.clock() + timedelta(seconds=wait)
    _settle(ledger, entry, State=FAILED, Throttled=int(entry.get("Throttled") or 0) + 1, ClaimUntil=None,
            LastError=f"throttled by Inqom; handed back until {iso(due)}: {exc}", NextPollAt=due,
            **_unsent(entry, exc))
    log.warning("upload of ledger %s throttled by Inqom; handed back to the poller until %s (not a failed attempt)",
                entry.key, iso(due))
    return UploadOutcome(entry.key, FAILED, reason="throttled")


def _refuse(services: Services, container: str, name: str, problem: str) -> UploadOutcome:
    """A name no client can address is found by listing (a query parameter, never a path)."""
    listed = next((b for b in services.stores.container(container).list_blobs(name_starts_with=name)
                   if b.name == name), None)
    if listed is None:
        return UploadOutcome("", "Gone")
    return record_refused(services, container, name, listed.etag, listed.size, problem)


def record_refused(services: Services, container: str, name: str, etag: str, size: int, problem: str) -> UploadOutcome:
    """Recorded with the reason and left in place, never read, moved or deleted by path."""
    key = ledger_key(container, name, etag)
    reason = f"{problem}; the file is left in the inbox untouched: rename it to send it"
    fields = {"Source": "drop", "Container": container, "BlobPath": name, "BlobETag": etag.strip('"'),
              "Size": size, "State": REFUSED, "QuarantineReason": reason, "LastError": reason}
    try:
        services.ledger.insert(partition_for(name), key, fields)
        metrics.document_outcome(metrics.REFUSED)
        log.error("refused inbox blob %r (ledger %s): %s", name[:300], key, reason)
    except LedgerConflict:
        log.info("inbox blob %r (ledger %s) was already refused", name[:300], key)
    return UploadOutcome(key, REFUSED, reason=reason)


def _send(services: Services, instruction: UploadInstruction, key: str, open_blob) -> InqomDocument:
    if instruction.is_expense_bill:
        document_id = services.inqom.upload_expense_bill(
            instruction.folder_id, open_file=open_blob, file_name=instruction.file_name,
            beneficiary=instruction.beneficiary or "", document_reference=instruction.doc_ref,
        )
        return InqomDocument(id=document_id, folder_id=instruction.folder_id, status=None)
    return services.inqom.upload_document(
        instruction.folder_id, type_scan=instruction.type_scan or "", open_file=open_blob,
        file_name=instruction.file_name, doc_ref=instruction.doc_ref, source_id=instruction.source_id or key,
        without_workflow=instruction.without_workflow, document_name=instruction.document_name,
    )
