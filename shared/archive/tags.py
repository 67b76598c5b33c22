"""What Inqom extracted from a document, typed, as ledger columns, metadata and blob index tags; and searches.

    fields = ArchiveFields.from_document(document)          # typed: Decimal amount, date, texts
    ledger.update(entry, **fields.ledger_columns())         # CounterParty, Amount "14.87", AmountCents (Int64), ...
    einvoice = EInvoiceFacts.from_row(entry)                # the row's EInvoice* columns, read at drop time
    tags = archive_tags(11287, "supplier", 42, fields, einvoice)   # at most 10 ``inqom_*`` tags, all valid
    where = tag_filter(TagQuery(counterparty="LinkedIn Ireland", min_amount=Decimal("10")), container="archive")

Pure: nothing here talks to a service. A value that cannot be a tag is left out, never an error;
every value is cut to its limit (``LEDGER_TEXT_LIMIT``, ``METADATA_VALUE_LIMIT``, the tag limits).
Names are folded by ``shared.names.normalise_name`` ("L'Oréal S.A." → ``loreal sa``), amounts by
``amount_tag`` (14.87 → ``p000000001487``, −14.87 → ``n999999998512``, within ±``AMOUNT_TAG_LIMIT`` cents).
Why: docs/archive.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Mapping, Protocol

from azure.data.tables import EdmType, EntityProperty

from shared.blobmove import metadata_text
from shared.inqom.client import InqomDocument
from shared.names import normalise_id, normalise_name, normalise_ref

# Limits of blob index tags, from Microsoft's "Manage and find Azure Blob data with blob index tags"
# (https://learn.microsoft.com/azure/storage/blobs/storage-manage-find-blobs, "Setting blob index tags" and
# "Finding data using blob index tags"): at most 10 tags per blob; keys 1–128 characters, values 0–256;
# case-sensitive strings; only a–z, A–Z, 0–9 and space + - . : = _ /. Filters: keys in double quotes, values
# in single quotes, operators = > >= < <= AND and @container; a same-sided range twice on one key is invalid;
# comparisons are lexicographic. The Python SDK (azure-storage-blob 12.31.1, ``set_blob_tags`` and
# ``commit_block_list(tags=)``) documents the same limits.
MAX_TAGS = 10
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
_TAG_TEXT = re.compile(r"[A-Za-z0-9 +\-.:=_/]*")
_CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")

TAG_FOLDER = "inqom_folder"
TAG_KIND = "inqom_kind"
TAG_ID = "inqom_id"
TAG_COUNTERPARTY = "inqom_counterparty"
TAG_DATE = "inqom_date"
TAG_AMOUNT = "inqom_amount"
TAG_DOCREF = "inqom_docref"
TAG_BENEFICIARY = "inqom_beneficiary"
TAG_INVOICE = "inqom_invoice"  # the e-invoice's number (BT-1), normalised like a docref
TAG_SELLER = "inqom_seller"  # the e-invoice seller's VAT id (BT-31), else its legal id (BT-30), upper-case alnum
TAG_KEYS = (TAG_FOLDER, TAG_KIND, TAG_ID, TAG_COUNTERPARTY, TAG_DATE, TAG_AMOUNT, TAG_DOCREF, TAG_BENEFICIARY,
            TAG_INVOICE, TAG_SELLER)

#: Cents a tag can hold: 12 digits, so ±9,999,999,999.99.
AMOUNT_TAG_LIMIT = 10**12
_INT64 = 2**63
_CENT = Decimal("0.01")

#: Blob metadata (all of it, names and values) holds 8 KiB; each original value is kept to this many encoded
#: characters, so the six values take at most about 3.1 KiB and leave the rest to the archiver's own.
METADATA_VALUE_LIMIT = 512
#: The e-invoice's values in the metadata: identifiers and format cut to 64 encoded characters (a total is
#: never cut, and within ``_INVOICE_AMOUNT_DIGITS`` it fits), the seller's name to 256: the six add at most
#: about 0.6 KiB, and ``archive_metadata`` in poll.py stays within the 8 KiB whatever the values.
EINVOICE_ID_LIMIT = 64
EINVOICE_NAME_LIMIT = 256
_INVOICE_AMOUNT_DIGITS = 28
#: Each extracted text in a ledger column, in UTF-16 code units (a Table string holds 32,767): far above
#: any real name or reference, and small beside the row's 1 MiB.
LEDGER_TEXT_LIMIT = 2_048

#: Ledger columns written from Inqom's answer (``show`` and ``export`` list them).
LEDGER_COLUMNS = ("CounterParty", "Amount", "AmountCents", "EffectifDate", "DocRef", "InqomType",
                  "UserDefinedThirdPartyName")


class TagError(ValueError):
    """A tag or a search that the blob index cannot hold or answer."""


# --------------------------------------------------------------------------- normalising


def _well_formed(text: str) -> str:
    """``text`` with each lone surrogate (what a JSON ``"\\ud835"`` decodes to) replaced by U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def table_text(text: str, limit: int = LEDGER_TEXT_LIMIT) -> str:
    """``text``, well formed, cut to ``limit`` UTF-16 code units, never inside a surrogate pair."""
    encoded = _well_formed(text).encode("utf-16-le")
    head = encoded[: 2 * limit]
    if len(head) < len(encoded) and 0xD8 <= head[-1] <= 0xDB:  # the first half of a pair cut in two
        head = head[:-2]
    return head.decode("utf-16-le")


def to_cents(amount: Decimal, rounding: str = ROUND_HALF_UP) -> int:
    """Whole cents, half away from zero by default (12.345 → 1235)."""
    return int(amount.quantize(_CENT, rounding=rounding) * 100)


def amount_text(amount: Decimal) -> str:
    """Fixed two decimals: ``"14.87"``, ``"-3.00"``."""
    return f"{amount.quantize(_CENT, rounding=ROUND_HALF_UP):f}"


def amount_tag(cents: int) -> str | None:
    """The sortable text form of an amount in cents (see the module's table); None beyond 12 digits."""
    if not -AMOUNT_TAG_LIMIT < cents < AMOUNT_TAG_LIMIT:
        return None
    return f"p{cents:012d}" if cents >= 0 else f"n{AMOUNT_TAG_LIMIT - 1 + cents:012d}"


def amount_from_tag(tag: str) -> Decimal | None:
    """The amount an ``inqom_amount`` tag holds (None when it is not one)."""
    if not re.fullmatch(r"[np][0-9]{12}", tag or ""):
        return None
    digits = int(tag[1:])
    cents = digits if tag[0] == "p" else digits - (AMOUNT_TAG_LIMIT - 1)
    return (Decimal(cents) / 100).quantize(_CENT)


def valid_tag(key: str, value: str) -> bool:
    return (1 <= len(key) <= MAX_KEY_LENGTH and len(value) <= MAX_VALUE_LENGTH
            and bool(_TAG_TEXT.fullmatch(key)) and bool(_TAG_TEXT.fullmatch(value)))


# --------------------------------------------------------------------------- the fields


@dataclass(frozen=True)
class ArchiveFields:
    """What Inqom extracted from one document, typed; every field may be None."""

    counter_party: str | None = None
    amount: Decimal | None = None
    effectif_date: date | None = None
    doc_ref: str | None = None
    type: str | None = None
    third_party_name: str | None = None

    @classmethod
    def from_document(cls, document: InqomDocument) -> "ArchiveFields":
        amount = document.amount
        if amount is not None:
            try:
                amount = amount.quantize(_CENT, rounding=ROUND_HALF_UP)
            except InvalidOperation:  # beyond Decimal's precision: not an amount anyone booked
                amount = None
        return cls(document.counter_party, amount, document.effectif_date, document.doc_ref, document.type,
                   document.third_party_name)

    @property
    def empty(self) -> bool:
        """Nothing read from the document itself (``Type``, ``DocRef`` and the beneficiary are what was sent)."""
        return self.counter_party is None and self.amount is None and self.effectif_date is None

    @property
    def cents(self) -> int | None:
        if self.amount is None:
            return None
        cents = to_cents(self.amount)
        return cents if -_INT64 <= cents < _INT64 else None

    def ledger_columns(self) -> dict[str, Any]:
        """Ledger columns for the values present: texts (at most ``LEDGER_TEXT_LIMIT`` UTF-16 units each),
        ``Amount`` ("14.87"), ``AmountCents`` (Int64), ``EffectifDate`` ("2025-03-12")."""
        columns: dict[str, Any] = {
            "CounterParty": self.counter_party,
            "Amount": amount_text(self.amount) if self.amount is not None else None,
            "AmountCents": EntityProperty(self.cents, EdmType.INT64) if self.cents is not None else None,
            "EffectifDate": self.effectif_date.isoformat() if self.effectif_date else None,
            "DocRef": self.doc_ref,
            "InqomType": self.type,
            "UserDefinedThirdPartyName": self.third_party_name,
        }
        return {name: table_text(value) if isinstance(value, str) else value
                for name, value in columns.items() if value is not None}

    def metadata(self) -> dict[str, str]:
        """The original values for the archive blob's metadata (ASCII, percent-encoded, each capped)."""
        values = {
            "counterparty": self.counter_party,
            "amount": amount_text(self.amount) if self.amount is not None else None,
            "effectifdate": self.effectif_date.isoformat() if self.effectif_date else None,
            "docref": self.doc_ref,
            "inqomtype": self.type,
            "beneficiary": self.third_party_name,
        }
        return {name: _metadata_value(value) for name, value in values.items() if value is not None}


def _metadata_value(text: str, limit: int = METADATA_VALUE_LIMIT) -> str:
    """Percent-encoded, at most ``limit`` characters, cut between characters (never inside one)."""
    text = _well_formed(text)
    encoded = metadata_text(text)
    if len(encoded) <= limit:
        return encoded
    parts, used = [], 0
    for char in text:
        piece = metadata_text(char)
        if used + len(piece) > limit:
            break
        parts.append(piece)
        used += len(piece)
    return "".join(parts)


class _Row(Protocol):
    def get(self, name: str, default: Any = None) -> Any: ...


def _invoice_amount(text: str | None) -> Decimal | None:
    """An amount column as a Decimal; None unless finite and within ``_INVOICE_AMOUNT_DIGITS`` digits each side
    of the point (so its plain text, ``f"{amount:f}"``, stays short whatever the column held: "1e999999")."""
    try:
        amount = Decimal(text) if text else None
    except InvalidOperation:
        return None
    if amount is None or not amount.is_finite() or amount.adjusted() >= _INVOICE_AMOUNT_DIGITS \
            or int(amount.as_tuple().exponent) < -_INVOICE_AMOUNT_DIGITS:
        return None
    return amount


def _column_text(row: _Row, name: str) -> str | None:
    """A ledger text column, stripped; None when absent or cleared ('')."""
    value = row.get(name)
    text = "" if value is None else str(value).strip()
    return text or None


@dataclass(frozen=True)
class EInvoiceFacts:
    """What the structured e-invoice says, as the upload wrote it on the row (``EInvoice*`` columns).

    Read tolerantly: a column that is absent, cleared or unreadable (an amount or a date that does not
    parse) is None, never an error."""

    format: str | None = None
    type_code: str | None = None
    number: str | None = None
    issue_date: date | None = None
    seller_name: str | None = None
    seller_id: str | None = None
    seller_vat: str | None = None
    buyer_name: str | None = None
    total_with_vat: Decimal | None = None

    @classmethod
    def from_row(cls, row: _Row) -> "EInvoiceFacts":
        issued = _column_text(row, "EInvoiceIssueDate")
        try:
            issue_date = date.fromisoformat(issued) if issued else None
        except ValueError:
            issue_date = None
        return cls(
            format=_column_text(row, "EInvoiceFormat"), type_code=_column_text(row, "EInvoiceTypeCode"),
            number=_column_text(row, "EInvoiceNumber"), issue_date=issue_date,
            seller_name=_column_text(row, "EInvoiceSellerName"), seller_id=_column_text(row, "EInvoiceSellerId"),
            seller_vat=_column_text(row, "EInvoiceSellerVat"), buyer_name=_column_text(row, "EInvoiceBuyerName"),
            total_with_vat=_invoice_amount(_column_text(row, "EInvoiceTotalWithVat")),
        )

    def tags(self) -> dict[str, str]:
        """``inqom_invoice`` and ``inqom_seller``, for the values present (not yet checked against the alphabet)."""
        candidates = {TAG_INVOICE: normalise_ref(self.number),
                      TAG_SELLER: normalise_id(self.seller_vat) or normalise_id(self.seller_id)}
        return {key: value for key, value in candidates.items() if value}

    def metadata(self) -> dict[str, str]:
        """The original values for the archive blob's metadata (ASCII, percent-encoded, each capped)."""
        ids = {"einvoicenumber": self.number, "sellervat": self.seller_vat, "sellerid": self.seller_id,
               "einvoiceformat": self.format}
        values = {name: _metadata_value(value, EINVOICE_ID_LIMIT) for name, value in ids.items() if value is not None}
        if self.seller_name is not None:
            values["sellername"] = _metadata_value(self.seller_name, EINVOICE_NAME_LIMIT)
        if self.total_with_vat is not None:  # never cut (another amount): 28 digits each side fit in 64
            values["totalwithvat"] = f"{self.total_with_vat:f}"
        return values


def archive_tags(folder: int | str, kind: str | None, inqom_id: int | str, fields: ArchiveFields,
                 einvoice: EInvoiceFacts = EInvoiceFacts()) -> dict[str, str]:
    """The index tags of one archived document (a value that cannot be a tag is left out, never an error)."""
    candidates = {
        TAG_FOLDER: str(folder),
        TAG_KIND: kind or None,
        TAG_ID: str(inqom_id),
        TAG_COUNTERPARTY: normalise_name(fields.counter_party),
        TAG_DATE: fields.effectif_date.isoformat() if fields.effectif_date else None,
        TAG_AMOUNT: amount_tag(fields.cents) if fields.cents is not None else None,
        TAG_DOCREF: normalise_ref(fields.doc_ref),
        TAG_BENEFICIARY: normalise_name(fields.third_party_name),
        **einvoice.tags(),
    }
    tags = {key: value for key, value in candidates.items() if value and valid_tag(key, value)}
    assert len(tags) <= MAX_TAGS
    return tags


def merge_tags(existing: Mapping[str, str], ours: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``ours`` over the blob's ``existing`` tags (Set Blob Tags replaces them all): tags others set are
    kept while the total stays within ``MAX_TAGS`` (an e-invoice's copy may use all ten itself); returns
    the tags and the keys that did not fit."""
    merged = dict(ours)
    dropped = []
    for key, value in existing.items():
        if key in merged or key.startswith("inqom_"):
            continue
        if len(merged) < MAX_TAGS:
            merged[key] = value
        else:
            dropped.append(key)
    return merged, dropped


# --------------------------------------------------------------------------- searching


@dataclass(frozen=True)
class TagQuery:
    """A search of the archive; every criterion is optional, at least one is needed."""

    folder: int | None = None
    kind: str | None = None
    inqom_id: int | None = None
    counterparty: str | None = None
    counterparty_prefix: bool = False
    date_from: date | None = None
    date_to: date | None = None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    docref: str | None = None


def _quoted(value: str) -> str:
    """A filter value: only characters a tag can hold, so no quote can end it early (no injection)."""
    if len(value) > MAX_VALUE_LENGTH or not _TAG_TEXT.fullmatch(value):
        raise TagError(f"{value!r} holds characters a blob index tag cannot hold")
    return f"'{value}'"


def _clause(key: str, operator: str, value: str) -> str:
    assert key in TAG_KEYS and operator in ("=", ">=", "<=", ">", "<")
    return f'"{key}" {operator} {_quoted(value)}'


def _amount_bound(amount: Decimal, name: str, rounding: str) -> str:
    """The tag of a bound, rounded to the cent towards the inside of the range: a minimum up
    (``ROUND_CEILING``: 10.004 → 10.01), a maximum down (``ROUND_FLOOR``: 9.995 → 9.99)."""
    # Checked before rounding: quantize raises InvalidOperation beyond 28 digits (a 30-digit bound).
    tag = amount_tag(to_cents(amount, rounding)) if abs(amount) < AMOUNT_TAG_LIMIT // 100 else None
    if tag is None:
        raise TagError(f"{name} {amount} is beyond what the archive's tags hold (±9,999,999,999.99)")
    return tag


def tag_filter(query: TagQuery, container: str | None = None) -> str:
    """The ``Find Blobs by Tags`` expression of ``query`` (``@container`` first when ``container`` is given).

    Texts go through the same normalisation as the tags (so ``"L'ORÉAL S.A."`` finds ``loreal sa``) and
    are then checked against the tag alphabet, which has no quote: a value can never close its quotes.
    A counterparty prefix is the range [prefix, prefix + "z" × (256 − len)] — every normalised value
    starting with the prefix, and nothing else, since normalised values are made of a–z, 0–9 and space.
    Raises ``TagError`` for an empty search, an empty or impossible criterion or reversed bounds.
    """
    clauses: list[str] = []
    if container is not None:
        if not _CONTAINER_NAME.fullmatch(container):
            raise TagError(f"{container!r} is not a container name")
        clauses.append(f"@container = '{container}'")
    criteria = len(clauses)
    if query.folder is not None:
        if int(query.folder) <= 0:
            raise TagError("folder must be a positive integer")
        clauses.append(_clause(TAG_FOLDER, "=", str(int(query.folder))))
    if query.kind is not None:
        clauses.append(_clause(TAG_KIND, "=", query.kind))
    if query.inqom_id is not None:
        clauses.append(_clause(TAG_ID, "=", str(int(query.inqom_id))))
    if query.counterparty is not None:
        name = normalise_name(query.counterparty)
        if name is None:
            raise TagError(f"counterparty {query.counterparty!r} has no letter or digit to search for")
        if query.counterparty_prefix:
            clauses.append(_clause(TAG_COUNTERPARTY, ">=", name))
            clauses.append(_clause(TAG_COUNTERPARTY, "<=", name + "z" * (MAX_VALUE_LENGTH - len(name))))
        else:
            clauses.append(_clause(TAG_COUNTERPARTY, "=", name))
    if query.date_from and query.date_to and query.date_from > query.date_to:
        raise TagError(f"the date range is empty: {query.date_from} is after {query.date_to}")
    if query.date_from is not None:
        clauses.append(_clause(TAG_DATE, ">=", query.date_from.isoformat()))
    if query.date_to is not None:
        clauses.append(_clause(TAG_DATE, "<=", query.date_to.isoformat()))
    if query.min_amount is not None and query.max_amount is not None and query.min_amount > query.max_amount:
        raise TagError(f"the amount range is empty: {query.min_amount} is more than {query.max_amount}")
    if query.min_amount is not None:
        clauses.append(_clause(TAG_AMOUNT, ">=", _amount_bound(query.min_amount, "minimum amount", ROUND_CEILING)))
    if query.max_amount is not None:
        clauses.append(_clause(TAG_AMOUNT, "<=", _amount_bound(query.max_amount, "maximum amount", ROUND_FLOOR)))
    if query.docref is not None:
        ref = normalise_ref(query.docref)
        if ref is None:
            raise TagError(f"docref {query.docref!r} has nothing to search for")
        clauses.append(_clause(TAG_DOCREF, "=", ref))
    if len(clauses) == criteria:
        raise TagError("give at least one criterion (folder, kind, Inqom id, counterparty, dates, amounts, docref)")
    return " AND ".join(clauses)


def fields_from_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """What a blob's tags say (normalised values; the amount decoded): for display when metadata lacks them."""
    amount = amount_from_tag(tags.get(TAG_AMOUNT, ""))
    return {
        "folder": tags.get(TAG_FOLDER), "kind": tags.get(TAG_KIND), "inqom_id": tags.get(TAG_ID),
        "counterparty": tags.get(TAG_COUNTERPARTY), "date": tags.get(TAG_DATE),
        "amount": amount_text(amount) if amount is not None else None, "docref": tags.get(TAG_DOCREF),
        "beneficiary": tags.get(TAG_BENEFICIARY),
    }
