"""Standard Webhooks signature verification (https://www.standardwebhooks.com).

    verify_signature(secrets="whsec_...", headers=req.headers, body=req.get_body())

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, HMAC-SHA256 with the
base64-decoded secret (``whsec_`` prefix removed), sent as ``webhook-signature: v1,<base64>``;
several space-separated signatures may be sent (the sender rotating its secret), and the
receiver may hold several secrets separated by spaces or commas (ours rotating). The timestamp
must be within ``tolerance`` of now, either way. Written here rather than taken from the
``standardwebhooks`` package so that malformed input (bad base64, non-UTF-8 bodies, odd
headers) gives a reason instead of an exception; tests check it against that package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Mapping

TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"
_MAX_ID = 256


class SignatureError(ValueError):
    """The push is not authentic (or not fresh); the message says which check failed."""


def _secret_bytes(secret: str) -> bytes:
    text = secret.strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("webhook secret is not valid base64 (configuration error)") from exc
    if not key:
        raise SignatureError("webhook secret is empty (configuration error)")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC>`` for this message (used by the sender tool and tests)."""
    digest = hmac.new(_secret_bytes(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(secrets: str, headers: Mapping[str, str], body: bytes,
                     now: float | None = None, tolerance: int = TOLERANCE_SECONDS) -> str:
    """Return the ``webhook-id`` of an authentic, fresh push; raise ``SignatureError`` otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id", "").strip()
    timestamp_text = lowered.get("webhook-timestamp", "").strip()
    signature_header = lowered.get("webhook-signature", "").strip()
    if not (webhook_id and timestamp_text and signature_header):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(webhook_id) > _MAX_ID or not webhook_id.isprintable():
        raise SignatureError("webhook-id is not a short printable identifier")
    if not re.fullmatch(r"[0-9]{1,12}", timestamp_text):  # not \d: int() would read "١٧٩٥…" too
        raise SignatureError("webhook-timestamp is not a Unix time in seconds")
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise SignatureError("webhook-timestamp is too old (more than 5 minutes)")
    if timestamp > current + tolerance:
        raise SignatureError("webhook-timestamp is in the future (more than 5 minutes)")
    keys = [_secret_bytes(s) for s in re.split(r"[\s,]+", secrets.strip()) if s]
    signed = f"{webhook_id}.{timestamp_text}.".encode() + body
    expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in keys]
    for candidate in signature_header.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, digest) for digest in expected):
            return webhook_id
    raise SignatureError("no valid v1 signature for this body")
