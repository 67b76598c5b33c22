"""Safe Azure Table keys for ids that come from outside (webhook ids, invoice ids, company UUIDs).

    safe_key("msg_2Kq9")         # 'msg_2Kq9' — plain ids stay readable
    safe_key("a/b#c?d")          # '~3f1c…'  — anything else becomes a fixed-length digest

PartitionKey and RowKey refuse ``/``, ``\\``, ``#``, ``?`` and control characters, are limited to
1 KiB, and ``%`` is unreliable in them (URL paths). An id made only of the characters below, and
short, is kept as it is; any other becomes ``~`` + SHA-256 digest. ``~`` is not in the plain
alphabet, so a digest never equals a plain id. Callers keep the original value in a column.
"""

from __future__ import annotations

import hashlib
import re

_PLAIN = re.compile(r"[A-Za-z0-9_.:@=+-]{1,200}")


def safe_key(text: str) -> str:
    if _PLAIN.fullmatch(text):
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:48]


def key_of(*parts: str) -> str:
    """Several ids joined into one key (``|`` separates them; each part is made safe first)."""
    return "|".join(safe_key(part) for part in parts)
