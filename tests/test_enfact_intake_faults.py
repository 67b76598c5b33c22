"""enFact intake under odd input and partial failure: ids that cannot be keys, deep JSON, a queue
that was down, a list with odd ids or a company enFact refuses, a fetch that crashed mid-write.

Driven through the registered functions (``host``) against Azurite and the loopback emulators.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from shared.enfact.fetch import ReconcileError
from shared.enfact.push import enfact_row_key
from shared.keys import safe_key
from tests.conftest import ENFACT_COMPANY, ENFACT_FOLDER
from tests.test_enfact import body_for, push, queued, signed_headers

ODD_IDS = ["../x", "1/2", "1?x=y", "a#b", "a\\b", "a\nb", "", "x" * 65, "5001.0"]
OTHER_COMPANY = "7d1e2f30-4a5b-4c6d-8e9f-a0b1c2d3e4f5"
LOST_COMPANY = "11111111-2222-3333-4444-555555555555"  # mapped here, unknown to enFact: 403


def later(services, **delta):
    base = services.ledger.clock
    services.ledger.clock = lambda: base() + timedelta(**delta)


def inbox_names(services) -> list[str]:
    return [b.name for b in services.stores.container(services.settings.inbox_container).list_blobs()]


def enfact_row(services, invoice_id, company=ENFACT_COMPANY):
    return services.ledger.get("enfact", enfact_row_key(company, str(invoice_id)))


# --------------------------------------------------------------------------- push


@pytest.mark.parametrize("webhook_id", ["msg/1", "msg\\1", "msg#1", "msg?1=2", "evt_" + "a/" * 120])
def test_webhook_id_that_is_no_table_key_is_accepted_once(services, host, enfact, webhook_id):
    body = body_for(enfact.add_invoice(ENFACT_COMPANY)["id"])
    headers = signed_headers(body, webhook_id=webhook_id)
    status, reply = push(host, body, headers)
    assert (status, reply["status"], reply["webhook_id"]) == (202, "accepted", webhook_id)
    status, reply = push(host, body, headers)
    assert (status, reply["status"]) == (200, "duplicate")
    assert len(queued(services)) == 1
    row = services.ledger.get("webhook", safe_key(webhook_id))
    assert row.get("WebhookId") == webhook_id and row.state == "Queued"


def test_deeply_nested_body_is_refused_with_a_reason(services, host):
    body = b'{"type": "invoice.created", "data": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert len(body) < services.settings.webhook_max_body_bytes
    status, reply = push(host, body, signed_headers(body))
    assert (status, reply["error"]) == (400, "invalid_json")
    assert "too deep" in reply["reason"]
    assert queued(services) == []


def test_shallow_extras_and_brackets_inside_strings_are_fine(services, host, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY)
    payload = json.loads(body_for(invoice["id"]))
    payload["meta"] = {"note": "[{" * 3000, "path": [[[[["ok"]]]]]}
    body = json.dumps(payload).encode()
    assert push(host, body, signed_headers(body))[0] == 202


def test_push_that_could_not_be_queued_is_queued_on_retry_though_the_invoice_was_rejected(services, host, inqom,
                                                                                         enfact):
    body = body_for(7777)  # pushed before enFact serves it: rejected
    assert push(host, body, signed_headers(body))[0] == 202
    for message in queued(services):
        host.deliver_queue_message("enfact_fetch", message)
    assert enfact_row(services, 7777).state == "Rejected"

    enfact.add_invoice(ENFACT_COMPANY, invoice_id=7777)
    headers = signed_headers(body)
    services.enfact_queue.delete_queue()  # the queue is down: Azurite answers 404 QueueNotFound
    status, reply = push(host, body, headers)
    assert (status, reply["error"]) == (503, "unavailable")
    assert services.ledger.get("webhook", headers["webhook-id"]).state == "Received"
    services.enfact_queue.create_queue()

    status, reply = push(host, body, headers)  # the sender's retry
    assert (status, reply["status"]) == (202, "accepted")
    (message,) = queued(services)
    host.deliver_queue_message("enfact_fetch", message)
    assert enfact_row(services, 7777).state == "InInbox"
    assert inbox_names(services) == [f"{ENFACT_FOLDER}/client/enfact-7777.pdf"]
    assert push(host, body, headers)[1]["status"] == "duplicate"
    assert queued(services) == []


# --------------------------------------------------------------------------- fetch


@pytest.mark.parametrize("invoice_id", [*ODD_IDS, None, 12.5, True, ["5001"]])
def test_fetch_rejects_an_odd_invoice_id_without_calling_enfact(services, host, enfact, invoice_id):
    message = {"company_uuid": ENFACT_COMPANY, "invoice_id": invoice_id, "source": "push"}
    host.deliver_queue_message("enfact_fetch", json.dumps(message))
    row = enfact_row(services, invoice_id)
    assert row.state == "Rejected" and "not an enFact invoice id" in row.get("Reason")
    assert row.get("InvoiceId") == str(invoice_id)
    assert enfact.calls() == [] and inbox_names(services) == []


def _fetch_then_archive(services, host, inqom, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY)
    body = body_for(invoice["id"])
    assert push(host, body, signed_headers(body))[0] == 202
    (message,) = queued(services)
    host.deliver_queue_message("enfact_fetch", message)
    (name,) = inbox_names(services)
    host.deliver_blob("upload_document", name)
    (document,) = services.ledger.scan("BlobPath eq @p", p=name)
    inqom.set_status(document.get("InqomId"), "Done")
    later(services, hours=1)
    host.fire_timer("poll_documents")
    (document,) = services.ledger.scan("BlobPath eq @p", p=name)
    assert document.state == "Archived" and inbox_names(services) == []
    return invoice, message, name


def test_retry_of_a_fetch_that_crashed_after_writing_sends_nothing_twice(services, host, inqom, enfact):
    """The blob was written, sent and archived, but the row never said InInbox: the retry writes nothing."""
    invoice, message, name = _fetch_then_archive(services, host, inqom, enfact)
    row = enfact_row(services, invoice["id"])
    services.ledger.update(row, State="Writing")  # as the crashed attempt left it
    host.deliver_queue_message("enfact_fetch", message, dequeue_count=2)
    assert inbox_names(services) == []
    assert enfact_row(services, invoice["id"]).state == "InInbox"
    assert len(inqom.calls("POST", "/Documents")) == 1
    assert len(enfact.calls("GET", ".pdf")) == 1


def test_reconcile_requeues_a_write_left_unfinished_and_nothing_is_sent_twice(services, host, inqom, enfact):
    """Every retry of the crashed write failed (poison queue): reconcile re-queues it, still once to Inqom."""
    invoice, _, _ = _fetch_then_archive(services, host, inqom, enfact)
    services.ledger.update(enfact_row(services, invoice["id"]), State="Writing")
    host.fire_timer("enfact_reconcile")
    assert queued(services) == []  # too recent to call lost
    later(services, hours=2)
    host.fire_timer("enfact_reconcile")
    (message,) = queued(services)
    host.deliver_queue_message("enfact_fetch", message)
    assert inbox_names(services) == [] and enfact_row(services, invoice["id"]).state == "InInbox"
    assert len(inqom.calls("POST", "/Documents")) == 1


def test_retry_of_a_fetch_that_crashed_after_writing_keeps_the_inbox_blob(services, host, inqom, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY)
    message = json.dumps({"company_uuid": ENFACT_COMPANY, "invoice_id": str(invoice["id"]), "source": "push"})
    host.deliver_queue_message("enfact_fetch", message)
    row = enfact_row(services, invoice["id"])
    services.ledger.update(row, State="Writing")
    host.deliver_queue_message("enfact_fetch", message, dequeue_count=2)
    assert enfact_row(services, invoice["id"]).state == "InInbox"
    assert len(enfact.calls("GET", ".pdf")) == 1 and len(inbox_names(services)) == 1


def test_retry_of_a_fetch_that_crashed_before_writing_writes_the_blob(services, host, enfact):
    invoice = enfact.add_invoice(ENFACT_COMPANY)
    name = f"{ENFACT_FOLDER}/client/enfact-{invoice['id']}.pdf"
    services.ledger.insert("enfact", enfact_row_key(ENFACT_COMPANY, str(invoice["id"])),
                           {"State": "Writing", "InboxPath": name, "InvoiceId": str(invoice["id"])})
    message = json.dumps({"company_uuid": ENFACT_COMPANY, "invoice_id": str(invoice["id"]), "source": "push"})
    host.deliver_queue_message("enfact_fetch", message, dequeue_count=2)
    assert inbox_names(services) == [name]
    assert enfact_row(services, invoice["id"]).state == "InInbox"


# --------------------------------------------------------------------------- reconcile


def test_reconcile_skips_odd_ids_and_queues_the_rest(services, host, enfact, caplog):
    caplog.set_level(logging.WARNING)
    for odd in ("../x", "1/2", "1?x=y", "a#b", "a\nb", "x" * 300):
        enfact.add_invoice(ENFACT_COMPANY, invoice_id=odd)
    good = enfact.add_invoice(ENFACT_COMPANY)
    host.fire_timer("enfact_reconcile")
    assert [json.loads(m)["invoice_id"] for m in queued(services)] == [str(good["id"])]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for shown in ("'../x'", "'1/2'", "'1?x=y'", "'a#b'", "'a\\nb'", "'" + "x" * 80 + "'"):
        assert any(shown in text for text in warnings), shown
    assert not any("x" * 81 in text or "a\nb" in text for text in warnings)


def test_reconcile_queues_an_invoice_once_rejected_that_enfact_now_lists(services, host, enfact):
    body = body_for(7778)
    assert push(host, body, signed_headers(body))[0] == 202
    for message in queued(services):
        host.deliver_queue_message("enfact_fetch", message)
    assert enfact_row(services, 7778).state == "Rejected"
    enfact.add_invoice(ENFACT_COMPANY, invoice_id=7778)
    host.fire_timer("enfact_reconcile")
    (message,) = queued(services)
    assert json.loads(message)["invoice_id"] == "7778"
    host.deliver_queue_message("enfact_fetch", message)
    assert enfact_row(services, 7778).state == "InInbox"
    host.fire_timer("enfact_reconcile")
    assert queued(services) == []


@pytest.mark.parametrize("settings_overrides", [{
    "ENFACT_COMPANY_FOLDERS": f"{ENFACT_COMPANY}={ENFACT_FOLDER};{LOST_COMPANY}=7;{OTHER_COMPANY}=8",
}])
def test_reconcile_goes_on_after_a_company_fails_and_then_fails_the_run(services, host, enfact, caplog):
    enfact.add_company(OTHER_COMPANY)
    first = enfact.add_invoice(ENFACT_COMPANY)
    after = enfact.add_invoice(OTHER_COMPANY)
    with pytest.raises(ReconcileError, match=LOST_COMPANY):
        host.fire_timer("enfact_reconcile")
    messages = [json.loads(m) for m in queued(services)]
    assert sorted((m["company_uuid"], m["invoice_id"]) for m in messages) == sorted(
        [(ENFACT_COMPANY, str(first["id"])), (OTHER_COMPANY, str(after["id"]))])
    assert any(LOST_COMPANY in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
