"""Typed application settings, read and validated once at start-up.

Every setting the app reads is declared in ``SETTINGS``; ``load_settings()`` parses them
all and raises ``SettingsError`` naming each missing or malformed one.

    settings = load_settings()          # from os.environ
    settings.inqom_api_base_url         # 'https://wa-fred-accounting-documents-prod.azurewebsites.net'

Storage is reached through the ``DocumentStorage`` connection, either a connection
string (``DocumentStorage``, Azurite locally) or identity-based service URIs
(``DocumentStorage__blobServiceUri`` …, as the Functions host reads them too).
"""

from __future__ import annotations

import json
import ipaddress
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

INQOM_PROD_TOKEN_URL = "https://auth.inqom.com/identity/connect/token"
INQOM_PROD_API_BASE_URL = "https://wa-fred-accounting-documents-prod.azurewebsites.net"
ENFACT_PROD_API_BASE_URL = "https://api5.onfact.be"
STORAGE_CONNECTION = "DocumentStorage"
HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"


class SettingsError(ValueError):
    """One or more settings are missing or malformed; the message names each of them."""


def _https_or_loopback_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parsed.scheme == "http" and parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("must use https (plain http is accepted only for loopback emulators)")
    return value.rstrip("/")


def _optional_url(value: str) -> str:
    return _https_or_loopback_url(value) if value else ""


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a positive number")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("must be a number from 0 to 1")
    return number


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


_HOSTNAME = re.compile(r"(?i)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")


def _hosts(value: str) -> tuple[str, ...]:
    """Bare host names or IP addresses, lower case: no scheme, port, path or userinfo."""
    hosts = []
    for item in _csv(value):
        try:
            hosts.append(str(ipaddress.ip_address(item)))
        except ValueError:
            if not _HOSTNAME.fullmatch(item):
                raise ValueError(f"entry {item!r} is not a bare host name (no scheme, port, path or userinfo)") from None
            hosts.append(item.lower())
    return tuple(hosts)


def _folder_ids(value: str) -> frozenset[int]:
    return frozenset(_positive_int(item) for item in _csv(value))


def _extensions(value: str) -> frozenset[str]:
    return frozenset(item.lower().lstrip(".") for item in _csv(value))


def _company_folders(value: str) -> dict[str, int]:
    """``uuid=folderId;uuid=folderId`` → {uuid (lower case): folderId}."""
    mapping: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in value.split(";"))):
        uuid, sep, folder = pair.partition("=")
        if not sep or not uuid.strip():
            raise ValueError(f"entry {pair!r} is not 'companyUuid=folderId'")
        mapping[uuid.strip().lower()] = _positive_int(folder.strip())
    return mapping


def _company_sellers(value: str) -> dict[str, str]:
    """``uuid=FR12345678901;uuid=123456789`` → {uuid (lower case): seller VAT or legal id (upper case, no spaces)}."""
    mapping: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in value.split(";"))):
        uuid, sep, seller = pair.partition("=")
        seller = "".join(seller.split()).upper()
        if not sep or not uuid.strip() or not seller.isascii() or not seller.isalnum():
            raise ValueError(f"entry {pair!r} is not 'companyUuid=sellerVatOrLegalId'")
        mapping[uuid.strip().lower()] = seller
    return mapping


def _duplicates_policy(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in ("hold", "send"):
        raise ValueError("must be hold or send")
    return lowered


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no", ""):
        return False
    raise ValueError("must be true or false")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, how it is parsed, and its default (None = required)."""

    env: str
    attr: str
    parse: Callable[[str], Any]
    default: str | None
    doc: str

    @property
    def required(self) -> bool:
        return self.default is None


SETTINGS: tuple[Setting, ...] = (
    Setting("INQOM_TOKEN_URL", "inqom_token_url", _https_or_loopback_url, INQOM_PROD_TOKEN_URL,
            "Inqom identity server token endpoint (staging: https://staging-auth.inqom.com/identity/connect/token)."),
    Setting("INQOM_API_BASE_URL", "inqom_api_base_url", _https_or_loopback_url, INQOM_PROD_API_BASE_URL,
            "Inqom accounting-documents API base URL."),
    Setting("INQOM_RATE_LIMIT", "inqom_rate_limit", _positive_float, "12",
            "Inqom requests/s for the whole fleet (every instance and process) per Inqom credential, shared "
            "through the ledger table; Inqom answers 429 above about 15/s per client and user, so leave room "
            "for the firm's other tools."),
    Setting("INQOM_POLL_SHARE", "inqom_poll_share", _fraction, "0.3",
            "Share of INQOM_RATE_LIMIT kept for the status poller while uploads want the rest; "
            "either side borrows what the other leaves unused."),
    Setting("INQOM_MAX_REQUESTS_PER_SECOND", "inqom_max_rps", _positive_float, "10",
            "Conservative per-process Inqom rate used only while the shared budget's store (the ledger "
            "table) cannot be reached."),
    Setting("HTTP_CONNECT_TIMEOUT_SECONDS", "http_connect_timeout", _positive_float, "10",
            "Connect timeout of every outgoing HTTP call."),
    Setting("HTTP_READ_TIMEOUT_SECONDS", "http_read_timeout", _positive_float, "120",
            "Read timeout of every outgoing HTTP call (between bytes, not the whole transfer)."),
    Setting("HTTP_MAX_ATTEMPTS", "http_max_attempts", _positive_int, "4",
            "Attempts per call for transient failures (connection errors, 429, 5xx)."),
    Setting("HTTP_BACKOFF_CAP_SECONDS", "http_backoff_cap", _positive_float, "30",
            "Upper bound of one retry wait, Retry-After included."),
    Setting("KEY_VAULT_URL", "key_vault_url", _optional_url, "",
            "Key Vault URI; when empty, secrets come from environment variables."),
    Setting("SECRET_CACHE_SECONDS", "secret_cache_seconds", _positive_float, "300",
            "How long a secret read from Key Vault is reused before it is read again (rotation)."),
    Setting("INBOX_CONTAINER", "inbox_container", str, "inbox", "Blob container watched for new documents."),
    Setting("ARCHIVE_CONTAINER", "archive_container", str, "archive", "Blob container for verified originals."),
    Setting("QUARANTINE_CONTAINER", "quarantine_container", str, "quarantine",
            "Blob container for documents that cannot be sent, with the reason in metadata."),
    Setting("LEDGER_TABLE", "ledger_table", str, "ledger", "Table holding one row per document."),
    Setting("LEDGER_BACKUP_CONTAINER", "ledger_backup_container", str, "ledger-backup",
            "Blob container of the daily ledger export (one create-only ledger-YYYY-MM-DD.jsonl a day)."),
    Setting("LEDGER_BACKUP_SCHEDULE", "ledger_backup_schedule", str, "0 15 3 * * *",
            "NCRONTAB schedule of the daily ledger export (UTC)."),
    Setting("ENFACT_QUEUE", "enfact_queue", str, "enfact-invoices", "Queue of accepted enFact pushes."),
    Setting("ALLOWED_FOLDER_IDS", "allowed_folder_ids", _folder_ids, "",
            "Comma-separated Inqom accounting folder ids accepted from the inbox; empty = any."),
    Setting("MAX_UPLOAD_BYTES", "max_upload_bytes", _positive_int, str(100 * 1024 * 1024),
            "Largest file sent to Inqom."),
    Setting("ALLOWED_EXTENSIONS", "allowed_extensions", _extensions,
            "pdf,jpg,jpeg,png,tif,tiff,heic,heif,gif,bmp,webp,xml",
            "File extensions accepted from the inbox."),
    Setting("EINVOICE_MAX_PARSE_BYTES", "einvoice_max_parse_bytes", _positive_int, str(20 * 1024 * 1024),
            "Largest file read as a structured e-invoice (Factur-X, UBL, CII); a larger one is sent unread."),
    Setting("EINVOICE_MAX_PARSE_SECONDS", "einvoice_max_parse_seconds", _positive_float, "10",
            "Longest wait for one e-invoice read; past it the file is sent unread, the reason on its row."),
    Setting("BUSINESS_DUPLICATES", "business_duplicates", _duplicates_policy, "hold",
            "A second document of one invoice (same folder, seller, number, type, total): hold (quarantined as "
            "a duplicate of the first, `replay --force` sends it) or send."),
    Setting("UPLOAD_CLAIM_SECONDS", "upload_claim_seconds", _positive_int, "900",
            "How long an upload claim holds before another worker may take it over; renewed while the upload "
            "runs, and at least host.json's functionTimeout."),
    Setting("UPLOAD_MAX_ATTEMPTS", "upload_max_attempts", _positive_int, "5",
            "Upload attempts for transient failures before the blob is quarantined; keep <= host.json poisonBlobThreshold."),
    Setting("POLL_SCHEDULE", "poll_schedule", str, "0 */5 * * * *", "NCRONTAB schedule of the status poll."),
    Setting("POLL_BATCH_SIZE", "poll_batch_size", _positive_int, "1000",
            "Due documents a tick takes at most (its budget usually ends it first)."),
    Setting("POLL_TICK_BUDGET_SECONDS", "poll_tick_budget", _positive_float, "240",
            "A tick stops taking new work after this long; the rest waits for the next tick."),
    Setting("POLL_WORKERS", "poll_workers", _positive_int, "8",
            "Rows a tick works on at once (threads), all under the Inqom rate budget."),
    Setting("POLL_TICK_GRACE_SECONDS", "poll_tick_grace", _positive_float, "10",
            "Longest wait for one read inside a tick: the most a tick may overrun its budget."),
    Setting("REPAIR_SWEEP_BATCH", "repair_sweep_batch", _positive_int, "100",
            "Ledger rows and inbox blobs the repair sweep examines per poll tick."),
    Setting("REPAIR_GRACE_MINUTES", "repair_grace_minutes", _positive_float, "30",
            "An inbox blob this old with no ledger row (its event was lost) is adopted by the repair sweep."),
    Setting("POLL_FIRST_DELAY_SECONDS", "poll_first_delay", _positive_float, "60",
            "Wait between an upload and its first status poll."),
    Setting("POLL_MAX_INTERVAL_SECONDS", "poll_max_interval", _positive_float, "3600",
            "Cap of the exponential backoff between polls of a document Inqom is still processing."),
    Setting("POLL_REVIEW_INTERVAL_SECONDS", "poll_review_interval", _positive_float, "21600",
            "Poll interval for documents awaiting human work in Inqom (ToReview, ManualProcessing)."),
    Setting("POLL_MAX_AGE_HOURS", "poll_max_age_hours", _positive_float, "336",
            "A document still not processed after this long is flagged Stale."),
    Setting("ARCHIVE_ALLOWED_HOSTS", "archive_allowed_hosts", _hosts, "fredprodstorage.blob.core.windows.net",
            "Hosts from which Inqom's temporary public URLs may be downloaded."),
    Setting("ENFACT_API_BASE_URL", "enfact_api_base_url", _https_or_loopback_url, ENFACT_PROD_API_BASE_URL,
            "enFact (onFact) REST API base URL."),
    Setting("ENFACT_COMPANY_FOLDERS", "enfact_company_folders", _company_folders, "",
            "enFact company UUID → Inqom accounting folder id, as 'uuid=folderId;uuid=folderId'."),
    Setting("ENFACT_SELLER_IDS", "enfact_seller_ids", _company_sellers, "",
            "enFact company UUID → its VAT id (else legal id), as 'uuid=FR12345678901;uuid=...': the seller of "
            "its invoices in the business key, so a pushed invoice and a drop of the same one meet."),
    Setting("ENFACT_RECONCILE_SCHEDULE", "enfact_reconcile_schedule", str, "0 30 2 * * *",
            "NCRONTAB schedule of the daily enFact reconcile."),
    Setting("ENFACT_RECONCILE_DAYS", "enfact_reconcile_days", _positive_int, "7",
            "How many days back the reconcile looks for invoices that were never pushed."),
    Setting("WEBHOOK_MAX_BODY_BYTES", "webhook_max_body_bytes", _positive_int, "65536",
            "Largest enFact push body accepted."),
    Setting("SECRETS_FROM_ENVIRONMENT", "secrets_from_environment", _bool, "false",
            "Allow secrets from environment variables when KEY_VAULT_URL is empty (local development)."),
)


@dataclass(frozen=True)
class Settings:
    inqom_token_url: str
    inqom_api_base_url: str
    inqom_rate_limit: float
    inqom_poll_share: float
    inqom_max_rps: float
    http_connect_timeout: float
    http_read_timeout: float
    http_max_attempts: int
    http_backoff_cap: float
    key_vault_url: str
    secret_cache_seconds: float
    inbox_container: str
    archive_container: str
    quarantine_container: str
    ledger_table: str
    ledger_backup_container: str
    ledger_backup_schedule: str
    enfact_queue: str
    allowed_folder_ids: frozenset[int]
    max_upload_bytes: int
    allowed_extensions: frozenset[str]
    einvoice_max_parse_bytes: int
    einvoice_max_parse_seconds: float
    business_duplicates: str
    upload_claim_seconds: int
    upload_max_attempts: int
    poll_schedule: str
    poll_batch_size: int
    poll_tick_budget: float
    poll_workers: int
    poll_tick_grace: float
    repair_sweep_batch: int
    repair_grace_minutes: float
    poll_first_delay: float
    poll_max_interval: float
    poll_review_interval: float
    poll_max_age_hours: float
    archive_allowed_hosts: tuple[str, ...]
    enfact_api_base_url: str
    enfact_company_folders: dict[str, int]
    enfact_seller_ids: dict[str, str]
    enfact_reconcile_schedule: str
    enfact_reconcile_days: int
    webhook_max_body_bytes: int
    secrets_from_environment: bool
    storage: "StorageConnection" = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def http_timeout(self) -> tuple[float, float]:
        return (self.http_connect_timeout, self.http_read_timeout)


@dataclass(frozen=True)
class StorageConnection:
    """Either a connection string or identity-based service URIs (+ optional managed identity client id)."""

    connection_string: str | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    client_id: str | None = None


STORAGE_SETTING_NAMES = (
    STORAGE_CONNECTION,
    f"{STORAGE_CONNECTION}__blobServiceUri",
    f"{STORAGE_CONNECTION}__queueServiceUri",
    f"{STORAGE_CONNECTION}__tableServiceUri",
    f"{STORAGE_CONNECTION}__clientId",
)


def _storage_from(env: Mapping[str, str], problems: list[str]) -> StorageConnection | None:
    prefix = STORAGE_CONNECTION
    conn = env.get(prefix, "").strip()
    if conn:
        return StorageConnection(connection_string=conn)
    uris = {kind: env.get(f"{prefix}__{kind}ServiceUri", "").strip() for kind in ("blob", "queue", "table")}
    missing = [f"{prefix}__{kind}ServiceUri" for kind, uri in uris.items() if not uri]
    if missing:
        problems.append(
            f"{prefix}: not set (set a connection string, or identity-based {', '.join(missing)})"
        )
        return None
    return StorageConnection(
        blob_service_uri=uris["blob"],
        queue_service_uri=uris["queue"],
        table_service_uri=uris["table"],
        client_id=env.get(f"{prefix}__clientId", "").strip() or None,
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every declared setting; raise one ``SettingsError`` listing all problems by name."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is None or (raw.strip() == "" and setting.required):
            if setting.required:
                problems.append(f"{setting.env}: required setting is not set ({setting.doc})")
                continue
            raw = setting.default or ""
        try:
            values[setting.attr] = setting.parse(raw.strip())
        except ValueError as exc:
            problems.append(f"{setting.env}: {exc} (got {raw!r})")
    storage = _storage_from(env, problems)
    timeout = function_timeout_seconds()
    claim = values.get("upload_claim_seconds")
    if claim is not None and timeout is not None and claim < timeout:
        problems.append(f"UPLOAD_CLAIM_SECONDS: {claim}s is shorter than host.json functionTimeout ({timeout:.0f}s): "
                        "a claim must outlive the invocation holding it, or a watchdog sends the file again")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    return Settings(**values, storage=storage)


def function_timeout_seconds(host_json: Path = HOST_JSON) -> float | None:
    """host.json ``functionTimeout`` in seconds; None when unbounded (``-1``) or not set."""
    try:
        text = json.loads(host_json.read_text()).get("functionTimeout")
    except FileNotFoundError:
        return None
    if not text or str(text).strip() == "-1":
        return None
    days, _, clock = str(text).rpartition(".")
    hours, minutes, seconds = (float(part) for part in clock.split(":"))
    return (int(days) if days else 0) * 86400 + hours * 3600 + minutes * 60 + seconds


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (at app start-up)."""
    return load_settings()
