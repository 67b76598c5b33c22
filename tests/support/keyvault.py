"""A loopback HTTPS stand-in for the Azure Key Vault secrets REST API, and a static-token credential.

    with KeyVaultStandIn() as vault:
        vault.set_secret("inqom-password", "s3cret")
        credential = StaticTokenCredential(vault.token)
        client = SecretClient(vault.url, credential, **vault.client_kwargs)
        client.get_secret("inqom-password").value          # 's3cret'

It serves exactly what ``SecretClient.get_secret`` needs, so the real client runs unchanged: its
HTTP pipeline (retry, logging, TLS verification) and its challenge-based authentication policy.

* TLS on ``127.0.0.1`` with a self-signed certificate made at start (SAN ``127.0.0.1``,
  ``localhost``); its PEM is written to ``ca_path`` for ``connection_verify=``.
* Key Vault's authentication challenge: a request without ``Authorization: Bearer <token>``
  (or with any other token) gets ``401`` and
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"``. The SDK turns ``resource`` into the scope
  ``https://vault.azure.net/.default`` and the path of ``authorization`` into the tenant id.
* ``GET /secrets/{name}/`` (latest) and ``GET /secrets/{name}/{version}``, both requiring the
  ``api-version`` query parameter: ``200`` with a secret bundle, ``404 SecretNotFound``, or
  ``403 Forbidden`` (inner ``SecretDisabled``) for a disabled secret, in Key Vault's error shape
  ``{"error": {"code": ..., "message": ...}}``.
* ``fail_next(status, times)`` answers the next ``times`` requests (whatever they are, before
  authentication, as a front-end outage would) with ``status``; ``Retry-After`` is never sent.
* Every request is recorded (method, path, query, headers, the status answered).

Challenge resource verification: since azure-keyvault-secrets 4.6.0 the client checks that the
challenge ``resource`` domain is a parent of the vault's domain (``*.vault.azure.net``), which a
loopback vault can never satisfy; the SDK's documented opt-out is the client constructor keyword
``verify_challenge_resource=False`` (changelog 4.6.0, https://aka.ms/azsdk/blog/vault-uri; see
``_validate_challenge_resource`` in ``azure/keyvault/secrets/_shared/challenge_auth_policy.py``).
``client_kwargs`` includes it, with ``connection_verify``.

This is a test fixture, never a production component. Not modelled: secret writes, listing,
paging, soft delete, Key Vault RBAC/access policies, CAE claims challenges, PoP tokens.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_TENANT",
    "DEFAULT_TOKEN",
    "KEY_VAULT_RESOURCE",
    "KEY_VAULT_SCOPE",
    "KeyVaultStandIn",
    "RecordedRequest",
    "StaticTokenCredential",
    "TokenRequest",
    "forget_challenge",
]

KEY_VAULT_RESOURCE = "https://vault.azure.net"
KEY_VAULT_SCOPE = KEY_VAULT_RESOURCE + "/.default"
DEFAULT_TENANT = "72f988bf-0000-4000-8000-00000000beef"
DEFAULT_TOKEN = "kv-stand-in-token-6f1d2c"


# --------------------------------------------------------------------------- credential


@dataclass(frozen=True)
class TokenRequest:
    """One token request the SDK made of a ``StaticTokenCredential``."""

    method: str  # "get_token" or "get_token_info"
    scopes: tuple[str, ...]
    tenant_id: str | None
    claims: str | None
    enable_cae: bool


class StaticTokenCredential:
    """A ``TokenCredential`` (and ``SupportsTokenInfo``) that always hands out one token.

    A complete implementation of azure-core's credential protocols, not a mock: the SDK's
    bearer/challenge policies call it exactly as they call azure-identity credentials (azure-core
    prefers ``get_token_info`` when present). Each request is recorded in ``requests``.
    """

    def __init__(self, token: str = DEFAULT_TOKEN, lifetime: float = 3600.0) -> None:
        self.token = token
        self.lifetime = lifetime
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()

    def _record(self, request: TokenRequest) -> int:
        with self._lock:
            self.requests.append(request)
        return int(time.time() + self.lifetime)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        expires_on = self._record(TokenRequest("get_token", scopes, tenant_id, claims, enable_cae))
        return AccessToken(self.token, expires_on)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        options = options or {}
        expires_on = self._record(
            TokenRequest(
                "get_token_info",
                scopes,
                options.get("tenant_id"),
                options.get("claims"),
                bool(options.get("enable_cae", False)),
            )
        )
        return AccessTokenInfo(self.token, expires_on)

    def close(self) -> None:
        pass

    def __enter__(self) -> "StaticTokenCredential":
        return self

    def __exit__(self, *args: Any) -> None:
        pass


# --------------------------------------------------------------------------- certificate


def _self_signed_pem() -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for CN=127.0.0.1, SAN 127.0.0.1 + localhost, valid 1 day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# --------------------------------------------------------------------------- server


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # header names lower-cased
    status: int

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class _Version:
    version: str
    value: str
    enabled: bool
    created: int
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def forget_challenge(url: str) -> None:
    """Drop the SDK's process-wide cached challenge for ``url``'s host:port.

    SecretClient caches a vault's challenge per authority for the whole process, so a client of a
    later stand-in that happens to get the same port would skip the challenge. The cache lives in a
    private SDK module; if it moves, this does nothing (only the first-request assertions could
    then be affected).
    """
    try:
        from azure.keyvault.secrets._shared import HttpChallengeCache
    except ImportError:  # pragma: no cover - SDK layout changed
        return
    HttpChallengeCache.remove_challenge_for_url(url)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, vault: "KeyVaultStandIn", context: ssl.SSLContext) -> None:
        self.vault = vault
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the per-connection thread, so a stalled client cannot block accept().
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-request is not a test failure


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _answer(self, status: int, body: Mapping[str, Any] | None, extra: Mapping[str, str] | None = None) -> int:
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        return status

    def _handle(self) -> None:
        self._drain_body()
        split = urlsplit(self.path)
        status = self.server.vault._respond(self, self.command, split.path, parse_qs(split.query))
        self.server.vault._record(
            RecordedRequest(
                method=self.command,
                path=split.path,
                query=parse_qs(split.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                status=status,
            )
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def _error(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}


class KeyVaultStandIn:
    """A Key Vault secrets endpoint on ``https://127.0.0.1:<free port>``; see the module docstring."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        tenant_id: str = DEFAULT_TENANT,
        resource: str = KEY_VAULT_RESOURCE,
    ) -> None:
        self.token = token
        self.tenant_id = tenant_id
        self.resource = resource
        self.requests: list[RecordedRequest] = []
        self._secrets: dict[str, list[_Version]] = {}
        self._faults: list[int] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.ca_path = ""

    # ---- lifecycle

    def start(self) -> "KeyVaultStandIn":
        cert_pem, key_pem = _self_signed_pem()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="kv-stand-in-")
        self.ca_path = os.path.join(self._tmpdir.name, "cert.pem")
        key_path = os.path.join(self._tmpdir.name, "key.pem")
        with open(self.ca_path, "wb") as f:
            f.write(cert_pem)
        with open(key_path, "wb") as f:
            f.write(key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.ca_path, key_path)
        self._server = _Server(self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="kv-stand-in", daemon=True
        )
        self._thread.start()
        forget_challenge(self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> "KeyVaultStandIn":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- addresses

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("stand-in not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def challenge(self) -> str:
        return (
            f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
            f'resource="{self.resource}"'
        )

    @property
    def client_kwargs(self) -> dict[str, Any]:
        """SecretClient keywords to reach this stand-in: trust its certificate, accept its challenge."""
        return {"connection_verify": self.ca_path, "verify_challenge_resource": False}

    # ---- state

    def set_secret(self, name: str, value: str, *, enabled: bool = True, content_type: str | None = None) -> str:
        """Add a new (latest) version of ``name``; returns the version id."""
        version = uuid.uuid4().hex
        with self._lock:
            self._secrets.setdefault(name, []).append(
                _Version(version, value, enabled, int(time.time()), content_type)
            )
        return version

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (e.g. 500, 503), before authentication."""
        with self._lock:
            self._faults.extend([status] * times)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def secret_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/secrets/")]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # ---- protocol

    def _respond(self, handler: _Handler, method: str, path: str, query: dict[str, list[str]]) -> int:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            return handler._answer(fault, _error("ServiceUnavailable", f"Injected fault {fault}."))

        if handler.headers.get("Authorization", "") != f"Bearer {self.token}":
            message = (
                "AKV10000: Request is missing a Bearer or PoP token."
                if not handler.headers.get("Authorization")
                else "AKV10032: Invalid issuer."
            )
            return handler._answer(401, _error("Unauthorized", message), {"WWW-Authenticate": self.challenge})

        if not query.get("api-version"):
            return handler._answer(400, _error("BadParameter", "The api-version query parameter is required."))

        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method != "GET" or not (2 <= len(parts) <= 3) or parts[0] != "secrets":
            return handler._answer(405 if parts[:1] == ["secrets"] else 404, _error("BadParameter", "Not supported."))
        name = parts[1]
        wanted = parts[2] if len(parts) == 3 and parts[2] else None

        with self._lock:
            versions = list(self._secrets.get(name, ()))
        match = versions[-1] if versions and wanted is None else next(
            (v for v in versions if v.version == wanted), None
        )
        if match is None:
            ident = f"{name}/{wanted}" if wanted else name
            return handler._answer(
                404,
                _error(
                    "SecretNotFound",
                    f"A secret with (name/id) {ident} was not found in this key vault. If you recently "
                    "deleted this secret you may be able to recover it using the correct recovery command.",
                ),
            )
        if not match.enabled:
            return handler._answer(
                403, _error("Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
            )
        bundle: dict[str, Any] = {
            "value": match.value,
            "id": f"{self.url}/secrets/{name}/{match.version}",
            "attributes": {
                "enabled": True,
                "created": match.created,
                "updated": match.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": dict(match.tags),
        }
        if match.content_type:
            bundle["contentType"] = match.content_type
        return handler._answer(200, bundle)
