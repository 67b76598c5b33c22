"""What a document says about itself at the door: its e-invoice terms as ledger columns, before it is sent.

    columns = read_at_door(blob, name, size, etag, metadata, settings)   # {"EInvoiceFormat": "factur-x", ...}

A ``.pdf`` or ``.xml`` file is read as a Factur-X / ZUGFeRD, UBL or CII e-invoice (``shared.einvoice``).
When the file says nothing, the terms a channel wrote in the blob's metadata (enFact: ``invoicenumber``,
``invoicetotal`` …, see ``channel_metadata``) stand in, with ``EInvoiceFormat`` "enfact". A file that
cannot be read is sent all the same, the reason in ``EInvoiceError``. Never raises for what a file
holds; storage errors (a blob replaced meanwhile included) propagate.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping
from urllib.parse import unquote

from azure.storage.blob import BlobClient

from shared.blobmove import metadata_text
from shared.config import Settings
from shared.einvoice import EInvoice, EInvoiceError, NotAnEInvoice, read_einvoice_blob
from shared.names import normalise_id

log = logging.getLogger(__name__)

NONE = "none"
ENFACT = "enfact"
READ_EXTENSIONS = (".pdf", ".xml")
#: Metadata ``replay --force`` sets on a held duplicate it moves back to the inbox: send it all the same.
SEND_DUPLICATE = "sendduplicate"
#: Metadata ``replay`` sets on a blob it puts back: the ledger key of the row it replays.
REPLAY_OF = "replayof"
#: Blob metadata a channel may set, and the column each fills when the file is not structured.
CHANNEL_METADATA = {
    "invoicenumber": "EInvoiceNumber", "invoicetype": "EInvoiceTypeCode", "invoicedate": "EInvoiceIssueDate",
    "invoicecurrency": "EInvoiceCurrency", "invoicetotal": "EInvoiceTotalWithVat",
    "sellervat": "EInvoiceSellerVat", "sellerid": "EInvoiceSellerId", "sellername": "EInvoiceSellerName",
    "buyername": "EInvoiceBuyerName", "buyervat": "EInvoiceBuyerVat",
}
#: Columns holding a VAT or legal id: kept folded (``FR 12 345…`` → ``FR12345…``), as ``find`` and the key compare them.
_ID_COLUMNS = frozenset({"EInvoiceSellerVat", "EInvoiceSellerId", "EInvoiceBuyerVat", "EInvoiceBuyerId"})
_ERROR_LIMIT = 500


def read_at_door(blob: BlobClient, name: str, size: int, etag: str, metadata: Mapping[str, str],
                 settings: Settings) -> dict[str, Any]:
    error = None
    if name.lower().endswith(READ_EXTENSIONS):
        try:
            return einvoice_columns(read_einvoice_blob(blob, size=size, etag=etag,
                                                       max_bytes=settings.einvoice_max_parse_bytes,
                                                       max_seconds=settings.einvoice_max_parse_seconds))
        except NotAnEInvoice:
            pass
        except EInvoiceError as exc:
            error = str(exc)[:_ERROR_LIMIT]
            log.info("%s is sent as a plain document: %s", name[:300], error)
    if metadata.get("source") == ENFACT and metadata.get("invoicenumber"):
        channel = {column: unquote(metadata[key]).strip() for key, column in CHANNEL_METADATA.items()
                   if metadata.get(key, "").strip()}
        return {"EInvoiceFormat": ENFACT, "EInvoiceError": error, **_folded_ids(channel)}
    return {"EInvoiceFormat": NONE, "EInvoiceError": error}


def einvoice_columns(invoice: EInvoice) -> dict[str, Any]:
    """The ledger's ``EInvoice*`` columns of a read e-invoice (amounts and dates as text, as written)."""
    terms = {
        "Format": invoice.format, "Profile": invoice.profile, "TypeCode": invoice.type_code,
        "Number": invoice.invoice_number, "IssueDate": invoice.issue_date, "DueDate": invoice.due_date,
        "Currency": invoice.currency, "SellerName": invoice.seller.name, "SellerId": invoice.seller.legal_id,
        "SellerVat": invoice.seller.vat_id, "BuyerName": invoice.buyer.name, "BuyerId": invoice.buyer.legal_id,
        "BuyerVat": invoice.buyer.vat_id, "TotalWithoutVat": invoice.total_without_vat,
        "VatTotal": invoice.vat_total, "TotalWithVat": invoice.total_with_vat, "AmountDue": invoice.amount_due,
        "BuyerReference": invoice.buyer_reference, "OrderReference": invoice.order_reference,
    }
    return _folded_ids({f"EInvoice{name}": (value.isoformat() if hasattr(value, "isoformat") else str(value))
                        for name, value in terms.items() if value is not None})


def _folded_ids(columns: dict[str, Any]) -> dict[str, Any]:
    return {name: normalise_id(value) if name in _ID_COLUMNS else value for name, value in columns.items()}


def channel_metadata(terms: Mapping[str, Any]) -> dict[str, str]:
    """Blob metadata carrying a channel's invoice terms (``CHANNEL_METADATA`` names), ASCII-encoded."""
    return {name: metadata_text(str(value)) for name, value in terms.items()
            if name in CHANNEL_METADATA and value not in (None, "")}

