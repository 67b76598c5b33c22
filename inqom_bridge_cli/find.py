"""``find``: archived documents by what Inqom read from them, answered from the blob index tags.

    python -m inqom_bridge_cli find --counterparty "LinkedIn Ireland Unlimited Company" --from 2025-03-01 \\
        --to 2025-03-31 --min-amount 1000 --max-amount 1500 [--download DIR] [--json]

The search is one ``Find Blobs by Tags`` request (pages followed), in the archive container or, with
``--account``, in every container of the account; no ledger or blob listing is scanned. Each match is
then read once (its properties, for the original values in its metadata and its size, and its tags).
Criteria are combined with AND; see ``shared.archive.tags`` for how names and amounts are normalised.
Amount bounds are taken to the cent inwards (``--min-amount 10.004`` is 10.01, ``--max-amount 9.995`` 9.99),
so no amount outside the bounds is ever found.
The blob index is eventually consistent in Azure: a document archived seconds ago may not be found yet.
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
from urllib.parse import unquote

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.archive.tags import AMOUNT_TAG_LIMIT, TagError, TagQuery, fields_from_tags, tag_filter
from shared.services import Services

from .common import CliError, human_bytes, print_json, table, text
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
