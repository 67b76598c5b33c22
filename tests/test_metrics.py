"""shared/metrics.py: what reaches the (loopback) Application Insights ingestion endpoint, and the no-op path."""

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from shared import metrics

REPO = Path(__file__).resolve().parents[1]


def _probe(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "tests.support.metrics_probe", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _points(report: dict) -> dict[str, list[dict]]:
    """Metric data points by name: {value, count, min, max, properties} (the MetricData envelope's fields)."""
    points: dict[str, list[dict]] = defaultdict(list)
    for item in report["received"]:
        if item["data"]["baseType"] != "MetricData":
            continue
        base = item["data"]["baseData"]
        for metric in base["metrics"]:
            points[metric["name"]].append({**metric, "properties": base.get("properties") or {}})
    return points


@pytest.fixture(scope="module")
def exported() -> dict[str, list[dict]]:
    report = _probe()
    assert report["enabled"] is True and report["flushed"] is True
    return _points(report)


def test_documents_are_counted_by_outcome(exported):
    by_outcome = defaultdict(float)
    for point in exported[metrics.DOCUMENTS]:
        by_outcome[point["properties"][metrics.OUTCOME_KEY]] += point["value"]
    assert set(by_outcome) == metrics.OUTCOMES
    assert by_outcome[metrics.QUARANTINED] == 2
    assert all(by_outcome[o] == 1 for o in metrics.OUTCOMES - {metrics.QUARANTINED})


def test_inqom_calls_are_counted_by_status(exported):
    by_status = defaultdict(float)
    for point in exported[metrics.INQOM_CALLS]:
        by_status[point["properties"][metrics.STATUS_KEY]] += point["value"]
    # customDimensions values are strings: the alert queries compare "429", "5…" and "error".
    assert dict(by_status) == {"200": 1, "429": 2, "503": 1, metrics.NO_ANSWER: 1}


def test_throttle_wait_is_a_histogram_of_seconds(exported):
    (point,) = exported[metrics.THROTTLE_WAIT_SECONDS]
    assert (point["value"], point["count"], point["min"], point["max"]) == (3.0, 2, 0.5, 2.5)


def test_pending_gauges_report_the_last_values_set(exported):
    (count,) = exported[metrics.PENDING_DOCUMENTS]
    (oldest,) = exported[metrics.OLDEST_PENDING_AGE_SECONDS]
    assert count["value"] == 7
    assert oldest["value"] == 5400.5


def test_every_exported_name_is_a_module_constant(exported):
    ours = {name for name in exported if name.startswith(metrics.METER_NAME + ".")}
    assert ours == set(metrics.METRIC_NAMES)
    for name, keys in metrics.ATTRIBUTES.items():
        for point in exported[name]:
            assert set(point["properties"]) == set(keys), (name, point["properties"])


def test_nothing_is_exported_when_telemetry_is_off():
    report = _probe("--off")
    assert report["enabled"] is False
    assert report["received"] == []


def test_invalid_values_are_refused_in_process():
    # Telemetry is off in the test process: the calls are no-ops, but the contract still holds.
    metrics.document_outcome(metrics.ARCHIVED)
    metrics.inqom_call(None)
    metrics.throttle_wait(-1)
    metrics.pending(0, 0)
    with pytest.raises(ValueError):
        metrics.document_outcome("archive")
    with pytest.raises(TypeError):
        metrics.inqom_call("429")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        metrics.inqom_call(True)  # type: ignore[arg-type]
