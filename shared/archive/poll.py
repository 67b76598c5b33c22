"""Poll → archive: follow due documents in Inqom and archive the originals once processed.

    report = poll_tick(services)          # one timer tick; POLL_WORKERS threads over the due rows
    report.examined, report.archived, report.cut_short

A tick reads the oldest due entries of the pending index, claims each row (one ETag write naming
its due time), asks Inqom for the status and acts: poll again later (``PollPolicy``); ``Done`` or
``Duplicate``: archive a SHA-1-verified, create-only copy at ``{folder}/{yyyy}/{mm}/{inqomId}-{name}``
with metadata and index tags (``shared.archive.tags``, the e-invoice's too), note where Inqom's reading
disagrees with the e-invoice (``shared.archive.audit``), then delete the inbox blob; ``Deleted``/
``Rejected``: quarantine. Rows left ``Failed``/``Uploading`` (upload watchdog) or ``Quarantining`` are
driven from here too, every call runs under the tick's deadline, and the repair sweep ends the tick.
Why: docs/keeping-pace.md, docs/archive.md, docs/guarantee.md.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import logging
import re
import threading
import time
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterator

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError,
)

from shared.archive.audit import audit_ocr
from shared.archive.tags import ArchiveFields, EInvoiceFacts, archive_tags
from shared.blobmove import BlobGone, BlobReplaced, metadata_text, move_blob
from shared.inqom.budget import MAX_SHARED_HOLD, priority
from shared.http import DeadlineExceeded, ForbiddenError, ThrottledError, deadline, time_left
from shared.inqom.client import InqomDocument
from shared.ledger.rows import (
    ARCHIVED, DELETED, DUPLICATE, FAILED, QUARANTINING, STALE, SUPERSEDED, UPLOADED, UPLOADING, DueItem, Ledger,
    LedgerConflict, LedgerEntry, iso, parse_iso,
)
from shared import metrics
from shared.observability import error_text, log_context
from shared.inqom.polling import PollPolicy, is_known_status
from shared.ledger.quarantine import finish_quarantine, quarantine_document
from shared.archive.repair import SweepReport, repair_sweep
from shared.services import Services

log = logging.getLogger(__name__)

POLLABLE_STATES = frozenset({UPLOADED, DUPLICATE, STALE, FAILED, UPLOADING, QUARANTINING})
ARCHIVE_BLOCK = 4 * 1024 * 1024
WATCHDOG_UPLOAD_BYTES_PER_SECOND = 2 * 1024 * 1024
CLAIM_LEASE = timedelta(minutes=10)
_UNKNOWN_STATUSES_KEPT = 16  # per row: the column stays small whatever Inqom answers
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, limit: int = 150) -> str:
    """ASCII file name for the archive path: accents folded, anything else replaced by '_'."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("_", folded).strip("._") or "document"
    if len(cleaned) > limit:
        stem, dot, ext = cleaned.rpartition(".")
        cleaned = (stem[: limit - len(ext) - 1] + "." + ext) if dot and len(ext) < 10 else cleaned[:limit]
    return cleaned


@dataclass
class TickReport:
    examined: int = 0
    polled: int = 0
    archived: int = 0
    skipped: int = 0
    stale_index: int = 0
    cut_short: int = 0
    unknown_status: int = 0
    untagged: int = 0
    errors: list[str] = field(default_factory=list)
    out_of_time: bool = False
    throttled: bool = False
    sweep: SweepReport | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + amount)


class ChecksumMismatch(Exception):
    pass


class ArchivePathTaken(Exception):
    """The document's archive path holds another document's blob (never overwritten)."""


def poll_tick(services: Services, now: datetime | None = None) -> TickReport:
    """One timer tick: ``POLL_WORKERS`` threads work through the due rows until the tick's budget is spent.

    Every Inqom call in the tick runs under a deadline (what is left of ``POLL_TICK_BUDGET_SECONDS``,
    reads capped at ``POLL_TICK_GRACE_SECONDS``); a row cut short is released, its due time intact,
    for the next tick. Rows not reached stay due. The repair sweep ends the tick if time is left.
    """
    settings = services.settings
    ledger = services.ledger
    policy = PollPolicy.from_settings(settings)
    ends = time.monotonic() + settings.poll_tick_budget
    now = now or ledger.clock()
    report = TickReport()
    items = iter(ledger.due(now, settings.poll_batch_size))
    items_lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            if time.monotonic() >= ends:
                report.out_of_time = True
                return
            with items_lock:
                item = next(items, None)
            if item is None:
                return
            with deadline(ends, read_cap=settings.poll_tick_grace), priority("poll"):
                outcome = _handle(services, ledger, policy, item, now, report)
            if outcome == "throttled":
                stop.set()  # Inqom asked the whole client to wait: the rest of the tick waits too
            if outcome == "cut short":
                report.out_of_time = True
                return  # what is left of the tick cannot finish a row: claiming more would only churn

    with ThreadPoolExecutor(settings.poll_workers, thread_name_prefix="poll") as pool:
        # Each worker runs in a copy of this context: the invocation id reaches its log lines.
        for future in [pool.submit(contextvars.copy_context().run, worker) for _ in range(settings.poll_workers)]:
            future.result()
    if report.out_of_time:
        log.warning("poll tick used its %.0fs budget; the rest waits for the next tick", settings.poll_tick_budget)
    if time.monotonic() < ends:
        report.sweep = repair_sweep(services, now)
        metrics.pending(*ledger.pending_stats(now))
    return report


def _handle(services: Services, ledger: Ledger, policy: PollPolicy, item: DueItem, now: datetime,
            report: TickReport) -> str:
    """Claim one due row and follow it; returns what happened (for the tick's control, not for counting)."""
    report.add("examined")
    entry = ledger.get(item.partition, item.key)
    if entry is None or entry.next_poll != item.due or entry.state not in POLLABLE_STATES:
        ledger.drop_index(item)
        report.add("stale_index")
        return "stale"
    if entry.get("PollClaimFor") == entry.get("NextPollAt") and (parse_iso(entry.get("PollClaimUntil")) or now) > now:
        report.add("skipped")  # another tick is working on it
        return "skipped"
    try:
        entry = ledger.update(entry, PollClaimFor=entry.get("NextPollAt"), PollClaimUntil=iso(now + CLAIM_LEASE))
    except LedgerConflict:
        report.add("skipped")  # another tick claimed it first
        return "skipped"
    with log_context(ledger_key=entry.key, inqom_id=entry.get("InqomId"), enfact_id=entry.get("EnfactId")):
        try:
            _follow(services, ledger, policy, entry, now, report)
        except DeadlineExceeded:
            _release(ledger, entry, now)
            report.add("cut_short")
            return "cut short"
        except ThrottledError as exc:  # not this row's fault: due again when Inqom said
            _record_throttled(ledger, entry, exc, now)
            report.throttled = True
            return "throttled"
        except Exception as exc:  # one bad row must not stop the tick; its claim lapses with the lease
            log.exception("poll of ledger %s failed", entry.key)
            with report._lock:
                report.errors.append(f"{entry.key}: {error_text(exc)}")
            _record_error(ledger, policy, entry, exc, now)
            return "error"
    return "done"


def _release(ledger: Ledger, entry: LedgerEntry, now: datetime) -> None:
    """The tick ran out of time on this row: its poll claim ends now, its due time stays."""
    log.info("ledger %s: cut short by the tick's deadline; released for the next tick", entry.key)
    try:
        ledger.update(entry, PollClaimUntil=iso(now))
    except LedgerConflict:
        pass  # changed meanwhile (e.g. the watchdog's upload recorded its own outcome)


def _follow(services: Services, ledger: Ledger, policy: PollPolicy, entry: LedgerEntry, now: datetime,
            report: TickReport) -> None:
    if entry.state in (FAILED, UPLOADING):  # due only when the host did not finish the upload
        _retry_upload(services, ledger, entry)
        return
    if entry.state == QUARANTINING:  # the worker that decided it died before the move was done
        finish_quarantine(services, entry)
        return
    folder = int(entry.get("FolderId") or entry.partition)
    inqom_id = int(entry.get("InqomId"))
    document = services.inqom.get_document(folder, inqom_id)
    report.add("polled")
    polls = int(entry.get("Polls") or 0) + 1
    reasons = ",".join(document.status_reasons)
    if reasons:
        log.warning("Inqom document %s (ledger %s) is %s with reasons %s", inqom_id, entry.key, document.status, reasons)
    observed = {"InqomStatus": document.status, "StatusReasons": reasons or None, "Polls": polls,
                "LastPolledAt": iso(now), "InqomChecksum": document.checksum or entry.get("InqomChecksum")}

    if document.status == "Done":
        _archive(services, ledger, policy, entry, document, None, observed, now, report)
    elif document.status == "Duplicate":
        if document.origin_id is None:
            _reschedule(ledger, entry, observed, now + policy.next_delay(document.status, polls),
                        "Inqom marks it Duplicate without an OriginId; waiting")
            return
        observed["OriginId"] = document.origin_id
        _archive(services, ledger, policy, entry, document, document.origin_id, observed, now, report)
    elif document.status in ("Deleted", "Rejected"):
        if not _finish_archived(services, ledger, entry, document, observed, now, report):
            _set_aside(services, ledger, entry, document, observed)
    else:
        status = document.status
        if not is_known_status(status):
            status = _note_unknown_status(entry, document, observed, policy, report)
        uploaded = parse_iso(entry.get("UploadedAt")) or now
        if now - uploaded > timedelta(hours=services.settings.poll_max_age_hours) and entry.state != STALE:
            observed["State"] = STALE
            log.warning("ledger %s: Inqom document %s still %s after %.0f hours; flagged Stale",
                        entry.key, inqom_id, status, (now - uploaded).total_seconds() / 3600)
        ledger.update(entry, **observed, NextPollAt=now + policy.next_delay(status, polls))
        if observed.get("State") == STALE:
            metrics.document_outcome(metrics.STALE)


def _note_unknown_status(entry: LedgerEntry, document: InqomDocument, observed: dict, policy: PollPolicy,
                         report: TickReport) -> str:
    """A status the spec does not name: logged the first time this document answers it, then only counted.

    The statuses already logged are remembered on the row (``UnknownStatusLogged``, comma-separated), so
    the warning appears once per document and status, whatever the number of polls or workers. Returns the
    name the poll cadence is chosen by (the slow review cadence for any unknown status, a missing one too).
    """
    status = document.status or "(none)"
    remembered = status[:64].replace(",", " ")  # as the comma-separated column holds it
    report.add("unknown_status")
    logged = [s for s in str(entry.get("UnknownStatusLogged") or "").split(",") if s]
    if remembered not in logged:
        log.warning("Inqom document %s (ledger %s) has status %r, which Inqom's documentation does not name; "
                    "it is followed every %.0f s until it becomes one the bridge knows",
                    document.id, entry.key, status[:64], policy.review_interval)
        observed["UnknownStatusLogged"] = ",".join([*logged, remembered][-_UNKNOWN_STATUSES_KEPT:])
    return status


def _retry_upload(services: Services, ledger: Ledger, entry: LedgerEntry) -> None:
    """Watchdog: an upload that failed, or whose worker died, and that the host did not finish in time."""
    from shared.drop.upload import upload_inbox_blob

    blob = services.stores.container(entry.get("Container")).get_blob_client(entry.get("BlobPath"))
    try:
        current_etag = blob.get_blob_properties().etag.strip('"')
    except ResourceNotFoundError:
        current_etag = None
    if current_etag != entry.get("BlobETag"):
        ledger.update(entry, State=SUPERSEDED, NextPollAt=None, ClaimUntil=None,
                      LastError=f"{entry.get('LastError') or ''} — superseded: the inbox blob was replaced or "
                      "removed before it was sent; any new version has its own row".lstrip(" —"))
        return
    left = time_left()
    if left is not None and left < _upload_seconds(int(entry.get("Size") or 0)):
        raise DeadlineExceeded("inqom", "not enough of the tick left to send the file; the next tick will")
    log.warning("ledger %s: upload left %s by the host; retrying it from the poller", entry.key, entry.state)
    # The row keeps its due time until the upload's claim moves it: a crash here loses nothing.
    upload_inbox_blob(services, blob)


def _upload_seconds(size: int) -> float:
    """A cautious guess of an upload's duration: a watchdog upload starts only if the tick has that left."""
    return 5.0 + size / WATCHDOG_UPLOAD_BYTES_PER_SECOND


def _reschedule(ledger: Ledger, entry: LedgerEntry, observed: dict, due: datetime, error: str) -> None:
    log.warning("ledger %s: %s", entry.key, error)
    ledger.update(entry, **observed, LastError=error, NextPollAt=due)


def _record_throttled(ledger: Ledger, entry: LedgerEntry, exc: ThrottledError, now: datetime) -> None:
    """Throttling is no error: no ``Errors`` count, no backoff growth; due again once Inqom allows."""
    due = now + timedelta(seconds=min(exc.retry_after or 60, MAX_SHARED_HOLD))
    log.warning("Inqom throttles the poller; ledger %s and the rest of this tick wait until %s", entry.key, iso(due))
    try:
        ledger.update(entry, NextPollAt=due, LastError=f"throttled by Inqom until {iso(due)}")
    except LedgerConflict:
        pass


def _record_error(ledger: Ledger, policy: PollPolicy, entry: LedgerEntry, exc: Exception, now: datetime) -> None:
    """Keep the error on the row and try again later, backing off as errors repeat (404, revoked rights…).

    Written against the version this tick claimed: a row someone changed since (the host's retry
    of an upload, our own watchdog upload) is theirs, with their own due time.
    """
    errors = int(entry.get("Errors") or 0) + 1
    try:
        ledger.update(entry, LastError=error_text(exc), Errors=errors, NextPollAt=now + policy.next_delay(None, errors))
    except LedgerConflict:
        pass


def _archive(services: Services, ledger: Ledger, policy: PollPolicy, entry: LedgerEntry, document: InqomDocument,
             origin_id: int | None, observed: dict, now: datetime, report: TickReport) -> None:
    settings = services.settings
    if not document.checksum:
        _reschedule(ledger, entry, observed, now + policy.next_delay(None, int(observed["Polls"])),
                    "Inqom gives no Checksum; the original cannot be verified, so it is not archived yet")
        return
    archive_path = archive_path_for(entry, now)
    archive_blob = services.stores.container(settings.archive_container).get_blob_client(archive_path)
    fields = ArchiveFields.from_document(document)
    einvoice = EInvoiceFacts.from_row(entry)
    observed = {**observed, **fields.ledger_columns()}
    metadata = archive_metadata(entry, document, fields, einvoice, origin_id)
    tags = archive_tags(entry.get("FolderId") or entry.partition, entry.get("Kind"), entry.get("InqomId"), fields,
                        einvoice)
    try:
        copy = _archived_copy(archive_blob, entry) or _write_archive(
            archive_blob, _source_chunks(services, entry, document), metadata, document.checksum.upper(), entry,
            tags)
    except ChecksumMismatch as exc:
        errors = int(entry.get("ChecksumMismatches") or 0) + 1
        _reschedule(ledger, entry, {**observed, "ChecksumMismatches": errors},
                    now + policy.next_delay(None, errors), str(exc))
        return
    sha1, tagged = copy
    if tagged:
        observed["TaggedAt"] = iso(ledger.clock())
    else:
        report.add("untagged")
    note = _release_inbox_blob(services, entry, sha1)
    audit = audit_ocr(fields, einvoice, entry.get("Kind"))
    ledger.update(entry, **observed, **audit.ledger_columns(), State=ARCHIVED,
                  ArchivePath=f"{settings.archive_container}/{archive_path}", ArchivedSha1=sha1,
                  ArchivedAt=iso(ledger.clock()), NextPollAt=None, LastError=note)
    report.add("archived")
    metrics.document_outcome(metrics.ARCHIVED)
    if audit.fields:
        log.info("ledger %s: Inqom's reading disagrees with the e-invoice: %s", entry.key, audit.detail)
        for name in audit.fields:
            metrics.ocr_disagreement(name)
    log.info("archived ledger %s (Inqom %s) to %s", entry.key, document.id, archive_path)


def archive_metadata(entry: LedgerEntry, document: InqomDocument, fields: ArchiveFields, einvoice: EInvoiceFacts,
                     origin_id: int | None) -> dict[str, str]:
    """The archive copy's metadata: ours, the original extracted values and the e-invoice's, within 8 KiB."""
    metadata = {
        "inqomid": str(document.id), "inqomstatus": metadata_text(document.status or ""), "checksum": document.checksum.upper(),
        "sourcepath": metadata_text(f"{entry.get('Container')}/{entry.get('BlobPath')}"), "ledgerkey": entry.key,
        **fields.metadata(), **einvoice.metadata(),
    }
    if origin_id is not None:
        metadata["originid"] = str(origin_id)
    return metadata


def _finish_archived(services: Services, ledger: Ledger, entry: LedgerEntry, document: InqomDocument,
                     observed: dict, now: datetime, report: TickReport) -> bool:
    """A tick that committed this document's archive copy died before recording it, and Inqom has since
    deleted (or rejected) the document: our verified copy stands, so the row ends ``Archived`` with
    ``InqomStatus`` saying what Inqom did. False when there is no such copy."""
    settings = services.settings
    archive_path = archive_path_for(entry, now)
    copy = _archived_copy(services.stores.container(settings.archive_container).get_blob_client(archive_path), entry)
    if copy is None:
        return False
    sha1, tagged = copy
    note = _release_inbox_blob(services, entry, sha1)
    ledger.update(entry, **observed, State=ARCHIVED, ArchivePath=f"{settings.archive_container}/{archive_path}",
                  ArchivedSha1=sha1, ArchivedAt=iso(ledger.clock()), NextPollAt=None,
                  LastError=note or f"{document.status} in Inqom after its verified copy was archived")
    report.add("archived")
    if not tagged:
        report.add("untagged")
    metrics.document_outcome(metrics.ARCHIVED)
    log.warning("ledger %s: Inqom document %s is %s, but its verified copy was already archived at %s; "
                "kept as Archived", entry.key, document.id, document.status, archive_path)
    return True


def archive_path_for(entry: LedgerEntry, now: datetime) -> str:
    """``{folder}/{yyyy}/{mm}/{inqomId}-{name}``: the row's own Inqom id makes it unique per document."""
    uploaded = parse_iso(entry.get("UploadedAt")) or now
    original = entry.get("BlobPath", "").rsplit("/", 1)[-1]
    return f"{entry.partition}/{uploaded:%Y}/{uploaded:%m}/{int(entry.get('InqomId'))}-{safe_name(original)}"


def _release_inbox_blob(services: Services, entry: LedgerEntry, archived_sha1: str) -> str | None:
    """Delete the inbox original now that a verified copy is archived — unless it is not the same file.

    When the bytes we sent (``Sha1``) differ from Inqom's copy, the original is kept in quarantine
    beside the archived copy, and the returned note says why.
    """
    settings = services.settings
    container = entry.get("Container") or settings.inbox_container
    sent_sha1 = entry.get("Sha1")
    try:
        if sent_sha1 and sent_sha1.upper() != archived_sha1:
            note = (f"Inqom's copy (SHA-1 {archived_sha1}) differs from the file sent (SHA-1 {sent_sha1}); "
                    "original kept in quarantine")
            moved = move_blob(services.stores, container, entry.get("BlobPath"), settings.quarantine_container,
                              owner=entry.key, extra_metadata={"reason": note, "ledgerkey": entry.key},
                              expected_etag=entry.get("BlobETag"))
            log.warning("ledger %s: %s", entry.key, note)
            return f"{note} at {settings.quarantine_container}/{moved}"
        services.stores.container(container).get_blob_client(entry.get("BlobPath")).delete_blob(
            etag=f'"{entry.get("BlobETag")}"', match_condition=MatchConditions.IfNotModified)
    except (ResourceNotFoundError, BlobGone):
        pass
    except (ResourceModifiedError, BlobReplaced):
        log.warning("ledger %s: inbox blob was replaced after upload; the new version stays for its own trigger", entry.key)
    return None


def _archived_copy(archive_blob, entry: LedgerEntry) -> tuple[str, bool] | None:
    """This document's own archive copy when it was already committed (a tick that died after it):
    its SHA-1 and whether it carries index tags."""
    try:
        existing = archive_blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
    if existing.metadata.get("ledgerkey") != entry.key:
        raise ArchivePathTaken(f"archive path {archive_blob.blob_name} holds another document's copy; not overwritten")
    sha1 = (existing.metadata.get("checksum") or "").upper()
    return (sha1, bool(existing.tag_count)) if sha1 else None


def _write_archive(archive_blob, chunks: Iterator[bytes], metadata: dict[str, str], checksum: str,
                   entry: LedgerEntry, tags: dict[str, str] | None = None) -> tuple[str, bool]:
    """Stage the bytes as uncommitted blocks while hashing; commit them, create-only, only if the SHA-1 matches.

    Uncommitted blocks are invisible and expire on their own: a mismatch or a crash leaves nothing in
    the archive. The index ``tags`` are set by the commit itself (one create-only request: the copy
    never exists untagged, nor is it ever written twice). Returns the SHA-1 and whether the copy carries
    the tags; raises ``ChecksumMismatch`` when the SHA-1 differs from Inqom's.
    """
    hasher = hashlib.sha1()
    prefix = uuid.uuid4().hex[:16]
    block_ids: list[str] = []
    pending = bytearray()

    def stage(data: bytes) -> None:
        block_id = base64.b64encode(f"{prefix}{len(block_ids):08d}".encode()).decode()
        archive_blob.stage_block(block_id, bytes(data))
        block_ids.append(block_id)

    for chunk in chunks:
        hasher.update(chunk)
        pending += chunk
        while len(pending) >= ARCHIVE_BLOCK:
            stage(pending[:ARCHIVE_BLOCK])
            del pending[:ARCHIVE_BLOCK]
    if pending or not block_ids:
        stage(pending)
    sha1 = hasher.hexdigest().upper()
    if sha1 != checksum:
        raise ChecksumMismatch(f"downloaded bytes have SHA-1 {sha1}, Inqom's Checksum is {checksum}; "
                               "nothing archived, inbox blob kept, retrying later")
    try:
        tagged = _commit(archive_blob, block_ids, metadata, tags, entry)
    except ResourceExistsError:
        committed = _archived_copy(archive_blob, entry)  # a concurrent tick of ours committed first
        if committed is None:
            raise
        return committed
    return sha1, tagged


def _commit(archive_blob, block_ids: list[str], metadata: dict[str, str], tags: dict[str, str] | None,
            entry: LedgerEntry) -> bool:
    """Put Block List with ``If-None-Match: *`` (and the tags); whether the committed copy carries them.

    The tags are a convenience, the archive is the duty: when the service refuses the tagged commit
    with 400 or 403 (tags refused, or an identity without ``blobs/tags/write``), nothing was committed
    and the copy is committed again without them; ``backfill-tags`` can tag it later.
    """
    if tags:
        try:
            archive_blob.commit_block_list(block_ids, metadata=metadata, if_none_match="*", tags=tags)
            return True
        except ResourceExistsError:
            raise
        except HttpResponseError as exc:
            if exc.status_code not in (400, 403):
                raise
            log.warning("ledger %s: the archive refused the index tags (%s %s); committing the copy without them",
                        entry.key, exc.status_code, getattr(exc, "error_code", None) or "")
    archive_blob.commit_block_list(block_ids, metadata=metadata, if_none_match="*")
    return False


def _source_chunks(services: Services, entry: LedgerEntry, document: InqomDocument) -> Iterator[bytes]:
    """Inqom's copy via a fresh temporary URL (refetched once if expired), a duplicate's as any other's:
    the inbox file may have been replaced or removed since it was sent."""
    settings = services.settings
    folder = int(entry.get("FolderId") or entry.partition)
    for attempt in (1, 2):
        url = services.inqom.get_public_url(folder, document.id)
        try:
            chunks = services.inqom.download(url, settings.archive_allowed_hosts)
        except ForbiddenError:
            if attempt == 2:
                raise
            log.info("ledger %s: temporary URL refused (expired?); fetching a fresh one", entry.key)
            continue
        yield from chunks
        return


def _set_aside(services: Services, ledger: Ledger, entry: LedgerEntry, document: InqomDocument,
               observed: dict) -> None:
    """Deleted or Rejected in Inqom: final; the original goes to quarantine with the reason (row ``Deleted``)."""
    verb = "rejected by Inqom" if document.status == "Rejected" else "deleted in Inqom"
    reason = f"{verb} (document {document.id})"
    if observed.get("StatusReasons"):
        reason += f", reasons: {observed['StatusReasons']}"
    quarantine_document(services, entry.partition, entry.key, {}, reason, entry=ledger.update(entry, **observed),
                        final_state=DELETED)
