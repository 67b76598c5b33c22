"""Names and references folded for comparing, as the archive's tags, ``find`` and the business key compare them.

    normalise_name("L'Oréal S.A.")      # 'loreal sa'
    normalise_ref("F#2025/001")         # 'f 2025/001'
    normalise_id(" fr 12 345678901 ")   # 'FR12345678901' (VAT and legal ids)

Each result is at most ``MAX_LENGTH`` characters (a blob index tag value) and None when nothing is left.
"""

from __future__ import annotations

import re
import unicodedata

MAX_LENGTH = 256

# Letters NFKD does not decompose into ASCII.
_FOLD = str.maketrans({"æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L",
                       "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH", "ı": "i", "ß": "ss"})
_JOINERS = re.compile(r"['’‘`´.]+")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_NOT_REF = re.compile(r"[^a-z0-9+\-./:=_]+")


def fold(text: str) -> str:
    """Accents and ligatures folded to ASCII, case folded."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def normalise_name(text: str | None) -> str | None:
    """A counterparty, seller or beneficiary: ``"L'Oréal S.A."`` → ``"loreal sa"``."""
    if not text:
        return None
    return _cut(_NOT_ALNUM.sub(" ", _JOINERS.sub("", fold(text))).strip())


def normalise_ref(text: str | None) -> str | None:
    """A document reference or invoice number: ``"F#2025/001"`` → ``"f 2025/001"``."""
    if not text:
        return None
    return _cut(" ".join(_NOT_REF.sub(" ", fold(text)).split()))


def normalise_id(text: str | None) -> str | None:
    """A VAT or legal id: letters and digits only, upper case (``"FR 12 345678901"`` → ``"FR12345678901"``)."""
    if not text:
        return None
    return _cut("".join(c for c in fold(text) if c.isascii() and c.isalnum()).upper())


def _cut(text: str) -> str | None:
    return text[:MAX_LENGTH].rstrip() or None
