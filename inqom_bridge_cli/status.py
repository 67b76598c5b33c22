"""``status``: ledger counts per state and kind, the oldest pending document, the latest errors.

    python -m inqom_bridge_cli status [--json]    # also: business duplicates held, OCR disagreements by field
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from shared.drop.duplicates import never_reached_inqom
from shared.ledger.rows import ARCHIVED, QUARANTINED, iso
from shared.inqom.polling import is_known_status
from shared.services import Services

from .common import PENDING_STATES, human_age, is_empty, print_json, row_dict, started_at, table, text

NO_KIND = "unknown"  # rows quarantined before routing decided a kind


def collect(services: Services, error_limit: int = 10) -> dict[str, Any]:
    ledger = services.ledger
    now = ledger.clock()
    states: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    untagged = 0
    held: list[dict[str, Any]] = []
    unsent_holders: set[str] = set()
    sent_invoices: set[str] = set()
    duplicates_held = 0
    disagreeing = 0
    disagreements: Counter[str] = Counter()
    oldest: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = []
    total = 0
    for entry in ledger.scan():
        row = row_dict(entry)
        total += 1
        states[text(row.get("State"))] += 1
        kinds[NO_KIND if is_empty(row.get("Kind")) else str(row["Kind"])] += 1
        if not is_empty(row.get("InqomStatus")) and not is_known_status(row.get("InqomStatus")):
            unknown[str(row["InqomStatus"])] += 1
        if row.get("State") == ARCHIVED and is_empty(row.get("TaggedAt")):
            untagged += 1
        if row.get("State") == QUARANTINED and not is_empty(row.get("DuplicateOf")):
            duplicates_held += 1
            held.append({"blob_path": row.get("BlobPath"), "first": row["DuplicateOf"], "invoice": row.get("BusinessKey")})
        if never_reached_inqom(entry):
            unsent_holders.add(f"{entry.partition}/{entry.key}")
        elif not is_empty(row.get("BusinessKey")) and not is_empty(row.get("InqomId")):
            sent_invoices.add(str(row["BusinessKey"]))
        if not is_empty(row.get("OcrMismatch")):
            disagreeing += 1
            disagreements.update(f for f in str(row["OcrMismatch"]).split(",") if f)
        if row.get("State") in PENDING_STATES:
            since = started_at(row)
            if since is not None and (oldest is None or since < oldest["_since"]):
                oldest = {**row, "_since": since}
        if not is_empty(row.get("LastError")):
            errors.append(row)
    errors.sort(key=lambda r: str(r.get("UpdatedAt") or ""), reverse=True)
    pending = sum(states[s] for s in PENDING_STATES)
    result: dict[str, Any] = {
        "ledger_table": services.settings.ledger_table,
        "generated_at": iso(now),
        "total": total,
        "states": dict(sorted(states.items())),
        "kinds": dict(sorted(kinds.items())),
        "pending": pending,
        # Rows whose last Inqom answer was a status Inqom's documentation does not name (followed slowly).
        "unknown_statuses": dict(sorted(unknown.items())),
        # Archived without index tags (before tagging existed, or tags refused): see ``backfill-tags``.
        "archived_untagged": untagged,
        # Second files of an invoice already in the ledger (same seller and number), held in quarantine.
        "duplicates_held": duplicates_held,
        # Held duplicates whose first file ended without reaching Inqom: nothing sends the invoice
        # unless one of them is replayed (``replay <path> --force``).
        "duplicates_of_unsent": [h["blob_path"] for h in held
                                 if h["first"] in unsent_holders and h["invoice"] not in sent_invoices],
        # Rows where Inqom's reading disagrees with the e-invoice (OcrMismatch), and per field.
        "ocr_disagreements": disagreeing,
        "ocr_disagreements_by_field": dict(sorted(disagreements.items())),
        "oldest_pending": None,
        "recent_errors": [
            {"partition": r["PartitionKey"], "key": r["RowKey"], "blob_path": r.get("BlobPath"),
             "state": r.get("State"), "updated_at": r.get("UpdatedAt"), "inqom_id": r.get("InqomId") or None,
             "last_error": r.get("LastError")}
            for r in errors[:error_limit]
        ],
    }
    if oldest is not None:
        age = now - oldest["_since"]
        result["oldest_pending"] = {
            "partition": oldest["PartitionKey"], "key": oldest["RowKey"], "blob_path": oldest.get("BlobPath"),
            "state": oldest.get("State"), "inqom_id": oldest.get("InqomId") or None,
            "inqom_status": oldest.get("InqomStatus") or None, "uploaded_at": iso(oldest["_since"]),
            "age_seconds": int(age.total_seconds()), "age": human_age(age),
            "next_poll_at": oldest.get("NextPollAt") or None,
        }
    return result


def run(services: Services, args: argparse.Namespace) -> int:
    data = collect(services, args.errors)
    if args.json:
        print_json(data)
        return 0
    out = sys.stdout
    out.write(f"Ledger table {data['ledger_table']}: {data['total']} document(s), "
              f"{data['pending']} pending in Inqom (at {data['generated_at']})\n")
    out.write("\nBy state:\n")
    for state, count in data["states"].items() or [("(none)", 0)]:
        out.write(f"  {state:<14} {count:>6}\n")
    out.write("\nBy kind:\n")
    for kind, count in data["kinds"].items() or [("(none)", 0)]:
        out.write(f"  {kind:<14} {count:>6}\n")
    if data["unknown_statuses"]:
        out.write("\nUnknown Inqom statuses (followed at the slow review cadence):\n")
        for status, count in data["unknown_statuses"].items():
            out.write(f"  {status:<14} {count:>6}\n")
    if data["archived_untagged"]:
        out.write(f"\nArchived without index tags: {data['archived_untagged']} "
                  "(python -m inqom_bridge_cli backfill-tags tags them)\n")
    if data["duplicates_held"]:
        out.write(f"\nBusiness duplicates held in quarantine: {data['duplicates_held']} "
                  "(show <path> names the first file of each invoice)\n")
    if data["duplicates_of_unsent"]:
        out.write(f"Of these, {len(data['duplicates_of_unsent'])} duplicate a file that never reached Inqom, so the "
                  "invoice is in Inqom through none of them: replay <path> --force sends one\n")
        for path in data["duplicates_of_unsent"][:args.errors]:
            out.write(f"  {path}\n")
    if data["ocr_disagreements"]:
        fields = ", ".join(f"{name} {count}" for name, count in data["ocr_disagreements_by_field"].items())
        out.write(f"\nInqom's reading disagrees with the e-invoice: {data['ocr_disagreements']} document(s) "
                  f"({fields}; show <path> gives OcrMismatchDetail)\n")
    oldest = data["oldest_pending"]
    out.write("\nOldest pending: ")
    if oldest is None:
        out.write("none\n")
    else:
        out.write(f"{oldest['blob_path']} ({oldest['partition']}/{oldest['key']})\n")
        out.write(f"  state {oldest['state']}, Inqom id {text(oldest['inqom_id'])}, "
                  f"Inqom status {text(oldest['inqom_status'])}\n")
        out.write(f"  uploaded {oldest['uploaded_at']}, age {oldest['age']}, "
                  f"next poll {text(oldest['next_poll_at'])}\n")
    out.write(f"\nRecent errors (newest first, at most {args.errors}):")
    if not data["recent_errors"]:
        out.write(" none\n")
        return 0
    out.write("\n")
    table([[text(e["updated_at"]), text(e["state"]), text(e["blob_path"]), str(e["last_error"]).replace("\n", " ")]
           for e in data["recent_errors"]], ["UPDATED", "STATE", "BLOB", "ERROR"], out, indent="  ")
    return 0
