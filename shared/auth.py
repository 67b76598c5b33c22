"""Credentials for the two vendors, as auth layers for ``shared.http.HttpClient``.

    tokens = InqomTokenProvider(secrets, token_url, http)      # OAuth2 password grant
    inqom_http = http.with_auth(tokens)                         # Bearer on every call
    enfact_http = http.with_auth(EnfactApiKey(secrets, company_uuid))

The Inqom token is cached until ``refresh_margin`` seconds before ``expires_in`` and refreshed
by one caller at a time. MSAL is not used here: its password flow calls an Entra-only
``/common/userrealm/`` endpoint first and never serves its cache for this grant.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping

from shared.http import ApiError, HttpClient
from shared.secrets import (
    ENFACT_SESSION_KEY,
    INQOM_CLIENT_ID,
    INQOM_CLIENT_SECRET,
    INQOM_PASSWORD,
    INQOM_USERNAME,
    SecretProvider,
)

INQOM_SCOPE = "openid apidata"
DEFAULT_TOKEN_LIFETIME = 300.0


class AuthenticationError(ApiError):
    """The identity server refused the credentials: a configuration problem, not the document's."""

    permanent = False


class InqomTokenProvider:
    def __init__(
        self,
        secrets: SecretProvider,
        token_url: str,
        http: HttpClient,
        refresh_margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets
        self._token_url = token_url
        self._http = http.with_auth(None)
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._token, lifetime = self._request_token()
                self._expires_at = self._clock() + max(lifetime - self._refresh_margin, lifetime / 2)
            return self._token

    def headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def refresh(self, rejected_headers: Mapping[str, str]) -> None:
        """Drop the token that was refused, unless another thread already replaced it."""
        with self._lock:
            if rejected_headers.get("Authorization") == f"Bearer {self._token}":
                self._token = None

    def _request_token(self) -> tuple[str, float]:
        form = {
            "username": self._secrets.get(INQOM_USERNAME),
            "password": self._secrets.get(INQOM_PASSWORD),
            "grant_type": "password",
            "scope": INQOM_SCOPE,
            "client_id": self._secrets.get(INQOM_CLIENT_ID),
            "client_secret": self._secrets.get(INQOM_CLIENT_SECRET),
        }
        try:
            response = self._http.request("POST", self._token_url, body=lambda: {"data": form})
        except ApiError as exc:
            if exc.status in (400, 401):
                raise AuthenticationError("inqom-auth", "token request refused", exc.status, exc.detail) from exc
            raise
        payload = response.json()
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not token:
            raise AuthenticationError("inqom-auth", "token response has no access_token", response.status_code)
        try:
            lifetime = float(payload.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        return token, lifetime


class EnfactApiKey:
    """enFact API-key headers: ``X-SESSION-KEY`` from the secret store, ``X-COMPANY-UUID`` per company."""

    def __init__(self, secrets: SecretProvider, company_uuid: str) -> None:
        self._secrets = secrets
        self._company_uuid = company_uuid

    def headers(self) -> Mapping[str, str]:
        return {"X-SESSION-KEY": self._secrets.get(ENFACT_SESSION_KEY), "X-COMPANY-UUID": self._company_uuid}

    def refresh(self, rejected_headers: Mapping[str, str]) -> None:
        """Nothing cached here beyond the secret store's own TTL: a 403 is final."""
