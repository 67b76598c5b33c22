"""Argument parsing and dispatch: ``main(argv) -> exit code``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from azure.core.exceptions import AzureError, ClientAuthenticationError, ResourceNotFoundError

from shared.config import SettingsError
from shared.drop.routing import KINDS
from shared.einvoice import DEFAULT_MAX_BYTES
from shared.services import Services, get_services

from . import backfill, einvoice, export, find, quarantine, show, status, tagging
from .common import PROG, CliError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inqom_bridge_cli",
        description="Operator tool of inqom-bridge: ledger status, document history, quarantine, replay, "
                    "backfill, export, archive search and archive tagging. Settings come from the environment like the app's "
                    "(DocumentStorage connection string, or DocumentStorage__blobServiceUri/__queueServiceUri/"
                    "__tableServiceUri with DefaultAzureCredential; LEDGER_TABLE, INBOX_CONTAINER, ...).",
        epilog="Against the local runner's Azurite: DocumentStorage=UseDevelopmentStorage=true. "
               "Exit codes: 0 success, 1 not found or user error (message on stderr), 2 usage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log Azure SDK and app activity on stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("status", help="counts per state and kind, oldest pending document, recent errors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--errors", type=_positive_int, default=10, metavar="N", help="recent errors shown (default 10)")
    p.set_defaults(handler=status.run)

    p = commands.add_parser("show", help="every ledger row of a blob path, Inqom id or enFact id")
    p.add_argument("ref", metavar="REF",
                   help="inbox blob path (exact, e.g. 11287/supplier/a.pdf), archive or quarantine path "
                        "(with the container), Inqom document id, or enFact invoice id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=show.run)

    p = commands.add_parser("quarantine", help="quarantined blobs")
    sub = p.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    q = sub.add_parser("list", help="blobs in quarantine with their reason and ledger state")
    q.add_argument("--prefix", help="only blobs whose path starts with this")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(handler=quarantine.run_list)

    p = commands.add_parser("replay", help="move a fixed quarantined blob back to the inbox to be sent again")
    p.add_argument("path", metavar="QUARANTINE_PATH", help="blob path inside the quarantine container")
    p.add_argument("--to", metavar="INBOX_PATH",
                   help="corrected inbox path, e.g. 11287/supplier/x.pdf (default: the same path)")
    p.add_argument("--force", action="store_true",
                   help="replay even if the routing rules would refuse the path, or send a held duplicate invoice")
    p.set_defaults(handler=quarantine.run_replay)

    p = commands.add_parser("backfill", help="upload a local directory tree into the inbox, skipping what was sent")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--folder", type=_positive_int, required=True, help="Inqom accounting folder id")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--beneficiary", metavar="NAME", help="expense bills: the beneficiary (path segment)")
    p.add_argument("--dry-run", action="store_true", help="report what would be uploaded, upload nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=backfill.run)

    p = commands.add_parser("export", help="the ledger's document rows as CSV")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(handler=export.run)

    p = commands.add_parser(
        "find", help="archived documents by counterparty, date, amount, docref (from the blob index tags), "
                     "or any document by its e-invoice number or seller (from the ledger)",
        description="Search the archive by what Inqom read from each document. Criteria combine with AND; "
                    "names and references are compared normalised (accents, case and punctuation ignored). "
                    "--invoice-number, --seller-vat and --seller-id search the ledger instead, archived or not, "
                    "and combine only with --folder, --kind and --inqom-id.",
        epilog="In Azure the tag index is eventually consistent: a document archived moments ago may not be "
               "found yet. Documents archived before tagging existed are found once backfill-tags has run.")
    p.add_argument("--folder", type=_positive_int, metavar="ID", help="Inqom accounting folder id")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--inqom-id", type=_positive_int, metavar="ID", help="Inqom document id")
    p.add_argument("--counterparty", metavar="NAME", help="the counterparty (supplier or customer), exact name")
    p.add_argument("--prefix", action="store_true", help="--counterparty is the start of the name")
    p.add_argument("--from", dest="date_from", type=find.parse_date, metavar="DATE",
                   help="entry date (EffectifDate) on or after, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", type=find.parse_date, metavar="DATE", help="entry date on or before")
    p.add_argument("--min-amount", type=find.parse_amount, metavar="X", help="total incl. VAT at least X")
    p.add_argument("--max-amount", type=find.parse_amount, metavar="Y", help="total incl. VAT at most Y")
    p.add_argument("--docref", metavar="REF", help="the document reference")
    p.add_argument("--invoice-number", metavar="NUMBER",
                   help="the e-invoice's number, as written (from the ledger: found before archiving too)")
    p.add_argument("--seller-vat", metavar="VAT", help="the e-invoice seller's VAT id (spaces and case ignored)")
    p.add_argument("--seller-id", metavar="ID", help="the e-invoice seller's legal id, e.g. SIREN or SIRET")
    p.add_argument("--account", action="store_true",
                   help="search every container of the storage account, not only the archive container")
    p.add_argument("--limit", type=_positive_int, default=find.DEFAULT_LIMIT, metavar="N",
                   help=f"at most N matches (default {find.DEFAULT_LIMIT})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--download", metavar="DIR", help="also download the matches into DIR (at their archive paths)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr while downloading")
    p.set_defaults(handler=find.run)

    p = commands.add_parser(
        "backfill-tags", help="tag documents archived before the archive was searchable (one Inqom GET each)",
        description="For each archived document not tagged yet: read what Inqom extracted (one GET, under the "
                    "Inqom rate budget), set the archive copy's index tags (its content is untouched) and store "
                    "the fields on its ledger row. Resumable: run it again to finish or retry.")
    p.add_argument("--folder", type=_positive_int, metavar="ID", help="only this accounting folder")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N documents in this run")
    p.add_argument("--force", action="store_true", help="also documents already tagged (read them again)")
    p.add_argument("--dry-run", action="store_true", help="read from Inqom and report, tag and write nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=tagging.run)

    p = commands.add_parser(
        "einvoice", help="what the bridge reads from a local e-invoice file (Factur-X / ZUGFeRD PDF, UBL, CII)",
        description="Read a local file as the upload does and print its EN 16931 terms. Needs no settings. "
                    "Exit 1 when the file is not an e-invoice or cannot be read (the reason on stderr).")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output (null for an absent term)")
    p.add_argument("--max-bytes", type=_positive_int, default=DEFAULT_MAX_BYTES, metavar="N",
                   help=f"files larger than this are not read (default {DEFAULT_MAX_BYTES}, the app's default)")
    p.set_defaults(handler=einvoice.run)
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None, *, services: Services | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(args.verbose)
    try:
        if args.handler is einvoice.run:  # a local file: no settings, no storage
            return einvoice.run(args)
        services = services or get_services()
        return args.handler(services, args)
    except CliError as exc:
        return _error(str(exc))
    except SettingsError as exc:
        return _error(str(exc))
    except ClientAuthenticationError as exc:
        return _error(f"storage refused the credential: {_first_line(exc)} "
                      "(identity-based access uses DefaultAzureCredential: az login, or a managed identity)")
    except ResourceNotFoundError as exc:
        return _error(f"storage: {_first_line(exc)} (check LEDGER_TABLE and the *_CONTAINER settings)")
    except AzureError as exc:
        return _error(f"storage: {_first_line(exc)}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _configure_logging(verbose: bool) -> None:
    """Log on stderr (WARNING, or everything with -v) unless the caller already set logging up (tests, embedding)."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def _first_line(exc: BaseException) -> str:
    message = str(exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__
