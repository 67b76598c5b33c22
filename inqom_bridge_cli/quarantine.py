"""``quarantine list`` and ``replay``: what is in quarantine and why; send a fixed document again.

Replay moves the quarantined blob back into the inbox (optionally under a corrected path) with
``move_blob``, dropping the quarantine-only metadata (``reason``, ``ledgerkey``) on the way: the
inbox copy is created final, because its Event Grid ``BlobCreated`` starts the upload at once.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any
from urllib.parse import unquote

from azure.core.exceptions import ResourceNotFoundError

from shared.blobmove import move_blob
from shared.ledger.rows import DELETED, QUARANTINED, REPLAYED, LedgerConflict, LedgerEntry, iso, partition_for
from shared.observability import redact
from shared.drop.routing import RoutingError, route
from shared.drop.structured import REPLAY_OF, SEND_DUPLICATE
from shared.services import Services

from .common import CliError, human_bytes, print_json, table, text

QUARANTINE_ONLY_METADATA = ("reason", "ledgerkey", SEND_DUPLICATE)  # dropped on replay; --force sets the last again


def ledger_row_for(services: Services, quarantine_name: str, metadata: dict[str, str]) -> LedgerEntry | None:
    """The ledger row of a quarantined blob: by its ``ledgerkey`` metadata, else by QuarantinePath."""
    ledger = services.ledger
    key = metadata.get("ledgerkey")
    if key:
        entry = ledger.get(partition_for(quarantine_name), key)
        if entry is not None:
            return entry
        found = list(ledger.scan("RowKey eq @k", k=key))
        if found:
            return found[0]
    path = f"{services.settings.quarantine_container}/{quarantine_name}"
    candidates = [e for e in ledger.scan("QuarantinePath eq @p", p=path) if e.state in (QUARANTINED, DELETED)]
    candidates.sort(key=lambda e: str(e.get("UpdatedAt") or ""))
    return candidates[-1] if candidates else None


def list_quarantine(services: Services, prefix: str | None = None) -> list[dict[str, Any]]:
    container = services.stores.container(services.settings.quarantine_container)
    items = []
    for blob in container.list_blobs(name_starts_with=prefix or None, include=["metadata"]):
        metadata = dict(blob.metadata or {})
        entry = ledger_row_for(services, blob.name, metadata)
        reason = unquote(metadata["reason"]) if metadata.get("reason") else None
        if reason is None and entry is not None:
            reason = redact(entry.get("QuarantineReason") or "") or None
        items.append({
            "path": blob.name, "size": blob.size,
            "last_modified": blob.last_modified.isoformat() if blob.last_modified else None,
            "reason": reason, "ledger_key": metadata.get("ledgerkey") or (entry.key if entry else None),
            "ledger_partition": entry.partition if entry else None,
            "ledger_state": entry.state if entry else None,
            "inqom_id": (entry.get("InqomId") or None) if entry else None,
        })
    return items


def run_list(services: Services, args: argparse.Namespace) -> int:
    items = list_quarantine(services, args.prefix)
    if args.json:
        print_json(items)
        return 0
    if not items:
        print(f"quarantine container {services.settings.quarantine_container} is empty")
        return 0
    table([[i["path"], human_bytes(i["size"] or 0), text(i["ledger_state"]), text(i["reason"])] for i in items],
          ["PATH", "SIZE", "LEDGER", "REASON"])
    print(f"\n{len(items)} blob(s) in quarantine container {services.settings.quarantine_container}")
    return 0


def replay(services: Services, path: str, new_path: str | None = None, force: bool = False) -> dict[str, Any]:
    settings = services.settings
    stores = services.stores
    source = stores.container(settings.quarantine_container).get_blob_client(path)
    try:
        props = source.get_blob_properties()
    except ResourceNotFoundError:
        raise CliError(f"no blob {path!r} in quarantine container {settings.quarantine_container} "
                       "(see: quarantine list)") from None
    target = (new_path or path).strip().strip("/")
    original = dict(props.metadata or {})
    clean = {k: v for k, v in original.items() if k.lower() not in QUARANTINE_ONLY_METADATA}
    try:
        route(target, clean, props.size, services.routing_rules)
    except RoutingError as exc:
        if not force:
            hint = "" if new_path else " — give a corrected inbox path with --to"
            raise CliError(f"inbox path {target!r} would be quarantined again: {exc}{hint} "
                           "(--force replays anyway)") from None
    inbox = stores.container(settings.inbox_container)
    if inbox.get_blob_client(target).exists():
        raise CliError(f"inbox already holds a blob {target!r}; it is not overwritten "
                       "(wait for it to be processed, or replay under another name with --to)")
    entry = ledger_row_for(services, path, original)
    extra = {REPLAY_OF: entry.key} if entry is not None else {}
    if entry is not None and entry.get("DuplicateOf"):
        if not force:
            raise CliError(f"{path!r} is held as a duplicate of invoice {entry.get('EInvoiceNumber')} already sent "
                           f"as {entry.get('DuplicateOfPath')}; replaying it would hold it again "
                           "(--force sends it to Inqom all the same)")
        extra[SEND_DUPLICATE] = "true"

    target = move_blob(stores, settings.quarantine_container, path, settings.inbox_container, dest_name=target,
                       owner=f"replay-{props.etag.strip(chr(34))}", extra_metadata=extra or None,
                       drop_metadata=QUARANTINE_ONLY_METADATA)
    left_behind = source.exists()

    replay_count = None
    if entry is not None:
        while True:
            replay_count = int(entry.get("ReplayCount") or 0) + 1
            try:
                entry = services.ledger.update(
                    entry, State=REPLAYED, StateBeforeReplay=entry.state, ReplayedAt=iso(services.ledger.clock()),
                    ReplayCount=replay_count, ReplayedTo=f"{settings.inbox_container}/{target}",
                    NextPollAt=None, ClaimUntil=None, LastError=None,
                )
                break
            except LedgerConflict:
                entry = services.ledger.get(entry.partition, entry.key)
                if entry is None:
                    break
    return {"from": f"{settings.quarantine_container}/{path}", "to": f"{settings.inbox_container}/{target}",
            "inbox_path": target, "ledger_partition": entry.partition if entry else None,
            "ledger_key": entry.key if entry else None, "replay_count": replay_count,
            "source_left_behind": left_behind}


def run_replay(services: Services, args: argparse.Namespace) -> int:
    result = replay(services, args.path, args.to, args.force)
    out = sys.stdout
    out.write(f"moved {result['from']} -> {result['to']}\n")
    if result["ledger_key"]:
        out.write(f"ledger row {result['ledger_partition']}/{result['ledger_key']} marked {REPLAYED} "
                  f"(replay #{result['replay_count']}); the inbox blob gets a new ledger row when it is uploaded\n")
    else:
        print("warning: no ledger row found for this quarantined blob; nothing marked Replayed", file=sys.stderr)
    if result["source_left_behind"]:
        print(f"warning: {result['from']} still exists (it was changed during the move); check it and delete it "
              "by hand once the replay is archived", file=sys.stderr)
    target = result["inbox_path"]
    out.write(
        "\nIn Azure: the inbox's Event Grid subscription raises BlobCreated for the new blob and upload_document "
        "sends it like a new drop.\n"
        "Locally (Azurite, no Event Grid): the local runner (scripts/run.sh or python -m devtools.run) lists the inbox "
        "every second and delivers the new blob once, as Event Grid would; start it if it is not running.\n"
        f"Follow it with: python -m inqom_bridge_cli show {shlex.quote(target)}\n"
    )
    return 0
