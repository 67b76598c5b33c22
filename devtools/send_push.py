"""Sign and send one enFact push to a running app (a deployment or the local runner).

    ENFACT_WEBHOOK_SECRET=whsec_... python -m devtools.send_push \\
        --url "https://<app>.azurewebsites.net/api/enfact/invoices?code=<function key>" \\
        --company 0b6a3c5e-1f0d-4c1e-9a55-2f1f6f0e9c01 --invoice 5001

The secret is read from the environment (not the command line, which other users can see).
Prints the HTTP status and the JSON answer; exits 0 on 2xx.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

import requests

from shared.enfact.webhook import sign


def send(url: str, secret: str, company: str, invoice: str, event: str = "invoice.created",
         webhook_id: str | None = None, timeout: float = 10) -> requests.Response:
    body = json.dumps({"type": event, "data": {"invoice_id": invoice, "company_uuid": company}}).encode()
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": str(stamp),
               "webhook-signature": sign(secret, webhook_id, stamp, body)}
    return requests.post(url, data=body, headers=headers, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.send_push", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="webhook URL, with ?code=<function key>")
    parser.add_argument("--company", required=True, help="enFact company UUID")
    parser.add_argument("--invoice", required=True, help="enFact invoice id")
    parser.add_argument("--event", default="invoice.created", choices=("invoice.created", "invoice.updated"))
    parser.add_argument("--webhook-id", help="reuse an id to test replay handling")
    args = parser.parse_args(argv)
    secret = os.environ.get("ENFACT_WEBHOOK_SECRET", "")
    if not secret:
        print("ENFACT_WEBHOOK_SECRET is not set (the whsec_… secret shared with the app)", file=sys.stderr)
        return 2
    response = send(args.url, secret, args.company, args.invoice, args.event, args.webhook_id)
    print(response.status_code, response.text)
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main())
