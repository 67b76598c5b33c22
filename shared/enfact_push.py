"""enFact push intake: authenticate, validate, de-duplicate, hand off to the queue — nothing slow.

    result = accept_push(services, request.headers, request.get_body())
    result.status, result.body          # 202 {"status": "accepted", ...} or 4xx {"error": ..., "reason": ...}

The push contract (README "enFact push contract"): ``POST /api/enfact/invoices`` with the
function key, ``Content-Type: application/json``, Standard Webhooks headers, and a body

    {"type": "invoice.created", "data": {"invoice_id": "5001", "company_uuid": "0b6a…"}}

Nothing in the body is fetched: the invoice is read later from enFact's own API by its id.
A repeated ``webhook-id`` is answered 200 ``{"status": "duplicate"}`` and not enqueued again
(so a sender's retry stops, and a captured request replayed within 5 minutes does nothing) —
unless the first attempt never reached the queue, which the absence of the invoice's ``enfact``
ledger row (written after the queue hand-off) shows: then it is queued now.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping

from azure.core.exceptions import AzureError

from .ledger import ENFACT_PARTITION, WEBHOOK_PARTITION, LedgerConflict, iso
from .observability import bind
from .secrets import ENFACT_WEBHOOK_SECRET
from .services import Services
from .webhook import SignatureError, verify_signature

log = logging.getLogger(__name__)

EVENT_TYPES = frozenset({"invoice.created", "invoice.updated"})
QUEUED = "Queued"  # state of an invoice's ``enfact`` ledger row once it is handed to the queue
_INVOICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_COMPANY_UUID = re.compile(r"[0-9a-fA-F-]{8,64}")


@dataclass(frozen=True)
class PushResult:
    status: int
    body: dict[str, Any]


def _error(status: int, error: str, reason: str) -> PushResult:
    return PushResult(status, {"error": error, "reason": reason})


def _validate(payload: Any, company_folders: Mapping[str, int]) -> tuple[str, str, str] | PushResult:
    if not isinstance(payload, dict):
        return _error(400, "invalid_payload", "body must be a JSON object")
    event = payload.get("type")
    if event not in EVENT_TYPES:
        return _error(400, "invalid_payload", f"type must be one of {sorted(EVENT_TYPES)}")
    data = payload.get("data")
    if not isinstance(data, dict):
        return _error(400, "invalid_payload", "data must be an object")
    invoice_id = data.get("invoice_id")
    if isinstance(invoice_id, int) and not isinstance(invoice_id, bool):
        invoice_id = str(invoice_id)
    if not isinstance(invoice_id, str) or not _INVOICE_ID.fullmatch(invoice_id):
        return _error(400, "invalid_payload", "data.invoice_id must be an enFact invoice id (letters, digits, - or _)")
    company = data.get("company_uuid")
    if not isinstance(company, str) or not _COMPANY_UUID.fullmatch(company):
        return _error(400, "invalid_payload", "data.company_uuid must be a company UUID")
    if company.lower() not in company_folders:
        return _error(400, "unknown_company", "this enFact company is not mapped to an Inqom folder (ENFACT_COMPANY_FOLDERS)")
    return event, invoice_id, company.lower()


def accept_push(services: Services, headers: Mapping[str, str], body: bytes) -> PushResult:
    settings = services.settings
    lowered = {k.lower(): v for k, v in headers.items()}
    declared = lowered.get("content-length", "")
    if len(body) > settings.webhook_max_body_bytes or (declared.isdigit() and int(declared) > settings.webhook_max_body_bytes):
        return _error(413, "payload_too_large", f"body is limited to {settings.webhook_max_body_bytes} bytes")
    media_type = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return _error(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        webhook_id = verify_signature(services.secrets.get(ENFACT_WEBHOOK_SECRET), headers, body)
    except SignatureError as exc:
        log.warning("enFact push refused: %s", exc)
        return _error(401, "invalid_signature", str(exc))
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "invalid_json", "body is not valid UTF-8 JSON")
    checked = _validate(payload, settings.enfact_company_folders)
    if isinstance(checked, PushResult):
        log.warning("enFact push %s refused: %s", webhook_id, checked.body["reason"])
        return checked
    event, invoice_id, company = checked
    bind(enfact_id=invoice_id)

    ledger = services.ledger
    try:
        ledger.insert(WEBHOOK_PARTITION, webhook_id, {"InvoiceId": invoice_id, "CompanyUuid": company, "Event": event})
    except LedgerConflict:
        if ledger.get(ENFACT_PARTITION, enfact_row_key(company, invoice_id)) is not None:
            log.info("enFact push %s already received; not enqueued again", webhook_id)
            return PushResult(200, {"status": "duplicate", "webhook_id": webhook_id, "invoice_id": invoice_id})
        log.warning("enFact push %s was received before but never queued (crash?); queuing it now", webhook_id)
    message = {"company_uuid": company, "invoice_id": invoice_id, "event": event, "webhook_id": webhook_id,
               "received_at": iso(ledger.clock()), "source": "push"}
    try:
        services.enfact_queue.send_message(json.dumps(message))
    except AzureError as exc:  # the sender's retry gets through: no enfact row was written
        log.error("enFact push %s could not be queued: %s", webhook_id, type(exc).__name__)
        return _error(503, "unavailable", "could not queue the push; retry later")
    try:
        ledger.insert(ENFACT_PARTITION, enfact_row_key(company, invoice_id),
                      {"State": QUEUED, "InvoiceId": invoice_id, "CompanyUuid": company})
    except LedgerConflict:
        pass  # known invoice: the fetch step decides whether anything is left to do
    log.info("enFact push %s accepted: invoice %s of company %s queued", webhook_id, invoice_id, company)
    return PushResult(202, {"status": "accepted", "webhook_id": webhook_id, "invoice_id": invoice_id})


def enfact_row_key(company_uuid: str, invoice_id: str) -> str:
    return f"{company_uuid.lower()}|{invoice_id}"
