"""Latency of the enFact webhook handler (signature, validation, replay insert, enqueue) on Azurite.

    .venv/bin/python -m bench.webhook [--count 500] [--warmup 20]

Sends ``--count`` pushes, each with its own ``webhook-id`` and invoice id and signed by the
reference ``standardwebhooks`` library (as a sender following the standard would; signing is not
timed), through ``LocalHost.call_http("enfact_webhook", ...)``, in-process against Azurite, and
times each call. Baselines, measured in the same run and interleaved with the pushes (one of each
per iteration, so drift in Azurite affects all alike):

* raw enqueue: ``QueueClient.send_message`` of a message of the same size, alone;
* storage floor: the four storage operations an accepted push costs, done directly — insert
  of the webhook-id row (``Received``), ``send_message``, insert of the enFact invoice row, and
  the conditional update of the webhook-id row to ``Queued``.

handler minus storage floor ≈ the handler's own cost (signature, JSON, validation, Functions
request/response objects).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import datetime, timezone

from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from standardwebhooks.webhooks import Webhook

from bench._setup import (
    ENFACT_COMPANY, WEBHOOK_SECRET, FunctionalFailure, Goals, bench_environment, header, quantile, run_main, table,
)
from shared.ledger.rows import iso

URL = "http://localhost/api/enfact/invoices"
P99_GOAL_MS = 20.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500, help="timed pushes (default 500)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed pushes first (default 20)")
    args = parser.parse_args()
    if args.count < 1 or args.warmup < 0:
        parser.error("--count must be positive, --warmup >= 0")
    return args


def signed(signer: Webhook, invoice_id: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "invoice.created",
                       "data": {"invoice_id": str(invoice_id), "company_uuid": ENFACT_COMPANY}}).encode()
    webhook_id = f"msg_{uuid.uuid4().hex}"
    moment = datetime.now(timezone.utc)
    headers = {"Content-Type": "application/json", "webhook-id": webhook_id,
               "webhook-timestamp": str(int(moment.timestamp())),
               "webhook-signature": signer.sign(webhook_id, moment, body.decode()),
               "Content-Length": str(len(body))}
    return body, headers


def main() -> None:
    args = parse_args()
    header("bench.webhook: enfact_webhook handler latency on Azurite", count=args.count, warmup=args.warmup)
    signer = Webhook(WEBHOOK_SECRET)
    with bench_environment(inqom=False) as bench:
        services = bench.services
        raw_queue = services.stores.queue(f"bench-raw-{uuid.uuid4().hex[:8]}")
        raw_queue.create_queue()
        table_client = services.ledger.table
        app_queue = services.enfact_queue

        def push(invoice_id: int) -> float:
            body, headers = signed(signer, invoice_id)
            started = time.perf_counter()
            response = bench.host.call_http("enfact_webhook", "POST", URL, headers, body)
            elapsed = time.perf_counter() - started
            if response.status_code != 202:
                raise FunctionalFailure(f"push {invoice_id} answered {response.status_code}: {response.get_body()[:200]!r}")
            return elapsed

        def message(invoice_id: int) -> str:
            return json.dumps({"company_uuid": ENFACT_COMPANY, "invoice_id": str(invoice_id), "event": "invoice.created",
                               "webhook_id": f"msg_{uuid.uuid4().hex}", "received_at": iso(datetime.now(timezone.utc)),
                               "source": "push"})

        def raw_send(invoice_id: int) -> float:
            text = message(invoice_id)
            started = time.perf_counter()
            raw_queue.send_message(text)
            return time.perf_counter() - started

        def floor(invoice_id: int) -> float:
            text = message(invoice_id)
            now = iso(datetime.now(timezone.utc))
            started = time.perf_counter()
            received = {"PartitionKey": "benchfloor", "RowKey": f"msg_{uuid.uuid4().hex}", "State": "Received",
                        "CreatedAt": now, "UpdatedAt": now, "InvoiceId": str(invoice_id),
                        "CompanyUuid": ENFACT_COMPANY, "Event": "invoice.created"}
            created = table_client.create_entity(received)
            raw_queue.send_message(text)
            table_client.create_entity({"PartitionKey": "benchfloor2", "RowKey": f"{ENFACT_COMPANY}|{invoice_id}",
                                        "CreatedAt": now, "UpdatedAt": now, "State": "Queued",
                                        "InvoiceId": str(invoice_id), "CompanyUuid": ENFACT_COMPANY})
            table_client.update_entity({**received, "State": "Queued"}, mode=UpdateMode.REPLACE,
                                       etag=created["etag"], match_condition=MatchConditions.IfNotModified)
            return time.perf_counter() - started

        for i in range(args.warmup):
            push(900_000 + i)
            raw_send(900_000 + i)
            floor(900_000 + i)
        handler_times, raw_times, floor_times = [], [], []
        started = time.perf_counter()
        for i in range(args.count):
            handler_times.append(push(100_000 + i))
            raw_times.append(raw_send(100_000 + i))
            floor_times.append(floor(100_000 + i))
        wall = time.perf_counter() - started

        queued = app_queue.get_queue_properties().approximate_message_count
        if queued != args.count + args.warmup:
            raise FunctionalFailure(f"{queued} messages in the enFact queue for {args.count + args.warmup} accepted pushes")

    def row(label: str, times: list[float]) -> list:
        ms = [t * 1000 for t in times]
        return [label, len(ms), quantile(ms, 0.5), quantile(ms, 0.9), quantile(ms, 0.99), max(ms)]

    print()
    print(f"{args.count} signed pushes (after {args.warmup} untimed), interleaved with the baselines; "
          f"all answered 202 and {args.count + args.warmup} messages are queued ({wall:.1f} s in all):")
    table(["operation", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], [
        row("handler: call_http('enfact_webhook') -> 202", handler_times),
        row("baseline: raw QueueClient.send_message", raw_times),
        row("baseline: storage floor (insert + send + insert + update)", floor_times),
    ])
    own_p50 = quantile([t * 1000 for t in handler_times], 0.5) - quantile([t * 1000 for t in floor_times], 0.5)
    print(f"handler's own cost at p50 (handler - storage floor): {own_p50:+.2f} ms")
    print()
    p99 = quantile([t * 1000 for t in handler_times], 0.99)
    Goals().check(f"handler p99 < {P99_GOAL_MS:g} ms", p99 < P99_GOAL_MS, f"p99 {p99:.2f} ms")


if __name__ == "__main__":
    run_main(main)
