"""enFact → Inqom: signed push → queue → enFact fetch → inbox → Inqom, and the reconcile."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook

from shared.enfact.webhook import SignatureError, sign, verify_signature
from tests.conftest import ENFACT_COMPANY, ENFACT_FOLDER, ENFACT_SESSION_KEY, INQOM_CREDENTIALS, WEBHOOK_SECRET

URL = "http://localhost/api/enfact/invoices"


def body_for(invoice_id, company=ENFACT_COMPANY, event="invoice.created") -> bytes:
    return json.dumps({"type": event, "data": {"invoice_id": str(invoice_id), "company_uuid": company}}).encode()


def signed_headers(body: bytes, *, secret=WEBHOOK_SECRET, webhook_id=None, timestamp=None) -> dict[str, str]:
    """Signed by the reference ``standardwebhooks`` library, as a sender following the standard would."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    moment = datetime.fromtimestamp(timestamp if timestamp is not None else time.time(), tz=timezone.utc)
    signature = Webhook(secret).sign(webhook_id, moment, body.decode())
    return {"Content-Type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": signature}


def push(host, body: bytes, headers: dict[str, str]):
    response = host.call_http("enfact_webhook", "POST", URL, headers, body)
    return response.status_code, json.loads(response.get_body())


def queued(services) -> list[str]:
    """Messages waiting in the enFact queue (received and deleted, as the host's dequeue would)."""
    queue = services.stores.queue(services.settings.enfact_queue)
    bodies = []
    for message in queue.receive_messages(messages_per_page=32, visibility_timeout=5):
        bodies.append(message.content)
        queue.delete_message(message)
    return bodies


def run_queue_and_inbox(services, host) -> None:
    """What the host would do next: run the queue function, then the blob trigger for new inbox blobs."""
    for body in queued(services):
        host.deliver_queue_message("enfact_fetch", body)
    inbox = services.stores.container(services.settings.inbox_container)
    for blob in inbox.list_blobs():
        host.deliver_blob("upload_document", blob.name)


def test_signed_push_reaches_inqom_once_as_a_sales_invoice(services, host, inqom, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY, number="F2026-0042 €")  # non-ASCII survives blob metadata
    body = body_for(invoice["id"])
    statuses = []
    for _ in range(3):  # the sender retries: three pushes, three webhook ids, one document
        status, reply = push(host, body, signed_headers(body))
        statuses.append(status)
        assert reply["invoice_id"] == str(invoice["id"])
        run_queue_and_inbox(services, host)
    assert statuses == [202, 202, 202]
    (call,) = inqom.calls("POST", "/Documents")
    assert call.path == f"/api/accounting-documents/accounting-folders/{ENFACT_FOLDER}/Documents/"
    assert call.form["TypeScan"] == "Client"
    assert call.form["DocRef"] == "F2026-0042 €" and call.form["SourceId"] == str(invoice["id"])
    assert call.files["Document"].data == enfact.pdf_for(invoice["id"])
    assert call.files["Document"].filename == f"enfact-{invoice['id']}.pdf"
    assert len(enfact.calls("GET", f"/v1/invoices/{invoice['id']}.pdf")) == 1
    sent = enfact.calls("GET", ".json")[0]
    assert sent.headers["X-SESSION-KEY"] == ENFACT_SESSION_KEY and sent.headers["X-COMPANY-UUID"] == ENFACT_COMPANY
    (row,) = list(services.ledger.scan("Source eq 'enfact'"))
    assert row.get("EnfactId") == str(invoice["id"]) and row.get("InqomId") in inqom.documents


def test_replayed_webhook_id_is_not_enqueued_again(services, host, enfact):
    body = body_for(enfact.add_invoice(ENFACT_COMPANY)["id"])
    headers = signed_headers(body)
    assert push(host, body, headers)[0] == 202
    status, reply = push(host, body, headers)
    assert (status, reply["status"]) == (200, "duplicate")
    assert len(queued(services)) == 1


def test_rotated_sender_secret_with_two_signatures_verifies(services, host, enfact):
    body = body_for(enfact.add_invoice(ENFACT_COMPANY)["id"])
    headers = signed_headers(body)
    old = signed_headers(body, secret="whsec_b2xkLXNlY3JldC1yb3RhdGVkLWF3YXk=", webhook_id=headers["webhook-id"],
                         timestamp=int(headers["webhook-timestamp"]))
    headers["webhook-signature"] = f"{old['webhook-signature']} {headers['webhook-signature']}"
    assert push(host, body, headers)[0] == 202


def _bad(body, headers):
    return body, headers


@pytest.mark.parametrize("case, status, error", [
    ("no signature", 401, "invalid_signature"),
    ("wrong secret", 401, "invalid_signature"),
    ("old timestamp", 401, "invalid_signature"),
    ("future timestamp", 401, "invalid_signature"),
    ("tampered body", 401, "invalid_signature"),
    ("malformed json", 400, "invalid_json"),
    ("missing id", 400, "invalid_payload"),
    ("url instead of id", 400, "invalid_payload"),
    ("unknown event", 400, "invalid_payload"),
    ("unknown company", 400, "unknown_company"),
    ("oversize body", 413, "payload_too_large"),
    ("wrong content type", 415, "unsupported_media_type"),
])
def test_bad_pushes_get_their_status_and_nothing_is_queued(services, host, case, status, error):
    body = body_for(5001)
    headers = signed_headers(body)
    if case == "no signature":
        del headers["webhook-signature"]
    elif case == "wrong secret":
        headers = signed_headers(body, secret="whsec_d3Jvbmctc2VjcmV0LXZhbHVlLTEyMzQ=")
    elif case == "old timestamp":
        headers = signed_headers(body, timestamp=time.time() - 301)
    elif case == "future timestamp":
        headers = signed_headers(body, timestamp=time.time() + 301)
    elif case == "tampered body":
        body = body_for(5002)
    elif case == "malformed json":
        body = b'{"type": "invoice.created", "data": '
        headers = signed_headers(body)
    elif case == "missing id":
        body = json.dumps({"type": "invoice.created", "data": {"company_uuid": ENFACT_COMPANY}}).encode()
        headers = signed_headers(body)
    elif case == "url instead of id":
        body = body_for("https://evil.example/x.pdf")
        headers = signed_headers(body)
    elif case == "unknown event":
        body = body_for(5001, event="invoice.deleted")
        headers = signed_headers(body)
    elif case == "unknown company":
        body = body_for(5001, company="11111111-2222-3333-4444-555555555555")
        headers = signed_headers(body)
    elif case == "oversize body":
        body = json.dumps({"type": "invoice.created", "data": {"invoice_id": "5001", "company_uuid": ENFACT_COMPANY},
                           "pad": "x" * 70000}).encode()
        headers = signed_headers(body)
    elif case == "wrong content type":
        headers["Content-Type"] = "text/plain"
    got_status, reply = push(host, body, headers)
    assert (got_status, reply["error"]) == (status, error)
    assert reply["reason"]
    assert queued(services) == []


def test_unknown_invoice_is_rejected_with_the_reason(services, host, enfact):
    body = body_for(999999)
    assert push(host, body, signed_headers(body))[0] == 202
    run_queue_and_inbox(services, host)
    row = services.ledger.get("enfact", f"{ENFACT_COMPANY}|999999")
    assert row.state == "Rejected" and "404" in row.get("Reason")
    assert list(services.stores.container(services.settings.inbox_container).list_blobs()) == []


def test_transient_enfact_error_raises_for_a_queue_retry(services, host, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY)
    body = body_for(invoice["id"])
    push(host, body, signed_headers(body))
    (message,) = queued(services)
    enfact.inject("503", times=10, path_contains=".pdf")
    from shared.http import TransientError
    with pytest.raises(TransientError):
        host.deliver_queue_message("enfact_fetch", message)
    enfact.clear_faults()
    host.deliver_queue_message("enfact_fetch", message, dequeue_count=2)
    blob = services.stores.container(services.settings.inbox_container) \
        .get_blob_client(f"{ENFACT_FOLDER}/client/enfact-{invoice['id']}.pdf")
    assert blob.download_blob().readall() == enfact.pdf_for(invoice["id"])
    assert blob.get_blob_properties().metadata["source"] == "enfact"


def test_reconcile_queues_exactly_the_missed_invoices(services, host, inqom, enfact):
    pushed = enfact.add_invoice(ENFACT_COMPANY)
    missed = [enfact.add_invoice(ENFACT_COMPANY) for _ in range(3)]
    enfact.add_invoice(ENFACT_COMPANY, date="2020-01-01")  # older than the reconcile window
    body = body_for(pushed["id"])
    push(host, body, signed_headers(body))
    run_queue_and_inbox(services, host)
    host.fire_timer("enfact_reconcile")
    messages = [json.loads(m) for m in queued(services)]
    assert sorted(m["invoice_id"] for m in messages) == sorted(str(i["id"]) for i in missed)
    for message in messages:
        host.deliver_queue_message("enfact_fetch", json.dumps(message))
    for name in [b.name for b in services.stores.container(services.settings.inbox_container).list_blobs()]:
        host.deliver_blob("upload_document", name)
    host.fire_timer("enfact_reconcile")  # idempotent: nothing left to catch up
    assert queued(services) == []
    assert sorted(c.form["SourceId"] for c in inqom.calls("POST", "/Documents")) == \
        sorted(str(i["id"]) for i in [pushed, *missed])


def test_secrets_never_reach_the_logs(services, host, inqom, enfact, caplog):
    caplog.set_level(logging.DEBUG)
    invoice = enfact.add_invoice(ENFACT_COMPANY)
    body = body_for(invoice["id"])
    push(host, body, signed_headers(body))
    push(host, body, signed_headers(body, secret="whsec_d3Jvbmctc2VjcmV0LXZhbHVlLTEyMzQ="))
    run_queue_and_inbox(services, host)
    inqom.expire_tokens()
    host.fire_timer("poll_documents")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "enfact" in text.lower()  # the flow did log
    token = services.tokens.token()
    for secret in (ENFACT_SESSION_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET[6:], INQOM_CREDENTIALS["password"],
                   INQOM_CREDENTIALS["client_secret"], token):
        assert secret not in text


def test_own_verifier_matches_the_reference_library():
    body = b'{"type":"invoice.created"}'
    now = int(time.time())
    reference = Webhook(WEBHOOK_SECRET).sign("msg_1", datetime.fromtimestamp(now, tz=timezone.utc), body.decode())
    assert sign(WEBHOOK_SECRET, "msg_1", now, body) == reference
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": reference}
    assert verify_signature(WEBHOOK_SECRET, headers, body) == "msg_1"
    rotated = "whsec_bmV3LXNlY3JldC0xMjM0NTY3ODkw " + WEBHOOK_SECRET
    assert verify_signature(rotated, headers, body) == "msg_1"
    for garbage in ("v1,***", "v2," + reference[3:], "nonsense", "v1"):
        with pytest.raises(SignatureError):
            verify_signature(WEBHOOK_SECRET, {**headers, "webhook-signature": garbage}, body)
    with pytest.raises(SignatureError):
        verify_signature(WEBHOOK_SECRET, headers, b"\xff\xfe not utf-8")


def test_reconcile_requeues_an_invoice_whose_message_was_poisoned(services, host, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY)
    body = body_for(invoice["id"])
    assert push(host, body, signed_headers(body))[0] == 202
    queued(services)  # the message is lost (poison queue): the row stays Queued
    host.fire_timer("enfact_reconcile")
    assert queued(services) == []  # too recent to call lost
    base = services.ledger.clock
    services.ledger.clock = lambda: base() + timedelta(hours=2)
    host.fire_timer("enfact_reconcile")
    assert [json.loads(m)["invoice_id"] for m in queued(services)] == [str(invoice["id"])]


def test_reconcile_checks_invoice_dates_itself(services, host, enfact):
    """Should enFact ignore ``date_from``, old invoices must still not be sent."""
    enfact.add_invoice(ENFACT_COMPANY, date="2019-05-01")
    recent = enfact.add_invoice(ENFACT_COMPANY)
    enfact.date_filters = False
    host.fire_timer("enfact_reconcile")
    assert [json.loads(m)["invoice_id"] for m in queued(services)] == [str(recent["id"])]


def test_push_received_but_never_queued_is_queued_on_the_senders_retry(services, host, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY)
    body = body_for(invoice["id"])
    headers = signed_headers(body)
    services.ledger.insert("webhook", headers["webhook-id"], {"InvoiceId": str(invoice["id"])})  # crashed before send
    status, reply = push(host, body, headers)
    assert (status, reply["status"]) == (202, "accepted")
    assert [json.loads(m)["invoice_id"] for m in queued(services)] == [str(invoice["id"])]
    assert push(host, body, headers)[1]["status"] == "duplicate"
