"""App settings pointing the app at Azurite and the loopback emulators (tests and benchmarks).

    env = app_settings(azurite, inqom, enfact, POLL_BATCH_SIZE="3")

Every call gets fresh container, table and queue names, so runs sharing one Azurite never see
each other's blobs or rows. Without an emulator, the vendor URLs point at a closed loopback port:
nothing outside this machine is ever contacted.
"""

from __future__ import annotations

import uuid
from typing import Any

ENFACT_SESSION_KEY = "sk-Secr3t-enfact-session"
ENFACT_COMPANY = "0b6a3c5e-1f0d-4c1e-9a55-2f1f6f0e9c01"
ENFACT_FOLDER = 11287
ENFACT_SELLER_VAT = "BE0999888777"  # the enFact company's own VAT id: the seller of its invoices
WEBHOOK_SECRET = "whsec_c2VjcmV0LWZvci10ZXN0cy1vbmx5LTEyMzQ1Ng=="
INQOM_CREDENTIALS = {
    "username": "api@cabinet.test",
    "password": "pw-Secr3t-value",
    "client_id": "bridge-client",
    "client_secret": "cs-Secr3t-value",
}
_CLOSED_PORT = "http://127.0.0.1:9"


def app_settings(azurite: Any, inqom: Any = None, enfact: Any = None, **overrides: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    env = {
        "DocumentStorage": azurite.connection_string,
        "INQOM_TOKEN_URL": inqom.token_url if inqom else f"{_CLOSED_PORT}/identity/connect/token",
        "INQOM_API_BASE_URL": inqom.base_url if inqom else _CLOSED_PORT,
        "ARCHIVE_ALLOWED_HOSTS": "127.0.0.1",
        "INBOX_CONTAINER": f"inbox{suffix}",
        "ARCHIVE_CONTAINER": f"archive{suffix}",
        "QUARANTINE_CONTAINER": f"quarantine{suffix}",
        "LEDGER_BACKUP_CONTAINER": f"ledger-backup{suffix}",
        "LEDGER_TABLE": f"ledger{suffix}",
        "ENFACT_QUEUE": f"enfact-{suffix}",
        "POLL_SCHEDULE": "0 */5 * * * *",  # binding expressions (%POLL_SCHEDULE%) need the app setting itself
        "ENFACT_RECONCILE_SCHEDULE": "0 30 2 * * *",
        "LEDGER_BACKUP_SCHEDULE": "0 15 3 * * *",
        "SECRETS_FROM_ENVIRONMENT": "true",
        "INQOM_USERNAME": INQOM_CREDENTIALS["username"],
        "INQOM_PASSWORD": INQOM_CREDENTIALS["password"],
        "INQOM_CLIENT_ID": INQOM_CREDENTIALS["client_id"],
        "INQOM_CLIENT_SECRET": INQOM_CREDENTIALS["client_secret"],
        "ENFACT_API_BASE_URL": enfact.base_url if enfact else _CLOSED_PORT,
        "ENFACT_COMPANY_FOLDERS": f"{ENFACT_COMPANY}={ENFACT_FOLDER}",
        "ENFACT_SELLER_IDS": f"{ENFACT_COMPANY}={ENFACT_SELLER_VAT}",
        "ENFACT_SESSION_KEY": ENFACT_SESSION_KEY,
        "ENFACT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "INQOM_MAX_REQUESTS_PER_SECOND": "1000",
        "INQOM_RATE_LIMIT": "1000",
    }
    env.update(overrides)
    return env
