"""``export``: the ledger's document rows as CSV (known columns first in a fixed order, then others sorted)."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from typing import Any, TextIO

from shared.services import Services

from .common import CliError, ordered_columns, row_dict


def document_rows(services: Services) -> list[dict[str, Any]]:
    rows = [row_dict(e) for e in services.ledger.scan()]
    rows.sort(key=lambda r: (str(r.get("CreatedAt") or ""), r["PartitionKey"], r["RowKey"]))
    return rows


def write_csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=ordered_columns(rows), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def run(services: Services, args: argparse.Namespace) -> int:
    rows = document_rows(services)
    if not args.out or args.out == "-":
        write_csv(rows, sys.stdout)
        return 0
    target = os.path.abspath(args.out)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise CliError(f"directory {directory!r} does not exist")
    # Written next to the target and renamed: an interrupted export never leaves half a file.
    fd, temporary = tempfile.mkstemp(prefix=".export-", suffix=".csv", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write_csv(rows, handle)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    print(f"exported {len(rows)} document row(s) to {args.out}", file=sys.stderr)
    return 0
