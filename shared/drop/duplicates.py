"""One invoice, one Inqom document: the business key, and its claim in the ledger.

    identity = invoice_identity(11287, columns)             # folder + seller + number + type + total, or None
    first = claim_invoice(ledger, entry, identity)          # None: this row holds the invoice; else the first copy

The key names an invoice, not a file: a re-rendered PDF, the XML beside it, or the same invoice pushed by
enFact and dropped by hand meet on it. Seller = VAT id, else legal id, else normalised name, where a
French VAT id, SIRET and SIREN all name the company by its SIREN, and a Belgian VAT id and enterprise
number by that number; the folder is the routed folder id (``011287/…`` is folder 11287); the total
is taken to the cent. The claim is a row in the ``invoice`` partition naming the document row that holds
it; that row names the key first (``BusinessKey``), so a claim never points at a row that does not know
it. A holder that surely never reached Inqom (quarantined, superseded, refused or replayed with no Inqom
document) lets a later copy take the claim over, by a conditional write. Why: docs/guarantee.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Mapping

from shared.ledger.rows import (
    INVOICE_PARTITION, QUARANTINED, QUARANTINING, REFUSED, REPLAYED, SUPERSEDED, Ledger, LedgerConflict, LedgerEntry,
)
from shared.names import normalise_id, normalise_name, normalise_ref

#: States of a holder whose claim lapses, provided it never reached Inqom (``never_reached_inqom``).
_LET_GO = frozenset({QUARANTINING, QUARANTINED, SUPERSEDED, REFUSED, REPLAYED})
_CENT = Decimal("0.01")
_FRENCH_VAT = re.compile(r"FR[0-9A-Z]{2}(\d{9})")
_SIREN_OR_SIRET = re.compile(r"(\d{9})(?:\d{5})?")
_BELGIAN_NUMBER = re.compile(r"(?:BE)?([01]\d{9})")


@dataclass(frozen=True)
class InvoiceIdentity:
    folder: str
    seller: str
    number: str
    type_code: str
    total: str

    @property
    def key(self) -> str:
        text = "\n".join((self.folder, self.seller, self.number, self.type_code, self.total))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def __str__(self) -> str:
        return f"folder {self.folder}, seller {self.seller}, invoice {self.number}, type {self.type_code}, " \
               f"total {self.total}"


@dataclass(frozen=True)
class FirstCopy:
    """The document row that holds an invoice."""

    partition: str
    key: str
    path: str
    inqom_id: int | None


def invoice_identity(folder_id: int, columns: Mapping[str, Any]) -> InvoiceIdentity | None:
    """The business key from a row's ``EInvoice*`` columns; None when the number, the total or any seller
    identity is missing (such a document is sent as any other)."""
    registered = normalise_id(columns.get("EInvoiceSellerVat")) or normalise_id(columns.get("EInvoiceSellerId"))
    seller = _company(registered) if registered else normalise_name(columns.get("EInvoiceSellerName"))
    number = normalise_ref(columns.get("EInvoiceNumber"))
    total = _cents(columns.get("EInvoiceTotalWithVat"))
    if not (seller and number and total):
        return None
    return InvoiceIdentity(str(int(folder_id)), seller, number,
                           str(columns.get("EInvoiceTypeCode") or "").strip() or "?", total)


def _company(registered: str) -> str:
    """One name per company whichever of its ids a channel carries: ``FR12345678901``, ``34567890100017``
    and ``345678901`` → ``SIREN 345678901``; ``BE0123456789`` and ``0123456789`` → ``BE 0123456789``."""
    if match := _FRENCH_VAT.fullmatch(registered) or _SIREN_OR_SIRET.fullmatch(registered):
        return f"SIREN {match[1]}"
    if match := _BELGIAN_NUMBER.fullmatch(registered):
        return f"BE {match[1]}"
    return registered


def _cents(text: Any) -> str | None:
    try:
        amount = Decimal(str(text).strip())
        return str(amount.quantize(_CENT, rounding=ROUND_HALF_UP)) if amount.is_finite() else None
    except (InvalidOperation, ValueError):  # not an amount, or more digits than any total has
        return None


def claim_invoice(ledger: Ledger, entry: LedgerEntry, identity: InvoiceIdentity,
                  replaying: str | None = None) -> FirstCopy | None:
    """Claim ``identity`` for ``entry`` (whose row already names it in ``BusinessKey``).

    None when ``entry`` holds it: claimed now, by an earlier attempt of the same row, taken over from
    a holder that never reached Inqom, or from the row whose blob ``entry`` replays (``replaying``,
    its ledger key: an operator put that very document back). Otherwise the holder, whatever its progress.
    """
    mine = {"Holder": f"{entry.partition}/{entry.key}", "HolderPath": entry.get("BlobPath"),
            "Invoice": str(identity)}
    while True:
        try:
            ledger.insert(INVOICE_PARTITION, identity.key, mine)
            return None
        except LedgerConflict:
            claim = ledger.get(INVOICE_PARTITION, identity.key)
        if claim is None:
            continue  # removed by an operator between the two calls
        if claim.get("Holder") == mine["Holder"]:
            return None
        partition, _, key = str(claim.get("Holder") or "").partition("/")
        holder = ledger.get(partition, key) if key and key != replaying else None
        if holder is not None and holder.get("BusinessKey") == identity.key and not never_reached_inqom(holder):
            return FirstCopy(partition, key, str(holder.get("BlobPath") or claim.get("HolderPath") or ""),
                             _int(holder.get("InqomId")))
        try:
            ledger.update(claim, **mine, TakenOverFrom=claim.get("Holder"))
            return None
        except LedgerConflict:
            continue


def never_reached_inqom(holder: LedgerEntry) -> bool:
    """Whether the holder is settled without any Inqom document, and surely never sent one."""
    if holder.state not in _LET_GO or holder.get("InqomId") not in (None, "") or holder.get("ExtraInqomIds"):
        return False
    return int(holder.get("Attempts") or 0) <= int(holder.get("Unsent") or 0)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
