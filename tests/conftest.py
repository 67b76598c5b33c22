"""Shared fixtures: Azurite (one per session), an Inqom emulator per test, app settings per test.

Every test gets its own containers, table and queue names, so tests sharing Azurite never see
each other's blobs or rows.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import pytest

from shared.config import get_settings
from shared.services import Services, get_services
from tests.emulators.enfact import EnfactEmulator
from tests.emulators.inqom import InqomEmulator
from tests.support.appsettings import (  # noqa: F401  (re-exported for the test modules)
    ENFACT_COMPANY, ENFACT_FOLDER, ENFACT_SELLER_VAT, ENFACT_SESSION_KEY, INQOM_CREDENTIALS, WEBHOOK_SECRET, app_settings,
)
from tests.support.azurite import Azurite

@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite.start() as instance:
        yield instance


@pytest.fixture
def inqom() -> Iterator[InqomEmulator]:
    with InqomEmulator(**INQOM_CREDENTIALS) as emulator:
        yield emulator


@pytest.fixture
def enfact() -> Iterator[EnfactEmulator]:
    with EnfactEmulator(session_key=ENFACT_SESSION_KEY, companies={ENFACT_COMPANY: []}) as emulator:
        yield emulator


@pytest.fixture
def settings_overrides() -> dict[str, str]:
    """Override in a test module or test to change settings before the app is built."""
    return {}


@pytest.fixture
def app_env(azurite, inqom, enfact, monkeypatch, settings_overrides) -> Iterator[dict[str, str]]:
    # Fast retries and short reads: faults are injected on loopback, nothing is really slow.
    env = app_settings(azurite, inqom, enfact, HTTP_BACKOFF_CAP_SECONDS="0.05", HTTP_READ_TIMEOUT_SECONDS="5",
                       **settings_overrides)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_services.cache_clear()
    get_services().ensure_storage()
    yield env
    get_settings.cache_clear()
    get_services.cache_clear()


@pytest.fixture
def services(app_env) -> Services:
    return get_services()


@pytest.fixture
def host(app_env):
    """The registered functions of ``function_app.app``, driven as the host would."""
    import function_app
    from devtools.host import LocalHost

    return LocalHost(function_app.app)


def pytest_addoption(parser) -> None:
    parser.addoption("--full", action="store_true",
                     help="run every crash point of the simulation (what CI runs); without it, a quarter of "
                          "them, a different quarter each day (tests/test_simulation.py, CRASH_SAMPLE)")


def pytest_configure(config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_StatsFromWorkers(), "simulation-stats-from-workers")


def pytest_collection_modifyitems(items) -> None:
    """Longest first, so that under pytest-xdist no long test starts when the others are nearly done."""
    def seconds(item) -> float:
        marker = item.get_closest_marker("long")
        return marker.args[0] if marker else 0

    items.sort(key=seconds, reverse=True)  # stable: the rest keep their order, and their fixtures


def pytest_sessionfinish(session) -> None:
    """Under pytest-xdist each worker hands its simulation counts to the controller, which prints them."""
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        from tests.support.simulation import STATS

        worker_output["simulation_stats"] = {
            f.name: (sorted_sets(value) if isinstance(value, dict) else value)
            for f in dataclasses.fields(STATS) for value in [getattr(STATS, f.name)]}


def sorted_sets(points: dict[str, set[str]]) -> dict[str, list[str]]:
    return {scenario: sorted(names) for scenario, names in points.items()}


class _StatsFromWorkers:
    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        from tests.support.simulation import STATS

        for name, value in node.workeroutput.get("simulation_stats", {}).items():
            if isinstance(value, dict):
                for scenario, names in value.items():
                    getattr(STATS, name).setdefault(scenario, set()).update(names)
            else:
                setattr(STATS, name, getattr(STATS, name) + value)


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.support.simulation import STATS

    if STATS.crash_runs or STATS.schedules:
        terminalreporter.write_line(STATS.summary())
        from tests.test_simulation import crash_sample

        every, offset = crash_sample(terminalreporter.config)
        if every > 1:
            terminalreporter.write_line(
                f"  crash points sampled: 1 in {every} (SIM_CRASH_SAMPLE={offset}); every one with --full, as CI runs")
        for scenario, points in sorted(STATS.crash_points.items()):
            terminalreporter.write_line(f"  {scenario}: {len(points)} crash points × (before, after)")
