"""Run in a subprocess by tests/test_observability.py (OpenTelemetry set-up is process-global).

Serves a loopback Application Insights ingestion endpoint, configures the app's telemetry to
point at it, logs one line inside a log context, flushes, and prints what the endpoint received.
"""

import gzip
import json
import logging
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received: list[dict] = []


class Ingestion(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        received.extend(json.loads(body))
        answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Ingestion)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
    f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:{server.server_address[1]}/")
os.environ["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] = "true"

from opentelemetry._logs import get_logger_provider  # noqa: E402

from shared.observability import configure_telemetry, log_context  # noqa: E402

enabled = configure_telemetry()
log = logging.getLogger("shared.drop.upload")
log.setLevel(logging.INFO)
with log_context(invocation_id="inv-1", ledger_key="k-123", inqom_id=77, enfact_id="5001"):
    log.warning("uploaded with Authorization: Bearer eyJhbGciOi.secret.token")
get_logger_provider().force_flush()
json.dump({"enabled": enabled, "received": received}, sys.stdout)
