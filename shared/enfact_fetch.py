"""enFact invoice → inbox blob, so the one upload path sends it to Inqom as a sales invoice.

    fetch_invoice(services, {"company_uuid": "...", "invoice_id": "5001", ...})   # queue message
    reconcile(services)                                                          # daily catch-up

The PDF is streamed from enFact into ``{folderId}/client/enfact-{invoiceId}.pdf`` in the inbox
with metadata ``source=enfact``, ``sourceid`` = enFact id, ``docref`` = invoice number. One
``enfact`` ledger row per invoice makes pushes, retries and reconcile idempotent: an invoice
already written to the inbox is never fetched again. Transient enFact errors raise (the queue
retries, then moves the message to ``<queue>-poison``); an invoice enFact does not know is
recorded ``Rejected`` with the reason instead.
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError

from .auth import EnfactApiKey
from .blobmove import metadata_text
from .enfact import EnfactClient
from .enfact_push import QUEUED, enfact_row_key
from .http import NotFoundError
from .ledger import ENFACT_PARTITION, LedgerConflict, LedgerEntry, iso, parse_iso
from .observability import bind
from .services import Services

log = logging.getLogger(__name__)

IN_INBOX = "InInbox"
REJECTED = "Rejected"
REQUEUE_AFTER = timedelta(hours=1)


def enfact_client(services: Services, company_uuid: str) -> EnfactClient:
    http = services.enfact_http.with_auth(EnfactApiKey(services.secrets, company_uuid))
    return EnfactClient(services.settings.enfact_api_base_url, http)


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


def fetch_invoice(services: Services, message: dict[str, Any]) -> str:
    """Handle one queue message; returns the state the invoice ends in."""
    company = str(message.get("company_uuid", "")).lower()
    invoice_id = str(message.get("invoice_id", ""))
    bind(enfact_id=invoice_id)
    folder = services.settings.enfact_company_folders.get(company)
    existing: LedgerEntry | None = services.ledger.get(ENFACT_PARTITION, enfact_row_key(company, invoice_id))
    if existing is not None and existing.state == IN_INBOX:
        log.info("enFact invoice %s of %s is already in the inbox (%s)", invoice_id, company, existing.get("InboxPath"))
        return IN_INBOX
    if folder is None:
        reason = "company is not mapped to an Inqom folder (ENFACT_COMPANY_FOLDERS)"
        _record(services, company, invoice_id, State=REJECTED, Reason=reason)
        log.error("enFact invoice %s of %s rejected: %s", invoice_id, company, reason)
        return REJECTED
    enfact = enfact_client(services, company)
    try:
        detail = enfact.get_invoice(invoice_id)
        pdf = enfact.invoice_pdf(invoice_id)
    except NotFoundError as exc:
        _record(services, company, invoice_id, State=REJECTED, Reason=str(exc))
        log.error("enFact invoice %s of %s rejected: %s", invoice_id, company, exc)
        return REJECTED
    number = str(detail.get("number") or detail.get("invoice_number") or "").strip()
    blob_name = f"{folder}/client/enfact-{invoice_id}.pdf"
    metadata = {"source": "enfact", "sourceid": invoice_id, "enfactid": invoice_id, "enfactcompany": company}
    if number:
        metadata["docref"] = metadata_text(number)  # blob metadata is ASCII; routing decodes it
    inbox = services.stores.container(services.settings.inbox_container)
    try:
        inbox.upload_blob(blob_name, pdf, metadata=metadata, overwrite=False, max_concurrency=1)
    except ResourceExistsError:
        log.info("enFact invoice %s already has its inbox blob %s", invoice_id, blob_name)
    _record(services, company, invoice_id, State=IN_INBOX, InboxPath=blob_name, Number=number or None,
            InvoiceDate=str(detail.get("date") or "") or None, Source=message.get("source"))
    log.info("enFact invoice %s (%s) of %s written to inbox as %s", invoice_id, number, company, blob_name)
    return IN_INBOX


def _needs_queueing(entry: LedgerEntry | None, now) -> bool:
    """Never seen, or queued long ago and still not in the inbox (its message went to the poison queue)."""
    if entry is None:
        return True
    queued_at = parse_iso(entry.get("UpdatedAt"))
    return entry.state == QUEUED and queued_at is not None and now - queued_at > REQUEUE_AFTER


def _invoice_date(summary: dict[str, Any]) -> date | None:
    try:
        return date.fromisoformat(str(summary.get("date", ""))[:10])
    except ValueError:
        return None


def reconcile(services: Services, days: int | None = None) -> int:
    """Queue every recent invoice that never reached the inbox (a missed push); returns how many.

    The window is also applied to each invoice's own ``date``: the list's ``date_from`` filter is not
    in enFact's public documentation, and an API ignoring it must not send years of history to Inqom.
    """
    settings = services.settings
    now = services.ledger.clock()
    since = (now - timedelta(days=days or settings.enfact_reconcile_days)).date()
    queued = 0
    for company in settings.enfact_company_folders:
        for summary in enfact_client(services, company).iter_invoices(date_from=since):
            invoice_id = str(summary.get("id", ""))
            invoice_date = _invoice_date(summary)
            if not invoice_id or invoice_date is None or invoice_date < since:
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
