"""Run in a subprocess by tests/test_metrics.py (the OpenTelemetry meter provider is process-global).

Serves a loopback Application Insights ingestion endpoint, imports ``shared.metrics`` *before*
telemetry is configured (as function_app.py does), switches the app's telemetry on with
``configure_telemetry()``, records one value of every metric, flushes the meter provider and prints
what the endpoint received as JSON. ``--off`` leaves telemetry off (no connection string) instead.
"""

import gzip
import json
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
        items = json.loads(body)
        received.extend(items)
        answer = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


telemetry_on = "--off" not in sys.argv
server = ThreadingHTTPServer(("127.0.0.1", 0), Ingestion)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
if telemetry_on:
    os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
        f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:{server.server_address[1]}/")
os.environ["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] = "true"

from shared import metrics  # noqa: E402  (before configure_telemetry, as in function_app.py)
from shared.observability import configure_telemetry  # noqa: E402

from opentelemetry.metrics import get_meter_provider  # noqa: E402

enabled = configure_telemetry()
for outcome in sorted(metrics.OUTCOMES):
    metrics.document_outcome(outcome)
metrics.document_outcome(metrics.QUARANTINED)  # twice: the counter sums
metrics.inqom_call(200)
metrics.inqom_call(429)
metrics.inqom_call(429)
metrics.inqom_call(503)
metrics.inqom_call(None)
metrics.ocr_disagreement("Amount")
metrics.throttle_wait(0.5)
metrics.throttle_wait(2.5)
metrics.pending(3, 120.0)
metrics.pending(7, 5400.5)  # the gauges report the last values set
provider = get_meter_provider()
flushed = provider.force_flush() if hasattr(provider, "force_flush") else None
json.dump({"enabled": enabled, "flushed": flushed, "received": received}, sys.stdout)
