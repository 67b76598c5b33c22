"""Drop → Inqom: send one inbox blob to Inqom exactly once, or quarantine it with the reason.

    outcome = upload_inbox_blob(services, blob_client)   # blob_client: the trigger's BlobClient

Order of work: read properties → route (pure checks) → claim the ledger row (ETag) → stream the
blob to Inqom → record the Inqom id and schedule the first status poll. Permanent failures
(routing, Inqom 400/404) quarantine the blob; others are recorded and re-raised so the Functions
host retries, until ``UPLOAD_MAX_ATTEMPTS``, when the blob is quarantined instead of being left to
the poison queue — except refused Inqom credentials, retried until someone fixes them. Every
claimed or failed row has a due time in the pending index, so the poller re-drives an upload the
host did not finish. The inbox blob itself stays until the poller archives it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from .blobmove import BlobReplaced, move_blob
from .auth import AuthenticationError
from .http import ApiError
from .inqom import InqomDocument
from .ledger import (
    DUPLICATE, FAILED, QUARANTINED, UPLOADED, Ledger, LedgerConflict, LedgerEntry, iso, ledger_key, partition_for,
)
from .observability import bind
from .polling import PollPolicy
from .routing import RoutingError, UploadInstruction, route
from .services import Services
from .storage import BlobRangeReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadOutcome:
    key: str
    state: str
    inqom_id: int | None = None
    reason: str | None = None


def upload_inbox_blob(services: Services, blob: BlobClient) -> UploadOutcome:
    settings = services.settings
    container = blob.container_name
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
        return _quarantine(services, ledger, partition, key, base_fields, name, str(exc), entry=None)

    fields = {**base_fields, "Kind": instruction.kind, "FolderId": instruction.folder_id}
    entry = ledger.claim_upload(partition, key, fields, settings.upload_claim_seconds)
    if entry is None:
        current = ledger.get(partition, key)
        log.info("blob %s (ledger %s) needs no upload: %s", name, key, current.state if current else "?")
        return UploadOutcome(key, current.state if current else "Unknown", current.get("InqomId") if current else None)

    readers: list[BlobRangeReader] = []

    def open_blob() -> BlobRangeReader:
        readers.append(BlobRangeReader(blob, size, etag))
        return readers[-1]

    try:
        document = _send(services, instruction, key, open_blob)
    except ResourceModifiedError:
        ledger.update(entry, State=FAILED, LastError="blob was replaced during upload; the new version is handled by its own trigger",
                      ClaimUntil=None, NextPollAt=None)
        return UploadOutcome(key, FAILED, reason="replaced during upload")
    except ApiError as exc:
        attempts = int(entry.get("Attempts") or 1)
        if exc.permanent:
            return _quarantine(services, ledger, partition, key, fields, name, str(exc), entry=entry)
        # Refused credentials are retried until fixed, however long: no document is to blame.
        if attempts >= settings.upload_max_attempts and not isinstance(exc, AuthenticationError):
            reason = f"gave up after {attempts} attempts: {exc}"
            return _quarantine(services, ledger, partition, key, fields, name, reason, entry=entry)
        _record_failure(ledger, entry, str(exc), settings.upload_claim_seconds)
        log.warning("upload of %s (ledger %s) failed, attempt %d of %d: %s",
                    name, key, attempts, settings.upload_max_attempts, exc)
        raise
    except Exception as exc:  # storage hiccup mid-read, a bug: never leave the row claimed and unseen
        _record_failure(ledger, entry, f"{type(exc).__name__}: {exc}", settings.upload_claim_seconds)
        raise

    bind(inqom_id=document.id)
    now = ledger.clock()
    sha1 = readers[-1].sha1.hexdigest().upper()
    state = DUPLICATE if document.status == "Duplicate" else UPLOADED
    ledger.update(
        entry, State=state, InqomId=document.id, InqomStatus=document.status, OriginId=document.origin_id,
        Sha1=sha1, InqomChecksum=document.checksum, UploadedAt=iso(now), ClaimUntil=None, LastError=None,
        NextPollAt=now + PollPolicy.from_settings(settings).first_poll(), Polls=0,
    )
    log.info("uploaded %s (ledger %s) to Inqom folder %s as document %s (%s)",
             name, key, instruction.folder_id, document.id, document.status or "accepted")
    return UploadOutcome(key, state, document.id)


def _record_failure(ledger: Ledger, entry: LedgerEntry, error: str, retry_after_seconds: float) -> None:
    """Failed, to be retried by the host; the pending-index entry is a watchdog in case it is not."""
    try:
        ledger.update(entry, State=FAILED, LastError=error, ClaimUntil=None,
                      NextPollAt=ledger.clock() + timedelta(seconds=retry_after_seconds))
    except LedgerConflict:
        log.warning("ledger %s changed while recording a failure; the claim's watchdog stays", entry.key)


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


def _quarantine(services: Services, ledger: Ledger, partition: str, key: str, fields: dict, name: str,
                reason: str, entry: LedgerEntry | None) -> UploadOutcome:
    """Move the blob to quarantine (same relative path, reason in metadata) and record it."""
    settings = services.settings
    record = {"QuarantineReason": reason, "LastError": reason, "ClaimUntil": None, "NextPollAt": None}
    try:
        moved_to = move_blob(services.stores, settings.inbox_container, name, settings.quarantine_container,
                             extra_metadata={"reason": reason, "ledgerkey": key}, expected_etag=fields["BlobETag"])
        changes = {**record, "State": QUARANTINED, "QuarantinePath": f"{settings.quarantine_container}/{moved_to}"}
    except BlobReplaced:
        changes = {**record, "State": FAILED,
                   "LastError": f"{reason} — not quarantined: the file was replaced meanwhile; the new version has its own row"}
    except ResourceNotFoundError:
        if not services.stores.container(settings.quarantine_container).get_blob_client(name).exists():
            raise
        log.info("blob %s was already quarantined by a concurrent delivery", name)
        changes = {**record, "State": QUARANTINED, "QuarantinePath": f"{settings.quarantine_container}/{name}"}
    while True:
        try:
            if entry is None:
                ledger.insert(partition, key, {**fields, **changes})
            else:
                ledger.update(entry, **changes)
            break
        except LedgerConflict:
            entry = ledger.get(partition, key)
    log.warning("%s %s (ledger %s): %s", changes["State"].lower(), name, key, changes["LastError"])
    return UploadOutcome(key, changes["State"], reason=reason)
