"""enFact invoice → inbox blob, so the one upload path sends it to Inqom as a sales invoice.

    fetch_invoice(services, {"company_uuid": "...", "invoice_id": "5001", ...})   # queue message
    reconcile(services)                                                          # daily catch-up

The PDF is streamed into ``{folderId}/client/enfact-{invoiceId}.pdf`` (metadata ``source=enfact``,
``sourceid``, ``docref``). One ``enfact`` row per invoice (``Writing`` with a lease, then ``InInbox``)
makes pushes, retries and reconcile idempotent. Transient enFact errors raise (the queue retries,
then ``<queue>-poison``); an unknown invoice or an invalid id is recorded ``Rejected``. Reconcile
queues listed invoices never queued, stuck past ``REQUEUE_AFTER`` or once ``Rejected``; a company
whose list fails is skipped, then ``ReconcileError`` marks the run failed.
Why: docs/guarantee.md.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from azure.core.exceptions import ResourceExistsError

from shared.auth import EnfactApiKey
from shared.blobmove import metadata_text, within_metadata_limit
from shared.drop.structured import channel_metadata
from shared.enfact.client import EnfactClient, invoice_id_of
from shared.enfact.push import QUEUED, enfact_row_key
from shared.http import ApiError, NotFoundError
from shared.ledger.rows import ENFACT_PARTITION, Ledger, LedgerConflict, LedgerEntry, iso, parse_iso, partition_for
from shared.observability import bind
from shared.services import Services

log = logging.getLogger(__name__)

WRITING = "Writing"  # the inbox blob may be written (at ``InboxPath``): a retry checks before writing again
IN_INBOX = "InInbox"
REJECTED = "Rejected"
REQUEUE_AFTER = timedelta(hours=1)
#: How long a ``Writing`` row belongs to the message that wrote it: longer than host.json's
#: functionTimeout (10 min), so a writer is done or dead when another takes over; a writer whose
#: fetch left less than ``WRITE_MARGIN`` of it writes nothing (clocks may differ by that much).
WRITE_LEASE = timedelta(minutes=15)
WRITE_MARGIN = timedelta(minutes=5)
_SHOWN_ID = 80  # characters of an odd id quoted in a log line
#: Inbox metadata of an enFact invoice that its business key does not need.
_INFORMATIONAL = ("buyername", "buyervat", "invoicedate", "invoicecurrency")


class ReconcileError(RuntimeError):
    """enFact could not be read for some companies (the others were reconciled)."""


def enfact_client(services: Services, company_uuid: str) -> EnfactClient:
    http = services.enfact_http.with_auth(EnfactApiKey(services.secrets, company_uuid))
    return EnfactClient(services.settings.enfact_api_base_url, http)


def _shown(value: Any) -> str:
    """An id from outside, quoted and escaped for a log line, and short."""
    return repr(str(value)[:_SHOWN_ID])


def _record(services: Services, company: str, invoice_id: str, **fields: Any) -> None:
    ledger = services.ledger
    key = enfact_row_key(company, invoice_id)
    while True:
        entry = ledger.get(ENFACT_PARTITION, key)
        try:
            if entry is None:
                ledger.insert(ENFACT_PARTITION, key, {"InvoiceId": invoice_id, "CompanyUuid": company, **fields})
            else:
                ledger.update(entry, **fields)
            return
        except LedgerConflict:
            continue


def _mark_writing(ledger: Ledger, entry: LedgerEntry | None, company: str, invoice_id: str, blob_name: str,
                  writer: str) -> LedgerEntry:
    """Intent before the write, conditional on the row as read (``LedgerConflict``: it changed meanwhile)."""
    intent = {"State": WRITING, "InboxPath": blob_name, "Writer": writer,
              "WritingUntil": iso(ledger.clock() + WRITE_LEASE)}
    if entry is None:
        return ledger.insert(ENFACT_PARTITION, enfact_row_key(company, invoice_id),
                             {"InvoiceId": invoice_id, "CompanyUuid": company, **intent})
    return ledger.update(entry, **intent)


def _written_by_another(entry: LedgerEntry | None, writer: str, now: datetime) -> bool:
    """Another message is writing this invoice and its lease still runs."""
    if entry is None or entry.state != WRITING or entry.get("Writer") in (None, "", writer):
        return False
    until = parse_iso(entry.get("WritingUntil"))
    return until is not None and until > now


def _written(services: Services, blob_name: str) -> bool:
    """Whether an earlier attempt's blob reached the inbox: still there, or known to the upload path.

    The blob is checked first: once it is gone from the inbox, its document row already exists.
    """
    inbox = services.stores.container(services.settings.inbox_container)
    if inbox.get_blob_client(blob_name).exists():
        return True
    rows = services.ledger.scan("PartitionKey eq @f and BlobPath eq @p", f=partition_for(blob_name), p=blob_name)
    return next(rows, None) is not None


def fetch_invoice(services: Services, message: dict[str, Any], delivery_id: str | None = None) -> str:
    """Handle one queue message (``delivery_id``: the queue message's id); returns the invoice's state."""
    company = str(message.get("company_uuid", "")).lower()
    invoice_id = invoice_id_of(message.get("invoice_id"))
    if invoice_id is None:
        given = str(message.get("invoice_id"))
        reason = "not an enFact invoice id (letters, digits, - or _)"
        _record(services, company, given, State=REJECTED, Reason=reason)
        log.error("enFact invoice %s of %s rejected: %s", _shown(given), _shown(company), reason)
        return REJECTED
    bind(enfact_id=invoice_id)
    writer = delivery_id or uuid.uuid4().hex
    while True:
        try:
            return _fetch(services, company, invoice_id, message.get("source"), writer)
        except LedgerConflict:  # another delivery of this invoice moved its row: decide again
            log.info("enFact invoice %s: its ledger row changed meanwhile; looking again", invoice_id)


def _fetch(services: Services, company: str, invoice_id: str, source: str | None, writer: str) -> str:
    ledger = services.ledger
    folder = services.settings.enfact_company_folders.get(company)
    existing = ledger.get(ENFACT_PARTITION, enfact_row_key(company, invoice_id))
    if _written_by_another(existing, writer, ledger.clock()):
        log.info("enFact invoice %s of %s is being written by another message until %s; left to it",
                 invoice_id, company, existing.get("WritingUntil"))
        return WRITING
    if existing is not None and existing.state == IN_INBOX:
        log.info("enFact invoice %s of %s is already in the inbox (%s)", invoice_id, company, existing.get("InboxPath"))
        return IN_INBOX
    if existing is not None and existing.get("InboxPath") and _written(services, existing.get("InboxPath")):
        services.ledger.update(existing, State=IN_INBOX)
        log.info("enFact invoice %s of %s was written before (%s); not written again",
                 invoice_id, company, existing.get("InboxPath"))
        return IN_INBOX
    if folder is None:
        reason = "company is not mapped to an Inqom folder (ENFACT_COMPANY_FOLDERS)"
        _record(services, company, invoice_id, State=REJECTED, Reason=reason)
        log.error("enFact invoice %s of %s rejected: %s", invoice_id, _shown(company), reason)
        return REJECTED
    enfact = enfact_client(services, company)
    blob_name = f"{folder}/client/enfact-{invoice_id}.pdf"
    try:
        detail = enfact.get_invoice(invoice_id)
        marked = _mark_writing(ledger, existing, company, invoice_id, blob_name, writer)
        pdf = enfact.invoice_pdf(invoice_id)
    except NotFoundError as exc:
        _record(services, company, invoice_id, State=REJECTED, Reason=str(exc))
        log.error("enFact invoice %s of %s rejected: %s", invoice_id, company, exc)
        return REJECTED
    current = ledger.get(ENFACT_PARTITION, marked.key)
    lease_left = (parse_iso(marked.get("WritingUntil")) or ledger.clock()) - ledger.clock()
    if current is None or current.etag != marked.etag or lease_left < WRITE_MARGIN:
        log.warning("enFact invoice %s of %s: its row changed (or the lease ran short) while the PDF was fetched; "
                    "nothing written by this message", invoice_id, company)
        return current.state if current is not None and current.state else WRITING
    number = str(detail.get("number_formatted") or detail.get("number") or detail.get("invoice_number") or "").strip()
    terms = invoice_metadata(services, company, number, detail)
    # What the business key needs is kept whole; the rest gives way to the service's 8 KiB if it must.
    informational = {name: terms.pop(name) for name in _INFORMATIONAL if name in terms}
    if number:
        informational["docref"] = metadata_text(number)  # blob metadata is ASCII; routing decodes it
    metadata = within_metadata_limit(informational, {"source": "enfact", "sourceid": invoice_id, "enfactid": invoice_id,
                                                     "enfactcompany": company, **terms})
    inbox = services.stores.container(services.settings.inbox_container)
    try:
        inbox.upload_blob(blob_name, pdf, metadata=metadata, overwrite=False, max_concurrency=1)
    except ResourceExistsError:
        log.info("enFact invoice %s already has its inbox blob %s", invoice_id, blob_name)
    ledger.update(current, State=IN_INBOX, InboxPath=blob_name, Number=number or None, Writer=None,
                  WritingUntil=None, InvoiceDate=str(detail.get("date") or "") or None, Source=source)
    log.info("enFact invoice %s (%s) of %s written to inbox as %s", invoice_id, number, company, blob_name)
    return IN_INBOX


def invoice_metadata(services: Services, company: str, number: str, detail: dict[str, Any]) -> dict[str, str]:
    """The invoice's terms for its business key (``shared.drop.duplicates``): the company is the seller,
    named by ``ENFACT_SELLER_IDS`` (a VAT id, one starting with its country code, or a legal id);
    ``total`` (or ``total_incl``) includes VAT; the endpoint holds invoices (380)."""
    customer = detail.get("customer") if isinstance(detail.get("customer"), dict) else {}
    total = detail.get("total_incl", detail.get("total"))
    seller = services.settings.enfact_seller_ids.get(company.lower())
    is_vat = bool(seller) and seller[:2].isalpha()
    return channel_metadata({
        "invoicenumber": number, "invoicetype": "380", "invoicedate": str(detail.get("date") or "")[:10],
        "invoicecurrency": detail.get("currency"), "invoicetotal": _amount_text(total),
        "sellervat" if is_vat else "sellerid": seller,
        "buyername": customer.get("name"), "buyervat": customer.get("vat"),
    })


def _amount_text(value: Any) -> str | None:
    """A JSON number as the decimal it was written as (121.0 → "121.0"); a bool or non-number → None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return str(amount) if amount.is_finite() else None


def _needs_queueing(entry: LedgerEntry | None, now: datetime) -> bool:
    """Never seen; ``Rejected`` once (enFact lists it now, so it exists); or queued (or being written)
    long ago and still not in the inbox (its message went to the poison queue)."""
    if entry is None or entry.state == REJECTED:
        return True
    since = parse_iso(entry.get("UpdatedAt"))
    return entry.state in (QUEUED, WRITING) and since is not None and now - since > REQUEUE_AFTER


def _invoice_date(summary: dict[str, Any]) -> date | None:
    try:
        return date.fromisoformat(str(summary.get("date", ""))[:10])
    except ValueError:
        return None


def _reconcile_company(services: Services, company: str, since: date, now: datetime) -> int:
    queued = 0
    for summary in enfact_client(services, company).iter_invoices(date_from=since):
        if not isinstance(summary, dict):
            log.warning("reconcile: enFact listed a non-object for %s; skipped", company)
            continue
        invoice_id = invoice_id_of(summary.get("id"))
        if invoice_id is None:
            log.warning("reconcile: enFact listed invoice id %s for %s, not an enFact invoice id; skipped",
                        _shown(summary.get("id")), company)
            continue
        invoice_date = _invoice_date(summary)
        if invoice_date is None or invoice_date < since:
            continue
        if not _needs_queueing(services.ledger.get(ENFACT_PARTITION, enfact_row_key(company, invoice_id)), now):
            continue
        message = {"company_uuid": company, "invoice_id": invoice_id, "event": "reconcile",
                   "received_at": iso(now), "source": "reconcile"}
        services.enfact_queue.send_message(json.dumps(message))
        _record(services, company, invoice_id, State=QUEUED, Source="reconcile")
        queued += 1
        log.info("reconcile: enFact invoice %s of %s is not in the inbox; queued", invoice_id, company)
    return queued


def reconcile(services: Services, days: int | None = None) -> int:
    """Queue every recent invoice that never reached the inbox (a missed push); returns how many.

    The window is also applied to each invoice's own ``date``: the list's ``date_from`` filter is not
    in enFact's public documentation, and an API ignoring it must not send years of history to Inqom.
    ``ReconcileError`` after all companies were tried, when enFact failed for some of them.
    """
    settings = services.settings
    now = services.ledger.clock()
    since = (now - timedelta(days=days or settings.enfact_reconcile_days)).date()
    queued = 0
    failed: list[str] = []
    for company in settings.enfact_company_folders:
        try:
            queued += _reconcile_company(services, company, since, now)
        except ApiError as exc:
            failed.append(company)
            log.error("reconcile: enFact invoices of %s could not be read: %s", company, exc)
    if failed:
        raise ReconcileError(f"enFact could not be read for {len(failed)} of {len(settings.enfact_company_folders)} "
                             f"companies ({', '.join(failed)}); {queued} invoice(s) of the others queued")
    return queued
