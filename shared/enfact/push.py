"""enFact push intake: authenticate, validate, de-duplicate, hand off to the queue — nothing slow.

    result = accept_push(services, request.headers, request.get_body())
    result.status, result.body          # 202 {"status": "accepted", ...} or 4xx {"error": ..., "reason": ...}

Body: ``{"type": "invoice.created", "data": {"invoice_id": "5001", "company_uuid": "0b6a…"}}`` with
Standard Webhooks headers, nested at most ``MAX_JSON_DEPTH`` levels (deeper: 400 before parsing);
nothing in it is fetched (contract: README "enFact push contract"). One ``webhook`` row per
``webhook-id`` (``Received`` → ``Queued``): a repeat of a ``Queued`` push is answered 200
``{"status": "duplicate"}`` and not queued again; any other state is queued now.
Why: docs/guarantee.md.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping

from azure.core.exceptions import AzureError

from shared.enfact.client import invoice_id_of
from shared.keys import key_of, safe_key
from shared.ledger.rows import ENFACT_PARTITION, WEBHOOK_PARTITION, Ledger, LedgerConflict, LedgerEntry, iso
from shared.observability import bind
from shared.secrets import ENFACT_WEBHOOK_SECRET
from shared.services import Services
from shared.enfact.webhook import SignatureError, verify_signature

log = logging.getLogger(__name__)

EVENT_TYPES = frozenset({"invoice.created", "invoice.updated"})
RECEIVED = "Received"  # a push's ``webhook`` row before its queue hand-off
QUEUED = "Queued"  # a ``webhook`` or ``enfact`` row once the push or invoice is handed to the queue
MAX_JSON_DEPTH = 16  # the contract's body is two levels deep
_COMPANY_UUID = re.compile(r"[0-9a-fA-F-]{8,64}")
#: A string (an unterminated one runs to the end: never rescanned, so linear time) or a bracket.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|[\[{]|[\]}]', re.DOTALL)


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
    invoice_id = invoice_id_of(data.get("invoice_id"))
    if invoice_id is None:
        return _error(400, "invalid_payload", "data.invoice_id must be an enFact invoice id (letters, digits, - or _)")
    company = data.get("company_uuid")
    if not isinstance(company, str) or not _COMPANY_UUID.fullmatch(company):
        return _error(400, "invalid_payload", "data.company_uuid must be a company UUID")
    if company.lower() not in company_folders:
        return _error(400, "unknown_company", "this enFact company is not mapped to an Inqom folder (ENFACT_COMPANY_FOLDERS)")
    return event, invoice_id, company.lower()


def _nesting(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    for token in _JSON_TOKENS.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in "]}":
            depth -= 1
    return deepest


def _parse(body: bytes) -> Any | PushResult:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "invalid_json", "body is not valid UTF-8 JSON")
    if _nesting(text) > MAX_JSON_DEPTH:
        return _error(400, "invalid_json", f"JSON nesting is too deep (more than {MAX_JSON_DEPTH} levels)")
    try:
        return json.loads(text)
    except RecursionError:
        return _error(400, "invalid_json", "JSON nesting is too deep")
    except ValueError:
        return _error(400, "invalid_json", "body is not valid UTF-8 JSON")


def _receive(ledger: Ledger, webhook_id: str, fields: dict[str, Any]) -> LedgerEntry:
    """The push's ``webhook`` row: created ``Received``, or as an earlier delivery of this id left it."""
    key = safe_key(webhook_id)
    while True:
        try:
            return ledger.insert(WEBHOOK_PARTITION, key, {"WebhookId": webhook_id, "State": RECEIVED, **fields})
        except LedgerConflict:
            entry = ledger.get(WEBHOOK_PARTITION, key)
        if entry is not None:
            if entry.state != QUEUED:
                log.warning("enFact push %s was received before but never queued; queuing it now", webhook_id)
            return entry


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
    payload = _parse(body)
    if isinstance(payload, PushResult):
        log.warning("enFact push %s refused: %s", webhook_id, payload.body["reason"])
        return payload
    checked = _validate(payload, settings.enfact_company_folders)
    if isinstance(checked, PushResult):
        log.warning("enFact push %s refused: %s", webhook_id, checked.body["reason"])
        return checked
    event, invoice_id, company = checked
    bind(enfact_id=invoice_id)

    ledger = services.ledger
    received = _receive(ledger, webhook_id, {"InvoiceId": invoice_id, "CompanyUuid": company, "Event": event})
    if received.state == QUEUED:
        log.info("enFact push %s already queued; not enqueued again", webhook_id)
        return PushResult(200, {"status": "duplicate", "webhook_id": webhook_id, "invoice_id": invoice_id})
    message = {"company_uuid": company, "invoice_id": invoice_id, "event": event, "webhook_id": webhook_id,
               "received_at": iso(ledger.clock()), "source": "push"}
    try:
        services.enfact_queue.send_message(json.dumps(message))
    except AzureError as exc:  # the row stays Received: the sender's retry queues it
        log.error("enFact push %s could not be queued: %s", webhook_id, type(exc).__name__)
        return _error(503, "unavailable", "could not queue the push; retry later")
    try:
        ledger.insert(ENFACT_PARTITION, enfact_row_key(company, invoice_id),
                      {"State": QUEUED, "InvoiceId": invoice_id, "CompanyUuid": company})
    except LedgerConflict:
        pass  # known invoice: the fetch step decides whether anything is left to do
    try:
        ledger.update(received, State=QUEUED)
    except LedgerConflict:
        pass  # a concurrent delivery of the same id changed the row: it queued this push too
    log.info("enFact push %s accepted: invoice %s of company %s queued", webhook_id, invoice_id, company)
    return PushResult(202, {"status": "accepted", "webhook_id": webhook_id, "invoice_id": invoice_id})


def enfact_row_key(company_uuid: str, invoice_id: str) -> str:
    """Key of an invoice's ``enfact`` row (``company|id`` for the plain ids enFact uses)."""
    return key_of(company_uuid.lower(), invoice_id)
