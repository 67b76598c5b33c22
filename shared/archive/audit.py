"""A free audit of Inqom's OCR: what Inqom read from a document, against what its e-invoice says.

    audit = audit_ocr(ArchiveFields.from_document(document), EInvoiceFacts.from_row(entry), entry.get("Kind"))
    audit.fields             # ("Amount",)
    audit.ledger_columns()   # {"OcrMismatch": "Amount", "OcrMismatchDetail": "Amount: Inqom 120.00, invoice 1200.00"}

Pure. A field is compared only when both sides have it: ``Amount`` with the total incl. VAT (equal as
decimals, so 1200 is 1200.00; a credit note's in absolute value, as Inqom may book it negative),
``EffectifDate`` with the issue date, ``CounterParty`` with the seller's name, or the buyer's on a sales
invoice (kind ``client``). Names agree when, normalised by ``normalise_name``, one's words are a
whole-word run of the other's ("ACME" and "ACME SAS"). A disagreement is a note on the row, never a hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from shared.archive.tags import ArchiveFields, EInvoiceFacts, amount_text, table_text
from shared.metrics import OCR_FIELDS
from shared.names import normalise_name

AMOUNT, EFFECTIF_DATE, COUNTER_PARTY = OCR_FIELDS
#: The row's kind of a sales invoice (shared.drop.routing): the firm's client is the seller, Inqom's
#: counterparty is the buyer.
SALES_KIND = "client"
#: UNTDID 1001 codes EN 16931 uses for credit notes (381 the common one).
CREDIT_NOTE_TYPE_CODES = frozenset({"81", "83", "261", "262", "296", "308", "381", "396", "420", "458", "532"})
#: UTF-16 units of each name quoted in the detail line (the whole line is cut to ``LEDGER_TEXT_LIMIT``).
NAME_SHOWN = 200


@dataclass(frozen=True)
class OcrAudit:
    """The fields on which Inqom and the e-invoice disagree (in ``OCR_FIELDS`` order) and one line saying how."""

    fields: tuple[str, ...] = ()
    detail: str = ""

    def ledger_columns(self) -> dict[str, str]:
        """``OcrMismatch`` and ``OcrMismatchDetail`` when there is a disagreement; nothing when they agree."""
        if not self.fields:
            return {}
        return {"OcrMismatch": ",".join(self.fields), "OcrMismatchDetail": self.detail}


def amounts_agree(inqom: Decimal, invoice: Decimal, type_code: str | None) -> bool:
    if type_code in CREDIT_NOTE_TYPE_CODES:
        return abs(inqom) == abs(invoice)
    return inqom == invoice


def names_agree(inqom: str, invoice: str) -> bool:
    """Equal once normalised, or one's words a whole-word run of the other's; True when either has no letter."""
    ours, theirs = normalise_name(inqom), normalise_name(invoice)
    if ours is None or theirs is None:
        return True
    return f" {ours} " in f" {theirs} " or f" {theirs} " in f" {ours} "


def _shown(name: str) -> str:
    return table_text(" ".join(name.split()), NAME_SHOWN)


def audit_ocr(fields: ArchiveFields, einvoice: EInvoiceFacts, kind: str | None) -> OcrAudit:
    """Compare what Inqom read (``fields``) with the e-invoice's terms; a side that is missing is not compared."""
    notes: dict[str, str] = {}
    total = einvoice.total_with_vat
    if fields.amount is not None and total is not None and not amounts_agree(fields.amount, total,
                                                                             einvoice.type_code):
        notes[AMOUNT] = f"Inqom {amount_text(fields.amount)}, invoice {total:f}"
    if fields.effectif_date is not None and einvoice.issue_date is not None \
            and fields.effectif_date != einvoice.issue_date:
        notes[EFFECTIF_DATE] = f"Inqom {fields.effectif_date.isoformat()}, invoice {einvoice.issue_date.isoformat()}"
    role, party = ("buyer", einvoice.buyer_name) if kind == SALES_KIND else ("seller", einvoice.seller_name)
    if fields.counter_party and party and not names_agree(fields.counter_party, party):
        notes[COUNTER_PARTY] = f"Inqom {_shown(fields.counter_party)}, invoice {role} {_shown(party)}"
    if not notes:
        return OcrAudit()
    return OcrAudit(tuple(notes), table_text("; ".join(f"{name}: {note}" for name, note in notes.items())))
