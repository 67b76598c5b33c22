"""Secrets, from Azure Key Vault in production or from environment variables locally.

    provider = secret_provider(settings)
    provider.get(INQOM_PASSWORD)

Key Vault reads are cached for ``SECRET_CACHE_SECONDS`` so a rotated secret is picked up
without a restart. Environment variables are the secret name upper-cased with ``-`` → ``_``
(``inqom-password`` → ``INQOM_PASSWORD``), and are allowed only when
``SECRETS_FROM_ENVIRONMENT=true`` so a production app without ``KEY_VAULT_URL`` fails loudly.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Mapping, Protocol

from shared.config import Settings

INQOM_USERNAME = "inqom-username"
INQOM_PASSWORD = "inqom-password"
INQOM_CLIENT_ID = "inqom-client-id"
INQOM_CLIENT_SECRET = "inqom-client-secret"
ENFACT_SESSION_KEY = "enfact-session-key"
ENFACT_WEBHOOK_SECRET = "enfact-webhook-secret"

SECRET_NAMES: tuple[str, ...] = (
    INQOM_USERNAME,
    INQOM_PASSWORD,
    INQOM_CLIENT_ID,
    INQOM_CLIENT_SECRET,
    ENFACT_SESSION_KEY,
    ENFACT_WEBHOOK_SECRET,
)


class SecretError(RuntimeError):
    """A secret could not be read; the message names the secret, never its value."""


class SecretProvider(Protocol):
    def get(self, name: str) -> str: ...


def env_var_for(name: str) -> str:
    return name.upper().replace("-", "_")


class EnvironmentSecrets:
    """Secrets from environment variables (local.settings.json ``Values``)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, name: str) -> str:
        value = self._environ.get(env_var_for(name), "")
        if not value:
            raise SecretError(f"secret {name!r} is not set (environment variable {env_var_for(name)})")
        return value


class KeyVaultSecrets:
    """Secrets from Key Vault, each cached for ``ttl`` seconds.

    ``client`` is an ``azure.keyvault.secrets.SecretClient`` (or anything with its
    ``get_secret(name).value``); a failed refresh keeps serving nothing stale past the TTL.
    """

    def __init__(self, client: Any, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, vault_url: str, ttl: float, credential: Any = None, *,
                 clock: Callable[[], float] = time.monotonic, **client_kwargs: Any) -> "KeyVaultSecrets":
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        credential = credential or DefaultAzureCredential()  # AZURE_CLIENT_ID selects the user-assigned identity
        client_kwargs = {"connection_timeout": 10, "read_timeout": 30, **client_kwargs}
        return cls(SecretClient(vault_url=vault_url, credential=credential, **client_kwargs), ttl, clock)

    def get(self, name: str) -> str:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(name)
            if cached and cached[0] > now:
                return cached[1]
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            value = self._client.get_secret(name).value
        except ResourceNotFoundError as exc:
            raise SecretError(f"secret {name!r} does not exist in Key Vault") from exc
        except (AzureError, ValueError, OSError) as exc:
            # ValueError: the SDK's challenge-resource check (vault URL outside *.vault.azure.net);
            # OSError: e.g. an unreadable CA bundle.
            raise SecretError(f"secret {name!r} could not be read from Key Vault: {type(exc).__name__}") from exc
        if not value:
            raise SecretError(f"secret {name!r} is empty in Key Vault")
        with self._lock:
            self._cache[name] = (now + self._ttl, value)
        return value


def secret_provider(settings: Settings, environ: Mapping[str, str] | None = None) -> SecretProvider:
    """Key Vault when ``KEY_VAULT_URL`` is set, else environment variables if allowed."""
    if settings.key_vault_url:
        return KeyVaultSecrets.from_url(settings.key_vault_url, settings.secret_cache_seconds)
    if settings.secrets_from_environment:
        return EnvironmentSecrets(environ)
    raise SecretError(
        "KEY_VAULT_URL: not set, and SECRETS_FROM_ENVIRONMENT is not true "
        "(set KEY_VAULT_URL in Azure; set SECRETS_FROM_ENVIRONMENT=true for local development)"
    )
