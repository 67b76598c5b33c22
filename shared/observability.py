"""Logging context, secret redaction and optional OpenTelemetry export, in one place.

    with log_context(invocation_id=context.invocation_id):
        with log_context(ledger_key=key, inqom_id=42):
            log.info("uploaded")      # record carries invocation_id, ledger_key, inqom_id, enfact_id

``ContextFilter`` copies the current context onto every record (as attributes, which the Azure
Monitor exporter turns into custom dimensions) and masks credentials that might slip into a
message or a traceback: bearer tokens, ``sig=``/``code=``/``password=``-style query values, and
``whsec_`` keys. ``error_text(exc)`` is an exception's text, masked the same way, for ledger
columns and command-line output.
``configure_telemetry()`` exports to Application Insights only when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set; otherwise it does nothing.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import traceback
from contextlib import contextmanager
from typing import Any, Iterator

FIELDS = ("invocation_id", "ledger_key", "inqom_id", "enfact_id")
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("inqom_bridge_log_context", default={})

_REDACTIONS = (
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1***"),
    # also percent-encoded (a signed URL quoted inside another URL's query: ...%3Fsv%3D1%26sig%3D...)
    (re.compile(r"(?i)(?:\b|(?<=%3F)|(?<=%26))(sig|code|access_token|client_secret|password|token|key)(=|%3D)"
                r"[^&\s\"']+"), r"\1\2***"),
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_***"),
)


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def error_text(exc: BaseException) -> str:
    """``str(exc)`` with credentials masked; the type's name when that is empty."""
    return redact(str(exc)) or type(exc).__name__


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (e.g. ``ledger_key=...``) to every log record emitted inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the context for the rest of the enclosing ``log_context`` block."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = _context.get()
        for name in FIELDS:
            setattr(record, name, current.get(name, "-"))
        if record.args:
            record.msg, record.args = record.getMessage(), ()
        record.msg = redact(str(record.msg))
        if record.exc_info:
            # Formatters print exc_text when exc_info is gone; the exception itself may quote a signed URL.
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


LOCAL_FORMAT = ("%(asctime)s %(levelname)-7s %(name)s [inv=%(invocation_id)s ledger=%(ledger_key)s "
                "inqom=%(inqom_id)s enfact=%(enfact_id)s] %(message)s")

def install_filter() -> None:
    """Attach ``ContextFilter`` to every handler of the root logger (the Functions worker's included)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())


def configure_telemetry() -> bool:
    """Azure Monitor OpenTelemetry export when the connection string is set; returns whether it is on."""
    if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor()  # root logger: our modules, the functions and warnings from the SDKs
    install_filter()
    return True
