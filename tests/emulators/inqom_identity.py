"""Inqom's identity server in the emulator: the token endpoint (OAuth2 password grant), the
tokens it issued, and the bearer check the API makes.

    identity = InqomIdentity(emulator)  # reads the emulator's credentials and token_ttl
    token = json.loads(identity.token(request).body)["access_token"]  # a POST of the password grant
    assert identity.authorized(Headers([("Authorization", f"Bearer {token}")]))
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Protocol

from tests.emulators._server import Headers, Reply, json_reply
from tests.emulators.inqom_http import Request

TOKEN_PATH = "/identity/connect/token"
TOKEN_FIELDS = ("username", "password", "grant_type", "scope", "client_id", "client_secret")
SCOPE = "openid apidata"


class Credentials(Protocol):
    """The emulator's credentials (tests change ``token_ttl`` at any time)."""

    username: str
    password: str
    client_id: str
    client_secret: str
    token_ttl: float


def _oauth_error(error: str, description: str | None = None) -> Reply:
    payload = {"error": error}
    if description is not None:
        payload["error_description"] = description
    return json_reply(400, payload, {"Cache-Control": "no-store", "Pragma": "no-cache"})


class InqomIdentity:
    """Issues bearer tokens for the one credential it knows, and checks them."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._lock = threading.Lock()
        self.tokens: dict[str, float] = {}  # token -> time.monotonic() expiry

    def token(self, request: Request) -> Reply:
        """``POST /identity/connect/token``."""
        body = request.body
        if body.media_type != "application/x-www-form-urlencoded":
            return _oauth_error("invalid_request", "Content-Type must be application/x-www-form-urlencoded, "
                                f"got {request.headers.get('Content-Type')!r}")
        if body.error:
            return _oauth_error("invalid_request", body.error)
        names = [name for name, _ in body.fields]
        problems = []
        missing = [name for name in TOKEN_FIELDS if name not in names]
        if missing:
            problems.append("missing field(s): " + ", ".join(missing))
        extra = sorted(set(names) - set(TOKEN_FIELDS))
        if extra:
            problems.append("unexpected field(s): " + ", ".join(extra))
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append("field(s) sent more than once: " + ", ".join(repeated))
        if problems:
            return _oauth_error("invalid_request", "; ".join(problems))
        form = dict(body.fields)
        known = self._credentials
        if form["client_id"] != known.client_id or form["client_secret"] != known.client_secret:
            return _oauth_error("invalid_client")
        if form["grant_type"] != "password":
            return _oauth_error("invalid_request", f'grant_type must be "password", got {form["grant_type"]!r}')
        if form["scope"] != SCOPE:
            return _oauth_error("invalid_request", f'scope must be exactly "{SCOPE}", got {form["scope"]!r}')
        if form["username"] != known.username or form["password"] != known.password:
            return _oauth_error("invalid_grant")
        token = secrets.token_urlsafe(32)
        ttl = known.token_ttl
        with self._lock:
            self.tokens[token] = time.monotonic() + ttl
        return json_reply(200, {"access_token": token, "expires_in": int(ttl),
                                "token_type": "Bearer", "scope": SCOPE},
                          {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def authorized(self, headers: Headers) -> bool:
        """Whether ``Authorization`` carries a bearer token issued here and not yet expired."""
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        with self._lock:
            expiry = self.tokens.get(token.strip())
        return expiry is not None and time.monotonic() < expiry

    def expire(self) -> None:
        """Make every token issued so far invalid."""
        with self._lock:
            self.tokens.clear()
