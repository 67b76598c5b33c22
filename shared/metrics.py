"""Operational metrics, exported to Application Insights with the rest of the telemetry.

    from shared import metrics
    metrics.document_outcome("archived")          # a document reached a final (or notable) state
    metrics.inqom_call(200)                        # one answered Inqom call; inqom_call(None) = no answer
    metrics.throttle_wait(1.25)                    # seconds a caller waited for Inqom budget or Retry-After
    metrics.pending(count=42, oldest_age_seconds=3600.0)   # set by the poll tick from the pending index
    metrics.ocr_disagreement("Amount")             # Inqom's reading of one field disagrees with the e-invoice

The instruments come from the OpenTelemetry metrics API's global meter provider. When
``shared.observability.configure_telemetry()`` has switched the Azure Monitor export on (connection
string set), that provider is the Azure Monitor one and every value below reaches Application
Insights' ``customMetrics`` table (attributes become ``customDimensions``); when telemetry is off the
API's default provider makes every call a no-op. Instruments are created at import: the API binds
them to the real provider whenever it is installed, before or after this import.

The names (``DOCUMENTS``, ``INQOM_CALLS`` …), the attribute keys (``OUTCOME_KEY``, ``STATUS_KEY``)
and the outcome values (``OUTCOMES``) are the contract with the alert rules and the workbook in
``infra/``: tests/test_infra.py checks every query there against these constants.
"""

from __future__ import annotations

import threading
from typing import Iterable

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Observation

METER_NAME = "inqom_bridge"

#: Counter: documents by outcome (attribute ``outcome``).
DOCUMENTS = "inqom_bridge.documents"
#: Counter: Inqom API calls by status (attribute ``status``: the HTTP status code, or ``error`` when no answer came).
INQOM_CALLS = "inqom_bridge.inqom_calls"
#: Histogram: seconds waited for Inqom rate budget, a 429 or a ``Retry-After`` before a call.
THROTTLE_WAIT_SECONDS = "inqom_bridge.throttle_wait_seconds"
#: Observable gauge: documents in the pending index (last value the poll tick measured).
PENDING_DOCUMENTS = "inqom_bridge.pending_documents"
#: Observable gauge: age in seconds of the oldest pending document (last value the poll tick measured).
OLDEST_PENDING_AGE_SECONDS = "inqom_bridge.oldest_pending_age_seconds"
#: Counter: archived documents whose field Inqom read disagrees with their e-invoice (attribute ``field``).
OCR_DISAGREEMENTS = "inqom_bridge.ocr_disagreements"

METRIC_NAMES = (DOCUMENTS, INQOM_CALLS, THROTTLE_WAIT_SECONDS, PENDING_DOCUMENTS, OLDEST_PENDING_AGE_SECONDS,
                OCR_DISAGREEMENTS)

OUTCOME_KEY = "outcome"
STATUS_KEY = "status"
FIELD_KEY = "field"
#: The ``status`` value of a call that got no HTTP answer (connection error, timeout).
NO_ANSWER = "error"

UPLOADED = "uploaded"
ARCHIVED = "archived"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
DELETED = "deleted"
STALE = "stale"
REFUSED = "refused"
SUPERSEDED = "superseded"
OUTCOMES = frozenset({UPLOADED, ARCHIVED, DUPLICATE, QUARANTINED, DELETED, STALE, REFUSED, SUPERSEDED})
#: The ``field`` values of ``OCR_DISAGREEMENTS``: the ledger columns the OCR audit compares.
OCR_FIELDS = ("Amount", "EffectifDate", "CounterParty")

#: Attribute keys each metric carries (the alert/workbook drift test reads this).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    DOCUMENTS: (OUTCOME_KEY,),
    INQOM_CALLS: (STATUS_KEY,),
    THROTTLE_WAIT_SECONDS: (),
    PENDING_DOCUMENTS: (),
    OLDEST_PENDING_AGE_SECONDS: (),
    OCR_DISAGREEMENTS: (FIELD_KEY,),
}

_meter = otel_metrics.get_meter(METER_NAME)
_documents = _meter.create_counter(DOCUMENTS, unit="{document}", description="Documents by outcome.")
_inqom_calls = _meter.create_counter(INQOM_CALLS, unit="{call}", description="Inqom API calls by HTTP status.")
_ocr_disagreements = _meter.create_counter(
    OCR_DISAGREEMENTS, unit="{document}",
    description="Archived documents on which Inqom's reading of a field disagrees with the e-invoice.")
_throttle_wait = _meter.create_histogram(
    THROTTLE_WAIT_SECONDS, unit="s", description="Time waited for Inqom rate budget, a 429 or a Retry-After.")

_lock = threading.Lock()
_pending: tuple[int, float] | None = None  # (count, oldest age in seconds), set by pending()


def _observe_count(options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        last = _pending
    return [] if last is None else [Observation(last[0])]


def _observe_oldest(options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        last = _pending
    return [] if last is None else [Observation(last[1])]


_meter.create_observable_gauge(PENDING_DOCUMENTS, callbacks=[_observe_count], unit="{document}",
                               description="Documents in the pending index, as the last poll tick measured.")
_meter.create_observable_gauge(OLDEST_PENDING_AGE_SECONDS, callbacks=[_observe_oldest], unit="s",
                               description="Age of the oldest pending document, as the last poll tick measured.")


def document_outcome(outcome: str) -> None:
    """Count one document reaching ``outcome`` (one of ``OUTCOMES``); an unknown outcome raises ``ValueError``."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown document outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
    _documents.add(1, {OUTCOME_KEY: outcome})


def inqom_call(status: int | None) -> None:
    """Count one Inqom API call: its HTTP status code, or ``None`` when no answer came (recorded as ``error``)."""
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise TypeError(f"status must be an int HTTP status code or None, got {status!r}")
    _inqom_calls.add(1, {STATUS_KEY: NO_ANSWER if status is None else status})


def ocr_disagreement(field: str) -> None:
    """Count one document whose ``field`` (one of ``OCR_FIELDS``) Inqom read otherwise than its e-invoice says."""
    if field not in OCR_FIELDS:
        raise ValueError(f"unknown OCR field {field!r}; expected one of {list(OCR_FIELDS)}")
    _ocr_disagreements.add(1, {FIELD_KEY: field})


def throttle_wait(seconds: float) -> None:
    """Record one wait before an Inqom call (budget, 429 or ``Retry-After``), in seconds; negatives count as 0."""
    _throttle_wait.record(max(0.0, float(seconds)))


def pending(count: int, oldest_age_seconds: float) -> None:
    """Set the pending gauges: documents in the pending index and the age of the oldest, in seconds.

    The gauges report these last values at every export until the next call (the poll tick measures
    them from the pending index each tick); before the first call they report nothing.
    """
    global _pending
    with _lock:
        _pending = (max(0, int(count)), max(0.0, float(oldest_age_seconds)))


class InqomCallMetrics:
    """``shared.http.CallObserver`` for the Inqom API client: calls by status, waits for the budget."""

    def answered(self, status: int | None) -> None:
        inqom_call(status)

    def waited(self, seconds: float) -> None:
        if seconds > 0.001:
            throttle_wait(seconds)
