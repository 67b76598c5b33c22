"""Shared fixtures: Azurite (one per session), an Inqom emulator per test, app settings per test.

Every test gets its own containers, table and queue names, so tests sharing Azurite never see
each other's blobs or rows.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from shared.config import get_settings
from shared.services import Services, get_services
from tests.emulators.enfact import EnfactEmulator
from tests.emulators.inqom import InqomEmulator
from tests.support.azurite import Azurite

ENFACT_SESSION_KEY = "sk-Secr3t-enfact-session"
ENFACT_COMPANY = "0b6a3c5e-1f0d-4c1e-9a55-2f1f6f0e9c01"
ENFACT_FOLDER = 11287
WEBHOOK_SECRET = "whsec_c2VjcmV0LWZvci10ZXN0cy1vbmx5LTEyMzQ1Ng=="

INQOM_CREDENTIALS = {
    "username": "api@cabinet.test",
    "password": "pw-Secr3t-value",
    "client_id": "bridge-client",
    "client_secret": "cs-Secr3t-value",
}


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


def app_settings(azurite: Azurite, inqom: InqomEmulator, enfact: EnfactEmulator, **overrides: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    env = {
        "DocumentStorage": azurite.connection_string,
        "INQOM_TOKEN_URL": inqom.token_url,
        "INQOM_API_BASE_URL": inqom.base_url,
        "ARCHIVE_ALLOWED_HOSTS": inqom.host,
        "INBOX_CONTAINER": f"inbox{suffix}",
        "ARCHIVE_CONTAINER": f"archive{suffix}",
        "QUARANTINE_CONTAINER": f"quarantine{suffix}",
        "LEDGER_TABLE": f"ledger{suffix}",
        "ENFACT_QUEUE": f"enfact-{suffix}",
        "POLL_SCHEDULE": "0 */5 * * * *",  # binding expressions (%POLL_SCHEDULE%) need the app setting itself
        "ENFACT_RECONCILE_SCHEDULE": "0 30 2 * * *",
        "SECRETS_FROM_ENVIRONMENT": "true",
        "INQOM_USERNAME": INQOM_CREDENTIALS["username"],
        "INQOM_PASSWORD": INQOM_CREDENTIALS["password"],
        "INQOM_CLIENT_ID": INQOM_CREDENTIALS["client_id"],
        "INQOM_CLIENT_SECRET": INQOM_CREDENTIALS["client_secret"],
        "ENFACT_API_BASE_URL": enfact.base_url,
        "ENFACT_COMPANY_FOLDERS": f"{ENFACT_COMPANY}={ENFACT_FOLDER}",
        "ENFACT_SESSION_KEY": ENFACT_SESSION_KEY,
        "ENFACT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "HTTP_BACKOFF_CAP_SECONDS": "0.05",
        "HTTP_READ_TIMEOUT_SECONDS": "5",
        "INQOM_MAX_REQUESTS_PER_SECOND": "1000",
    }
    env.update(overrides)
    return env


@pytest.fixture
def settings_overrides() -> dict[str, str]:
    """Override in a test module or test to change settings before the app is built."""
    return {}


@pytest.fixture
def app_env(azurite, inqom, enfact, monkeypatch, settings_overrides) -> Iterator[dict[str, str]]:
    env = app_settings(azurite, inqom, enfact, **settings_overrides)
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
