"""Structured log context on a document's path, redaction, and the OpenTelemetry export switch."""

import io
import json
import logging
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from shared.observability import ContextFilter, configure_telemetry, error_text, redact
from tests.support.documents import drop

REPO = Path(__file__).resolve().parents[1]


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(ContextFilter())

    def emit(self, record):
        self.records.append(record)


def test_every_line_of_a_document_path_carries_its_ids(services, host, inqom, caplog):
    capture = Capture()
    logging.getLogger().addHandler(capture)
    caplog.set_level(logging.INFO)  # setLevel, not the attribute: loggers cache isEnabledFor
    try:
        drop(services, "11287/supplier/traced.pdf", b"%PDF-1.4 traced")
        host.deliver_blob("upload_document", "11287/supplier/traced.pdf")
        (row,) = list(services.ledger.scan("BlobPath eq '11287/supplier/traced.pdf'"))
        inqom.set_status(row.get("InqomId"), "Done")
        base = services.ledger.clock
        services.ledger.clock = lambda: base() + timedelta(minutes=5)
        host.fire_timer("poll_documents")
    finally:
        logging.getLogger().removeHandler(capture)
    ours = [r for r in capture.records if r.name.startswith(("shared.drop.upload", "shared.archive.poll"))]
    assert {"uploaded", "archived"} <= {r.getMessage().split()[0] for r in ours}
    for record in ours:
        assert record.ledger_key == row.key, record.getMessage()
        assert record.invocation_id not in ("-", None)
    assert any(r.inqom_id == row.get("InqomId") for r in ours)
    assert len({r.invocation_id for r in ours}) == 2  # one per function invocation


def test_redaction_masks_credentials():
    text = redact("Authorization: Bearer abc.DEF-123 url?sv=1&sig=Zm9v%2B&code=k3y password=p4ss whsec_c2VjcmV0")
    for secret in ("abc.DEF-123", "Zm9v%2B", "k3y", "p4ss", "c2VjcmV0"):
        assert secret not in text
    assert "sv=1" in text


def test_redaction_masks_a_signature_anywhere_in_a_query():
    for text in ("GET https://h/x?sv=1&se=2026-01-01&sig=abc%2Fdef%3D&sp=r failed",
                 "GET https://h/x?sig=abc%2Fdef%3D&sv=1", "Location: https://h/x?SIG=abc%2Fdef%3D",
                 "next=https%3A%2F%2Fh%2Fx%3Fsv%3D1%26sig%3Dabc%252Fdef%26sp%3Dr"):
        masked = redact(text)
        assert "abc" not in masked, masked


def _format_through_a_handler(emit) -> str:
    """What a plain StreamHandler with a Formatter and the filter writes for ``emit(logger)``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_tracebacks_are_redacted_chained_causes_included():
    def emit(logger):
        try:
            try:
                raise OSError("Failed to parse: https://h/x?sv=1&sig=CAUSESIG&se=2026")
            except OSError as cause:
                raise ValueError("GET https://h/x?se=2026&sig=SECRETSIG failed") from cause
        except ValueError:
            logger.exception("download failed")

    output = _format_through_a_handler(emit)
    assert "download failed" in output and "Traceback" in output
    assert "ValueError: GET https://h/x?se=2026&sig=*** failed" in output
    assert "OSError" in output and "direct cause" in output
    assert "SECRETSIG" not in output and "CAUSESIG" not in output


def test_stack_info_is_redacted():
    output = _format_through_a_handler(
        lambda logger: logger.warning("here %s", "https://h/x?sig=ARGSIG", stack_info=True))  # sig=STACKSIG
    assert "Stack (most recent call last)" in output and "sig=***" in output
    assert "ARGSIG" not in output and "STACKSIG" not in output


def test_error_text_masks_credentials():
    assert error_text(ValueError("GET https://h/x?sv=1&sig=SECRETSIG failed")) == \
        "GET https://h/x?sv=1&sig=*** failed"
    assert error_text(RuntimeError("token Bearer abc.def")) == "token Bearer ***"
    assert error_text(TimeoutError()) == "TimeoutError"


def test_no_telemetry_without_connection_string(monkeypatch):
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    handlers = list(logging.getLogger().handlers)
    assert configure_telemetry() is False
    assert logging.getLogger().handlers == handlers


def test_logs_reach_application_insights_with_context_and_no_secret():
    result = subprocess.run([sys.executable, "-m", "tests.support.otel_probe"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["enabled"] is True
    messages = [item for item in report["received"] if item["data"]["baseType"] == "MessageData"]
    (message,) = [m for m in messages if "uploaded" in m["data"]["baseData"]["message"]]
    properties = message["data"]["baseData"]["properties"]
    assert (properties["ledger_key"], properties["inqom_id"], properties["enfact_id"], properties["invocation_id"]) == \
        ("k-123", "77", "5001", "inv-1")
    assert "secret.token" not in json.dumps(report)


def test_workbook_log_lines_are_what_the_app_logs(services, host, inqom, caplog):
    """infra/modules/workbook.json reads two of the app's log lines from traces (drop-to-archive time,
    top quarantine reasons): the real pipeline must write them in that shape, with the ledger key."""
    import re

    queries = {item["name"]: item["content"]["query"] for item in
               json.loads((REPO / "infra" / "modules" / "workbook.json").read_text())["items"] if item["type"] == 3}
    assert 'message startswith "archived ledger "' in queries["drop-to-archive"]
    assert 'parse message with "quarantined " blob_path " (ledger " logged_key "): " reason' in queries["quarantine-reasons"]

    capture = Capture()
    logging.getLogger().addHandler(capture)
    caplog.set_level(logging.INFO)
    try:
        drop(services, "11287/supplier/kept.pdf", b"%PDF-1.4 kept")
        host.deliver_blob("upload_document", "11287/supplier/kept.pdf")
        drop(services, "11287/supplier/virus.exe", b"MZ not a document")
        host.deliver_blob("upload_document", "11287/supplier/virus.exe")
        (row,) = list(services.ledger.scan("BlobPath eq '11287/supplier/kept.pdf'"))
        inqom.set_status(row.get("InqomId"), "Done")
        base = services.ledger.clock
        services.ledger.clock = lambda: base() + timedelta(minutes=5)
        host.fire_timer("poll_documents")
    finally:
        logging.getLogger().removeHandler(capture)
    (bad,) = list(services.ledger.scan("BlobPath eq '11287/supplier/virus.exe'"))
    archived = [r for r in capture.records if r.getMessage().startswith("archived ledger ")]
    assert [r.ledger_key for r in archived] == [row.key]
    quarantined = [r for r in capture.records if r.getMessage().startswith("quarantined ")]
    assert quarantined, "no quarantine line"
    for record in quarantined:
        match = re.fullmatch(r"quarantined (?P<path>.+) \(ledger (?P<key>[^)]+)\): (?P<reason>.+)", record.getMessage())
        assert match, record.getMessage()
        assert match["path"] == "11287/supplier/virus.exe" and match["key"] == bad.key == record.ledger_key
        assert "'.exe' is not accepted" in match["reason"]
