"""``find``: archived documents by what Inqom read from them (blob index tags), or any document by its e-invoice.

    python -m inqom_bridge_cli find --counterparty "LinkedIn Ireland Unlimited Company" --from 2025-03-01 \\
        --to 2025-03-31 --min-amount 1000 --max-amount 1500 [--download DIR] [--json]
    python -m inqom_bridge_cli find --invoice-number F-2026-0042 --seller-vat "FR 12 345678901" [--folder 11287]

The search is one ``Find Blobs by Tags`` request (pages followed), in the archive container or, with
``--account``, in every container of the account; no ledger or blob listing is scanned. Each match is
then read once (its properties, for the original values in its metadata and its size, and its tags).
Criteria are combined with AND; see ``shared.archive.tags`` for how names and amounts are normalised.
Amount bounds are taken to the cent inwards (``--min-amount 10.004`` is 10.01, ``--max-amount 9.995`` 9.99),
so no amount outside the bounds is ever found.
The blob index is eventually consistent in Azure: a document archived seconds ago may not be found yet.

``--invoice-number``, ``--seller-vat`` and ``--seller-id`` are answered from the ledger instead (one Table
query on the ``EInvoice*`` columns the upload wrote), so a document is found from its drop on, while it
waits for Inqom, archived, or held as a business duplicate; each match shows its state and where the file
is (the archive path once archived). They combine with AND with ``--folder``, ``--kind`` and ``--inqom-id``
(columns of the row); the other criteria are Inqom's reading, known only once archived, and are refused
with them, as are ``--account`` and ``--download``. The invoice number is matched as written (trimmed);
a VAT or legal id as typed (trimmed) or normalised (``normalise_id``: letters and digits, upper-case).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.archive.tags import AMOUNT_TAG_LIMIT, TagError, TagQuery, fields_from_tags, tag_filter
from shared.ledger.rows import ARCHIVED, DELETED, QUARANTINED
from shared.names import normalise_id
from shared.services import Services

from .common import CliError, human_bytes, is_empty, print_json, row_dict, table, text
from .progress import Progress

DEFAULT_LIMIT = 500
_COUNTERPARTY_WIDTH = 40


@dataclass
class Match:
    container: str
    name: str
    size: int | None
    inqom_id: str | None
    folder: str | None
    kind: str | None
    date: str | None
    counterparty: str | None
    amount: str | None
    docref: str | None
    beneficiary: str | None
    ledger_key: str | None
    tags: dict[str, str]

    @property
    def path(self) -> str:
        return f"{self.container}/{self.name}"


@dataclass
class LedgerMatch:
    """A document row found by its e-invoice: where its file is now, and what the invoice says."""

    partition: str
    key: str
    state: str | None
    path: str
    blob_path: str | None
    archive_path: str | None
    inqom_id: int | None
    invoice_number: str | None
    issue_date: str | None
    seller_name: str | None
    seller_vat: str | None
    seller_id: str | None
    buyer_name: str | None
    total_with_vat: str | None
    currency: str | None
    format: str | None
    duplicate_of: str | None


#: Criteria read from Inqom's answer (tags), which a ledger search cannot combine with: dest → option.
_TAG_ONLY = {"counterparty": "--counterparty", "prefix": "--prefix", "date_from": "--from", "date_to": "--to",
             "min_amount": "--min-amount", "max_amount": "--max-amount", "docref": "--docref",
             "account": "--account", "download": "--download"}


#: The e-invoice options: argparse dest, option, ledger column, and whether the value is an id (normalised).
_EINVOICE_OPTIONS = (("invoice_number", "--invoice-number", "EInvoiceNumber", False),
                     ("seller_vat", "--seller-vat", "EInvoiceSellerVat", True),
                     ("seller_id", "--seller-id", "EInvoiceSellerId", True))


def ledger_query(args: argparse.Namespace) -> tuple[str, dict[str, Any]] | None:
    """The Table filter and parameters of an e-invoice search, or None when no e-invoice option is given."""
    given = [(option, column, getattr(args, dest), is_id) for dest, option, column, is_id in _EINVOICE_OPTIONS
             if getattr(args, dest) is not None]
    if not given:
        return None
    clashing = [option for dest, option in _TAG_ONLY.items() if getattr(args, dest)]
    if clashing:
        raise CliError("--invoice-number, --seller-vat and --seller-id search the ledger and combine only with "
                       f"--folder, --kind and --inqom-id, not with {', '.join(clashing)}")
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for option, column, typed, is_id in given:
        normalised = normalise_id(typed) if is_id else typed.strip()
        if not normalised:
            raise CliError(f"{option} {typed!r} has nothing to search for")
        spellings = list(dict.fromkeys((typed.strip(), normalised)))  # an id: as typed, or as normalised
        names = [f"{column}{number}" for number in range(len(spellings))]
        params.update(zip(names, spellings))
        clauses.append("( " + " or ".join(f"{column} eq @{name}" for name in names) + " )")
    if args.folder is not None:
        clauses.append("PartitionKey eq @folder")
        params["folder"] = str(args.folder)
    if args.kind is not None:
        clauses.append("Kind eq @kind")
        params["kind"] = args.kind
    if args.inqom_id is not None:
        clauses.append("InqomId eq @inqomid")
        params["inqomid"] = args.inqom_id
    return " and ".join(clauses), params


def _present(row: dict[str, Any], column: str) -> str | None:
    return None if is_empty(row.get(column)) else str(row[column])


def _where_now(row: dict[str, Any]) -> str:
    """Where the file is: its archive copy, its quarantined original, or the inbox blob."""
    column = {ARCHIVED: "ArchivePath", QUARANTINED: "QuarantinePath", DELETED: "QuarantinePath"}.get(row.get("State"))
    if column and not is_empty(row.get(column)):
        return str(row[column])
    return f"{row.get('Container')}/{row.get('BlobPath')}"


def search_ledger(services: Services, where: str, params: dict[str, Any],
                  limit: int = DEFAULT_LIMIT) -> tuple[list[LedgerMatch], bool]:
    """Document rows of an e-invoice search (at most ``limit``, by issue date then path); whether more were left."""
    matches: list[LedgerMatch] = []
    more = False
    for entry in services.ledger.scan(where, **params):
        if len(matches) >= limit:
            more = True
            break
        row = row_dict(entry)
        inqom_id = _present(row, "InqomId")
        matches.append(LedgerMatch(
            partition=entry.partition, key=entry.key, state=_present(row, "State"), path=_where_now(row),
            blob_path=_present(row, "BlobPath"), archive_path=_present(row, "ArchivePath"),
            inqom_id=int(inqom_id) if inqom_id is not None else None,
            invoice_number=_present(row, "EInvoiceNumber"), issue_date=_present(row, "EInvoiceIssueDate"),
            seller_name=_present(row, "EInvoiceSellerName"), seller_vat=_present(row, "EInvoiceSellerVat"),
            seller_id=_present(row, "EInvoiceSellerId"), buyer_name=_present(row, "EInvoiceBuyerName"),
            total_with_vat=_present(row, "EInvoiceTotalWithVat"), currency=_present(row, "EInvoiceCurrency"),
            format=_present(row, "EInvoiceFormat"), duplicate_of=_present(row, "DuplicateOf")))
    matches.sort(key=lambda m: (m.issue_date or "", m.path))
    return matches, more


def _run_ledger(services: Services, args: argparse.Namespace, where: str, params: dict[str, Any]) -> int:
    matches, more = search_ledger(services, where, params, args.limit)
    if args.json:
        print_json({"source": "ledger", "filter": where, "parameters": params, "count": len(matches), "more": more,
                    "matches": [asdict(m) for m in matches]})
        return 0
    out = sys.stdout
    if not matches:
        out.write("no document row matches (ledger)\n")
        print(f"filter: {where} {params}", file=sys.stderr)
        return 0
    table([[m.path, text(m.state), text(m.invoice_number), text(m.issue_date),
            _short(m.seller_name, _COUNTERPARTY_WIDTH), text(m.total_with_vat), text(m.inqom_id)] for m in matches],
          ["PATH", "STATE", "INVOICE", "ISSUED", "SELLER", "TOTAL", "INQOM ID"], out)
    out.write(f"\n{len(matches)} document(s) in the ledger, archived or not"
              + (f" (stopped at --limit {args.limit}; narrow the search)" if more else "") + "\n")
    return 0


def parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def parse_amount(value: str) -> Decimal:
    """An amount bound as typed (``1234.56``, ``1 234,56``), within what the archive's tags hold."""
    cleaned = value.replace(" ", "").replace("\u00a0", "")
    if not re.fullmatch(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)", cleaned):
        raise argparse.ArgumentTypeError(f"{value!r} is not an amount (e.g. 1234.56 or 1234,56)")
    try:
        amount = Decimal(cleaned.replace(",", "."))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{value!r} is not an amount") from None
    if abs(amount) >= AMOUNT_TAG_LIMIT // 100:
        raise argparse.ArgumentTypeError(f"{value!r} is beyond what the archive's tags hold (±9,999,999,999.99)")
    return amount


def query_from_args(args: argparse.Namespace) -> TagQuery:
    if args.prefix and not args.counterparty:
        raise CliError("--prefix needs --counterparty NAME (the start of the name)")
    return TagQuery(folder=args.folder, kind=args.kind, inqom_id=args.inqom_id, counterparty=args.counterparty,
                    counterparty_prefix=args.prefix, date_from=args.date_from, date_to=args.date_to,
                    min_amount=args.min_amount, max_amount=args.max_amount, docref=args.docref)


def search(services: Services, query: TagQuery, account_wide: bool = False,
           limit: int = DEFAULT_LIMIT) -> tuple[str, list[Match], bool]:
    """The filter expression, the matches (at most ``limit``, by date then path) and whether more were left."""
    archive = services.settings.archive_container
    try:
        where = tag_filter(query)
    except TagError as exc:
        raise CliError(str(exc)) from None
    found = (services.stores.blobs.find_blobs_by_tags(where) if account_wide
             else services.stores.container(archive).find_blobs_by_tags(where))
    matches: list[Match] = []
    more = False
    for item in found:
        if len(matches) >= limit:
            more = True
            break
        match = describe(services, item.container_name or archive, item.name)
        if match is not None:
            matches.append(match)
    matches.sort(key=lambda m: (m.date or "", m.path))
    return where, matches, more


def describe(services: Services, container: str, name: str) -> Match | None:
    """One match, read from its metadata (original values) and tags (for what metadata lacks)."""
    blob = services.stores.container(container).get_blob_client(name)
    try:
        props = blob.get_blob_properties()
        tags = blob.get_blob_tags() if props.tag_count else {}
    except ResourceNotFoundError:
        return None  # removed since the index answered
    meta = {k.lower(): unquote(v) for k, v in (props.metadata or {}).items()}
    tagged = fields_from_tags(tags)
    return Match(
        container=container, name=name, size=props.size,
        inqom_id=meta.get("inqomid") or tagged["inqom_id"], folder=tagged["folder"], kind=tagged["kind"],
        date=meta.get("effectifdate") or tagged["date"],
        counterparty=meta.get("counterparty") or tagged["counterparty"],
        amount=meta.get("amount") or tagged["amount"], docref=meta.get("docref") or tagged["docref"],
        beneficiary=meta.get("beneficiary") or tagged["beneficiary"], ledger_key=meta.get("ledgerkey"),
        tags=dict(tags),
    )


def _short(value: str | None, width: int) -> str:
    shown = text(value)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _local_path(root: Path, match: Match, with_container: bool) -> Path | None:
    """Where a match is saved under ``root`` (its blob path), or None when the name is unsafe as a file path."""
    parts = ([match.container] if with_container else []) + match.name.split("/")
    if any(part in ("", ".", "..") or "\\" in part or "\x00" in part for part in parts):
        return None
    return root.joinpath(*parts)


@dataclass
class DownloadReport:
    saved: list[str]
    already_there: list[str]               # same size on disk: not downloaded again
    problems: list[tuple[str, str]]        # (blob path, why it was not saved)


def download(services: Services, matches: list[Match], root: Path, with_container: bool,
             progress: bool = True) -> DownloadReport:
    """Save each match under ``root`` at its blob path, written to ``.partial`` and renamed when complete.

    A file already there with the same size is kept; one of another size is never overwritten (a problem)."""
    root.mkdir(parents=True, exist_ok=True)
    report = DownloadReport([], [], [])
    bar = Progress(len(matches), sum(m.size or 0 for m in matches), enabled=progress)
    try:
        for match in matches:
            bar.start_file(match.name)
            target = _local_path(root, match, with_container)
            if target is None:
                report.problems.append((match.path, "its name is not a safe local path"))
                bar.finish_file(match.size or 0, "skipped")
                continue
            if target.exists():
                if target.stat().st_size == match.size:
                    report.already_there.append(str(target))
                else:
                    report.problems.append((match.path, f"{target} exists with another size; not overwritten"))
                bar.finish_file(match.size or 0, "already there")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            blob = services.stores.container(match.container).get_blob_client(match.name)
            try:
                done = 0
                with open(partial, "wb") as handle:
                    for chunk in blob.download_blob(max_concurrency=1).chunks():
                        handle.write(chunk)
                        done += len(chunk)
                        bar.file_bytes(done)
                os.replace(partial, target)
            except (AzureError, OSError) as exc:
                if partial.exists():
                    partial.unlink()
                report.problems.append((match.path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
                bar.finish_file(match.size or 0, "failed")
                continue
            report.saved.append(str(target))
            bar.finish_file(match.size or 0)
    finally:
        bar.close()
    return report


def run(services: Services, args: argparse.Namespace) -> int:
    by_einvoice = ledger_query(args)
    if by_einvoice is not None:
        return _run_ledger(services, args, *by_einvoice)
    where, matches, more = search(services, query_from_args(args), args.account, args.limit)
    out = sys.stdout
    fetched = DownloadReport([], [], [])
    if args.download:
        fetched = download(services, matches, Path(args.download), args.account, progress=not args.no_progress)
    code = 1 if fetched.problems else 0
    if args.json:
        print_json({"filter": where, "count": len(matches), "more": more,
                    "matches": [{**asdict(m), "path": m.path} for m in matches],
                    "downloaded": fetched.saved, "already_there": fetched.already_there,
                    "not_downloaded": [{"path": p, "why": w} for p, w in fetched.problems]})
        return code
    if not matches:
        out.write("no archived document matches\n")
        print(f"filter: {where}", file=sys.stderr)
        return 0
    table([[m.path, text(m.date), _short(m.counterparty, _COUNTERPARTY_WIDTH), text(m.amount), text(m.inqom_id)]
           for m in matches], ["PATH", "DATE", "COUNTERPARTY", "AMOUNT", "INQOM ID"], out)
    total = sum(m.size or 0 for m in matches)
    out.write(f"\n{len(matches)} document(s), {human_bytes(total)}"
              + (f" (stopped at --limit {args.limit}; narrow the search)" if more else "") + "\n")
    if args.download:
        out.write(f"downloaded {len(fetched.saved)} to {args.download}"
                  + (f", {len(fetched.already_there)} already there" if fetched.already_there else "") + "\n")
        for path, why in fetched.problems:
            out.write(f"NOT downloaded {path}: {why}\n")
    return code
