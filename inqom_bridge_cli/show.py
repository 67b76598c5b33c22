"""``show``: every ledger row we have for a blob path, an Inqom id or an enFact id."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.ledger.rows import ENFACT_PARTITION
from shared.services import Services

from .common import SECTIONS, KNOWN_COLUMNS, CliError, plain, print_json, row_dict, text


def find_rows(services: Services, ref: str) -> list[dict[str, Any]]:
    """Document rows whose BlobPath, ArchivePath, QuarantinePath, ReplayedTo, EnfactId, InqomId or OriginId is ``ref``."""
    ref = ref.strip()
    clauses = ["BlobPath eq @ref", "ArchivePath eq @ref", "QuarantinePath eq @ref", "ReplayedTo eq @inbox",
               "EnfactId eq @ref"]
    params: dict[str, Any] = {"ref": ref, "inbox": f"{services.settings.inbox_container}/{ref}"}
    if ref.isascii() and ref.isdigit() and len(ref) < 19:
        clauses += ["InqomId eq @id", "OriginId eq @id"]  # the document, and our duplicates of it
        params["id"] = int(ref)
    rows = [row_dict(e) for e in services.ledger.scan(" or ".join(clauses), **params)]
    rows.sort(key=lambda r: (str(r.get("CreatedAt") or ""), r["RowKey"]))
    return rows


def enfact_records(services: Services, ref: str) -> list[dict[str, Any]]:
    """The ``enfact`` partition rows (one per enFact invoice handed to the inbox) for invoice id ``ref``."""
    query = services.ledger.table.query_entities(
        "PartitionKey eq @p and InvoiceId eq @i", parameters={"p": ENFACT_PARTITION, "i": ref.strip()})
    try:
        return [{k: plain(v) for k, v in entity.items()} for entity in query]
    except ResourceNotFoundError:
        return []


def _print_row(out, row: dict[str, Any], title: str) -> None:
    out.write(f"== {title} ==\n")
    width = max(len(name) for name in row) if row else 0
    for section, columns in SECTIONS:
        present = [c for c in columns if c in row]
        if not present:
            continue
        out.write(f"  {section}\n")
        for column in present:
            out.write(f"    {column:<{width}}  {text(row[column])}\n")
    others = sorted(set(row) - set(KNOWN_COLUMNS))
    if others:
        out.write("  Other\n")
        for column in others:
            out.write(f"    {column:<{width}}  {text(row[column])}\n")


def run(services: Services, args: argparse.Namespace) -> int:
    rows = find_rows(services, args.ref)
    invoices = enfact_records(services, args.ref)
    if not rows and not invoices:
        raise CliError(f"no ledger row has blob path, archive/quarantine path, Inqom id or enFact id {args.ref!r} "
                       f"(ledger table {services.settings.ledger_table})")
    if args.json:
        print_json({"documents": rows, "enfact_invoices": invoices})
        return 0
    out = sys.stdout
    for number, row in enumerate(rows, 1):
        if number > 1:
            out.write("\n")
        _print_row(out, row, f"document row {number} of {len(rows)}: {row.get('BlobPath')} "
                             f"[{row['PartitionKey']}/{row['RowKey']}] {text(row.get('State'))}")
    for invoice in invoices:
        if rows or invoice is not invoices[0]:
            out.write("\n")
        out.write(f"== enFact invoice {invoice.get('InvoiceId')} of company {text(invoice.get('CompanyUuid'))} ==\n")
        for name in sorted(invoice):
            out.write(f"    {name:<14}  {text(invoice[name])}\n")
    if not rows:
        out.write("\n(no document row yet: the invoice has not been uploaded from the inbox)\n")
    return 0
