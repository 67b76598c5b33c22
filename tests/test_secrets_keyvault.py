"""``shared.secrets.KeyVaultSecrets`` against the real ``SecretClient`` and a loopback HTTPS Key Vault.

The SDK runs unchanged (azure-keyvault-secrets: HTTP pipeline, retry policy, TLS verification,
logging policy, challenge-based auth policy) against ``tests.support.keyvault.KeyVaultStandIn``,
which speaks Key Vault's REST shapes for ``GET /secrets/{name}/{version}``: the 401 challenge,
secret bundles, ``SecretNotFound`` / ``SecretDisabled`` errors and scripted 500/503 faults.
Tokens come from ``StaticTokenCredential``, a complete implementation of azure-core's credential
protocol that always hands out the token the stand-in expects.

Loopback vaults need ``verify_challenge_resource=False`` (the SDK checks that the challenge
resource ``vault.azure.net`` is a parent domain of the vault host; see tests/support/keyvault.py).
The app itself never passes it, so production keeps that verification.

NOT covered here: real Microsoft Entra ID token acquisition (``DefaultAzureCredential`` is only
constructed, never asked for a token), the managed identity endpoint and the
``AZURE_CLIENT_ID`` user-assigned identity selection, Key Vault RBAC / access policies
(a 403 for a missing role), Key Vault firewall / private endpoints, CAE claims challenges, and the
real service's throttling (429) behaviour.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import pytest
from azure.core.credentials import SupportsTokenInfo, TokenCredential

from shared.config import load_settings
from shared.secrets import INQOM_PASSWORD, INQOM_USERNAME, KeyVaultSecrets, SecretError, secret_provider
from tests.support.keyvault import (
    DEFAULT_TENANT,
    KEY_VAULT_SCOPE,
    KeyVaultStandIn,
    StaticTokenCredential,
)

PASSWORD = "pw-Kv!7Qx-vault-value"
ROTATED = "pw-Kv!9Rz-rotated-value"
USERNAME = "api@cabinet.test"
FAST_RETRY = {"retry_total": 3, "retry_backoff_factor": 0.01, "retry_backoff_max": 0.05}


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def vault() -> Iterator[KeyVaultStandIn]:
    with KeyVaultStandIn() as instance:
        yield instance


@pytest.fixture
def credential(vault: KeyVaultStandIn) -> StaticTokenCredential:
    return StaticTokenCredential(vault.token)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def clocked(vault, credential, clock) -> Iterator[Callable[..., KeyVaultSecrets]]:
    """``clocked(ttl, **client_kwargs)`` → ``KeyVaultSecrets.from_url`` over a real SecretClient and ``clock``."""
    providers: list[KeyVaultSecrets] = []

    def make(ttl: float = 60.0, **client_kwargs) -> KeyVaultSecrets:
        provider = KeyVaultSecrets.from_url(vault.url, ttl, credential=credential, clock=clock,
                                            **{**vault.client_kwargs, **client_kwargs})
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider._client.close()


def from_url(vault: KeyVaultStandIn, credential, ttl: float = 300.0, **client_kwargs) -> KeyVaultSecrets:
    return KeyVaultSecrets.from_url(vault.url, ttl, credential=credential, **{**vault.client_kwargs, **client_kwargs})


def assert_names_only(error: SecretError, name: str, *values: str) -> None:
    message = str(error)
    assert repr(name) in message
    for value in values:
        assert value not in message


# --------------------------------------------------------------------------- authentication


def test_credential_implements_the_azure_core_protocols() -> None:
    credential = StaticTokenCredential("t")
    assert isinstance(credential, TokenCredential)
    assert isinstance(credential, SupportsTokenInfo)
    assert credential.get_token("s").token == "t"
    assert credential.get_token_info("s").token == "t"


def test_get_goes_through_the_key_vault_challenge(vault, credential) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = from_url(vault, credential)

    assert provider.get(INQOM_PASSWORD) == PASSWORD

    probe, authorized = vault.requests
    # 1. the policy first sends the request without credentials to elicit the challenge ...
    assert (probe.method, probe.path, probe.status) == ("GET", f"/secrets/{INQOM_PASSWORD}/", 401)
    assert probe.authorization is None
    assert probe.query["api-version"]
    # 2. ... then asks the credential for a token for the challenge's resource and tenant ...
    assert [(r.scopes, r.tenant_id, r.enable_cae) for r in credential.requests] == [
        ((KEY_VAULT_SCOPE,), DEFAULT_TENANT, True)
    ]
    # 3. ... and repeats the request with it.
    assert (authorized.path, authorized.status) == (probe.path, 200)
    assert authorized.authorization == f"Bearer {vault.token}"


def test_later_reads_reuse_the_challenge_and_the_token(vault, credential) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    vault.set_secret(INQOM_USERNAME, USERNAME)
    provider = from_url(vault, credential)
    provider.get(INQOM_PASSWORD)
    vault.clear_requests()

    assert provider.get(INQOM_USERNAME) == USERNAME

    (request,) = vault.requests
    assert (request.status, request.authorization) == (200, f"Bearer {vault.token}")
    assert len(credential.requests) == 1


def test_a_token_the_vault_rejects_is_a_secret_error(vault) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = from_url(vault, StaticTokenCredential("a-token-for-another-tenant"))

    with pytest.raises(SecretError, match="could not be read from Key Vault: ClientAuthenticationError") as caught:
        provider.get(INQOM_PASSWORD)

    assert_names_only(caught.value, INQOM_PASSWORD, PASSWORD, "a-token-for-another-tenant")
    assert {r.status for r in vault.requests} == {401}


def test_an_untrusted_certificate_is_refused(vault, credential) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    # The system trust store, not the stand-in's certificate.
    provider = from_url(vault, credential, connection_verify=True, **FAST_RETRY)

    with pytest.raises(SecretError, match="ServiceRequestError") as caught:
        provider.get(INQOM_PASSWORD)

    assert_names_only(caught.value, INQOM_PASSWORD, PASSWORD)
    assert vault.requests == []
    assert credential.requests == []


def test_a_challenge_for_another_domain_is_a_secret_error(vault, credential) -> None:
    """Production settings (resource verification on) against a host outside *.vault.azure.net."""
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = KeyVaultSecrets.from_url(vault.url, 300, credential=credential, connection_verify=vault.ca_path)

    with pytest.raises(SecretError):
        provider.get(INQOM_PASSWORD)


# --------------------------------------------------------------------------- cache and rotation


def test_second_get_within_ttl_makes_no_request(vault, credential) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = from_url(vault, credential, ttl=300)
    assert provider.get(INQOM_PASSWORD) == PASSWORD
    seen = len(vault.requests)

    assert provider.get(INQOM_PASSWORD) == PASSWORD
    assert provider.get(INQOM_PASSWORD) == PASSWORD

    assert len(vault.requests) == seen


def test_each_secret_is_cached_separately(vault, clocked, clock) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    vault.set_secret(INQOM_USERNAME, USERNAME)
    provider = clocked(ttl=60)

    assert provider.get(INQOM_PASSWORD) == PASSWORD
    assert provider.get(INQOM_USERNAME) == USERNAME
    assert provider.get(INQOM_PASSWORD) == PASSWORD
    assert provider.get(INQOM_USERNAME) == USERNAME

    assert [r.path for r in vault.requests if r.status == 200] == [
        f"/secrets/{INQOM_PASSWORD}/",
        f"/secrets/{INQOM_USERNAME}/",
    ]


def test_rotated_secret_is_served_once_the_ttl_elapses(vault, clocked, clock) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = clocked(ttl=60)
    assert provider.get(INQOM_PASSWORD) == PASSWORD

    vault.set_secret(INQOM_PASSWORD, ROTATED)  # a new latest version, as Key Vault rotation does
    vault.clear_requests()
    clock.advance(59.9)
    assert provider.get(INQOM_PASSWORD) == PASSWORD  # still within the TTL: no request
    assert vault.requests == []

    clock.advance(0.1)
    assert provider.get(INQOM_PASSWORD) == ROTATED
    (request,) = vault.requests
    assert (request.path, request.status) == (f"/secrets/{INQOM_PASSWORD}/", 200)

    vault.clear_requests()
    clock.advance(30)
    assert provider.get(INQOM_PASSWORD) == ROTATED  # the new value is cached for a fresh TTL
    assert vault.requests == []


def test_a_failed_refresh_serves_nothing_stale(vault, clocked, clock) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = clocked(ttl=60, **FAST_RETRY)
    assert provider.get(INQOM_PASSWORD) == PASSWORD

    clock.advance(61)
    vault.fail_next(503, times=FAST_RETRY["retry_total"] + 1)
    with pytest.raises(SecretError, match="could not be read from Key Vault: HttpResponseError") as caught:
        provider.get(INQOM_PASSWORD)
    assert_names_only(caught.value, INQOM_PASSWORD, PASSWORD)

    assert provider.get(INQOM_PASSWORD) == PASSWORD  # the vault is back: read again, not from a stale cache
    assert [r.status for r in vault.requests[-5:]] == [503, 503, 503, 503, 200]


# --------------------------------------------------------------------------- missing, empty, unreadable


def test_missing_secret_is_a_secret_error_naming_it(vault, credential) -> None:
    vault.set_secret(INQOM_USERNAME, USERNAME)
    provider = from_url(vault, credential)

    with pytest.raises(SecretError, match="does not exist in Key Vault") as caught:
        provider.get(INQOM_PASSWORD)

    assert_names_only(caught.value, INQOM_PASSWORD, USERNAME, vault.token)
    assert vault.requests[-1].status == 404


def test_missing_secret_is_not_cached(vault, clocked) -> None:
    provider = clocked(ttl=60)
    with pytest.raises(SecretError):
        provider.get(INQOM_PASSWORD)

    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    assert provider.get(INQOM_PASSWORD) == PASSWORD


def test_empty_secret_is_a_secret_error(vault, credential) -> None:
    vault.set_secret(INQOM_PASSWORD, "")
    provider = from_url(vault, credential)

    with pytest.raises(SecretError, match=f"secret '{INQOM_PASSWORD}' is empty in Key Vault"):
        provider.get(INQOM_PASSWORD)
    assert vault.requests[-1].status == 200


def test_disabled_secret_is_a_secret_error(vault, credential) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD, enabled=False)
    provider = from_url(vault, credential)

    with pytest.raises(SecretError, match="could not be read from Key Vault: HttpResponseError") as caught:
        provider.get(INQOM_PASSWORD)

    assert_names_only(caught.value, INQOM_PASSWORD, PASSWORD)
    assert vault.requests[-1].status == 403


def test_unreachable_vault_is_a_secret_error(vault, credential) -> None:
    with KeyVaultStandIn() as stopped:
        dead_url = stopped.url
    # nothing listens on dead_url's port any more; vault's certificate file stays trusted
    provider = KeyVaultSecrets.from_url(dead_url, 300, credential=credential, **vault.client_kwargs, **FAST_RETRY)

    with pytest.raises(SecretError, match="could not be read from Key Vault: ServiceRequestError") as caught:
        provider.get(INQOM_PASSWORD)
    assert_names_only(caught.value, INQOM_PASSWORD)


# --------------------------------------------------------------------------- transient faults


@pytest.mark.parametrize("status", [500, 503])
def test_transient_fault_is_retried_by_the_sdk(vault, credential, status) -> None:
    vault.set_secret(INQOM_USERNAME, USERNAME)
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = from_url(vault, credential, **FAST_RETRY)
    provider.get(INQOM_USERNAME)  # challenge done: what follows is only the fault and its retries
    vault.clear_requests()
    vault.fail_next(status, times=2)

    assert provider.get(INQOM_PASSWORD) == PASSWORD

    assert [(r.status, r.authorization) for r in vault.requests] == [
        (status, f"Bearer {vault.token}"),
        (status, f"Bearer {vault.token}"),
        (200, f"Bearer {vault.token}"),
    ]


def test_fault_before_the_challenge_is_retried_too(vault, credential) -> None:
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    vault.fail_next(503, times=1)
    provider = from_url(vault, credential, **FAST_RETRY)

    assert provider.get(INQOM_PASSWORD) == PASSWORD
    assert [r.status for r in vault.requests] == [503, 401, 200]


# --------------------------------------------------------------------------- logging


def test_secret_value_and_token_are_not_logged_at_default_settings(vault, credential, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, azure.* and urllib3 included
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = from_url(vault, credential)

    assert provider.get(INQOM_PASSWORD) == PASSWORD

    azure_records = [r for r in caplog.records if r.name.startswith("azure")]
    assert azure_records, "the SDK's HTTP logging policy should have logged the requests"
    assert PASSWORD not in caplog.text
    assert vault.token not in caplog.text
    assert "'Authorization': 'REDACTED'" in caplog.text


def test_network_trace_logging_would_leak_the_value(vault, credential, caplog) -> None:
    """Positive control for the test above, and the reason the app must never pass ``logging_enable=True``:
    the SDK's network trace logs response bodies and unredacted headers at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="azure")
    vault.set_secret(INQOM_PASSWORD, PASSWORD)
    provider = from_url(vault, credential, logging_enable=True)

    provider.get(INQOM_PASSWORD)

    # The bearer token may already be masked here (shared.observability's filter, once the app is
    # imported, redacts "Bearer …" on every handler); a response body is beyond any such filter.
    assert PASSWORD in caplog.text


# --------------------------------------------------------------------------- provider selection


def test_secret_provider_selects_key_vault_when_the_url_is_set(vault, monkeypatch) -> None:
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    settings = load_settings({"KEY_VAULT_URL": vault.url, "DocumentStorage": "UseDevelopmentStorage=true"})

    provider = secret_provider(settings, environ={"INQOM_PASSWORD": "from-the-environment"})

    # Only the type: reading through it would ask DefaultAzureCredential for a real Entra ID token.
    assert isinstance(provider, KeyVaultSecrets)
    assert vault.requests == []  # building the provider does not touch the vault
