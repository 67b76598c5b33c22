"""``einvoice``: what the bridge reads from a local Factur-X / ZUGFeRD PDF, UBL or CII file (no settings needed)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from shared.einvoice import EInvoice, EInvoiceError, NotAnEInvoice, read_einvoice

from .common import CliError, print_json, table, text

#: (EN 16931 term, label, key of ``as_json``, key inside it for a party), in the order printed.
ROWS = (
    ("", "format", "format", None),
    ("BT-24", "profile", "profile", None),
    ("BT-3", "type code", "type_code", None),
    ("BT-1", "invoice number", "invoice_number", None),
    ("BT-2", "issue date", "issue_date", None),
    ("BT-9", "due date", "due_date", None),
    ("BT-5", "currency", "currency", None),
    ("BT-27", "seller name", "seller", "name"),
    ("BT-30", "seller legal id", "seller", "legal_id"),
    ("BT-31", "seller VAT id", "seller", "vat_id"),
    ("BT-44", "buyer name", "buyer", "name"),
    ("BT-47", "buyer legal id", "buyer", "legal_id"),
    ("BT-48", "buyer VAT id", "buyer", "vat_id"),
    ("BT-109", "total without VAT", "total_without_vat", None),
    ("BT-110", "VAT total", "vat_total", None),
    ("BT-112", "total with VAT", "total_with_vat", None),
    ("BT-115", "amount due", "amount_due", None),
    ("BT-10", "buyer reference", "buyer_reference", None),
    ("BT-13", "order reference", "order_reference", None),
)


def read_file(path: str, max_bytes: int) -> EInvoice:
    try:
        with open(path, "rb") as stream:
            return read_einvoice(stream, max_bytes=max_bytes)
    except NotAnEInvoice as exc:
        raise CliError(f"{path}: not an e-invoice: {exc}") from None
    except EInvoiceError as exc:
        raise CliError(f"{path}: cannot be read: {exc}") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


def rows(fields: dict[str, Any]) -> list[list[str]]:
    return [[term, label, text(fields[key] if part is None else fields[key][part])]
            for term, label, key, part in ROWS]


def run(args: argparse.Namespace) -> int:
    if not args.verbose:  # pypdf warns about every damaged PDF; the one-line reason is ours
        logging.getLogger("pypdf").setLevel(logging.ERROR)
    fields = read_file(args.file, args.max_bytes).as_json()
    if args.json:
        print_json(fields)
    else:
        table(rows(fields), ["term", "name", "value"])
    return 0
