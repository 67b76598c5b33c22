"""The ledger: one Azure Table row per document, written with ETags so two workers never both act.

    ledger = Ledger(stores.table(settings.ledger_table))
    entry = ledger.claim_upload(folder, key, fields, claim_seconds=900)   # None: nothing to do
    entry = ledger.update(entry, State=UPLOADED, InqomId=42, NextPollAt=due)

Partition = accounting folder id (``unrouted`` when the path gives none), row key =
``ledger_key(container, blob name, blob ETag)``. ``NextPollAt`` puts a row in the ``pending``
partition's index (keyed by due time, read by ``due()``); the new entry is written before the row
and the old removed after. The document row is the truth; a disagreeing index row is stale.
Why: docs/guarantee.md.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode

from shared.observability import redact

log = logging.getLogger(__name__)

UPLOADING = "Uploading"
UPLOADED = "Uploaded"
DUPLICATE = "Duplicate"
ARCHIVED = "Archived"
DELETED = "Deleted"
QUARANTINED = "Quarantined"
FAILED = "Failed"
STALE = "Stale"

QUARANTINING = "Quarantining"  # intent written, blob not yet moved: the poller finishes the move
SUPERSEDED = "Superseded"  # the blob version was replaced or removed before it could be sent
REFUSED = "Refused"  # the blob's name cannot be addressed safely by any storage client; left in place
REPLAYED = "Replayed"  # an operator moved the quarantined blob back to the inbox (it gets a new row)

FINAL_STATES = frozenset({ARCHIVED, DELETED, QUARANTINED, SUPERSEDED, REFUSED, REPLAYED})
#: States in which the blob has been handed to Inqom; a redelivered trigger must not send it again.
SENT_STATES = frozenset({UPLOADED, DUPLICATE, ARCHIVED, DELETED, STALE})

PENDING_PARTITION = "pending"
WEBHOOK_PARTITION = "webhook"  # one row per accepted push id (replay protection)
ENFACT_PARTITION = "enfact"  # one row per enFact invoice handed to the inbox
SWEEP_PARTITION = "sweep"  # the repair sweep's cursor
BUDGET_PARTITION = "budget"  # the fleet-wide Inqom rate budget (shared.inqom.budget)
INVOICE_PARTITION = "invoice"  # one row per business key: the document row holding it (shared.drop.duplicates)
SYSTEM_PARTITIONS = (PENDING_PARTITION, WEBHOOK_PARTITION, ENFACT_PARTITION, SWEEP_PARTITION, BUDGET_PARTITION,
                     INVOICE_PARTITION)
#: Free-text columns that may carry error text from elsewhere: masked like log lines.
TEXT_COLUMNS = frozenset({"LastError", "QuarantineReason", "Reason", "StatusReasons"})
UNROUTED_PARTITION = "unrouted"
# UTF-16 code units per string column, "…" included. A Table string holds 32,767 and an entity 1 MiB: at
# 8 KiB and a few bytes per column, a row reaches 1 MiB only past 120 such columns, while the ledger writes
# about 60 column names in all. Paths (blob names ≤ 1,024 characters, 2,048 units) stay below the cap.
_MAX_TEXT = 4_096


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def partition_for(blob_name: str) -> str:
    """Ledger partition of an inbox blob: its accounting folder id, or ``unrouted``."""
    head = blob_name.split("/", 1)[0]
    routable = head.isascii() and head.isdigit() and len(head) <= 19 and 0 < int(head) < 2**63
    return head if routable else UNROUTED_PARTITION


def ledger_key(container: str, blob_name: str, blob_etag: str) -> str:
    """Stable id of one version of one blob: same blob, same ETag → same key (never raw text)."""
    digest = hashlib.sha256(f"{container}/{blob_name}\n{blob_etag.strip(chr(34))}".encode()).hexdigest()
    return digest[:32]


class LedgerConflict(Exception):
    """Another worker changed the row first (stale ETag)."""


@dataclass
class LedgerEntry:
    partition: str
    key: str
    fields: dict[str, Any]
    etag: str | None = field(default=None, repr=False)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.fields.get(name, default)
        return value.value if isinstance(value, EntityProperty) else value

    @property
    def state(self) -> str | None:
        return self.get("State")

    @property
    def next_poll(self) -> datetime | None:
        return parse_iso(self.get("NextPollAt"))


def _encode(value: Any, column: str = "") -> Any:
    if column in TEXT_COLUMNS and isinstance(value, str):
        value = redact(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**31) <= value < 2**31:
        return EntityProperty(value, EdmType.INT64)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, str) and len(value) > _MAX_TEXT // 2:  # shorter strings fit in any case
        units = value.encode("utf-16-le", "surrogatepass")
        if len(units) > 2 * _MAX_TEXT:
            head = units[: 2 * (_MAX_TEXT - 1)]
            if 0xD8 <= head[-1] <= 0xDB:  # a high surrogate: the first half of a pair, never kept alone
                head = head[:-2]
            return head.decode("utf-16-le", "surrogatepass") + "…"
    return value


def _pending_row_key(due: datetime, partition: str, key: str) -> str:
    return f"{iso(due)}|{partition}|{key}"


@dataclass(frozen=True)
class DueItem:
    index_row_key: str
    partition: str
    key: str
    due: datetime
    etag: str | None = None  # of the index entry as read: a drop never removes one rewritten since


def _document_filter(query_filter: str | None) -> tuple[str, dict[str, str]]:
    names = {f"system{i}": name for i, name in enumerate(SYSTEM_PARTITIONS)}
    text = " and ".join(f"PartitionKey ne @{name}" for name in names)
    if query_filter:
        text += f" and ( {query_filter} )"  # the SDK finds @names between spaces
    return text, names


class Ledger:
    def __init__(self, table: TableClient, clock: Callable[[], datetime] = utcnow) -> None:
        self.table = table
        self.clock = clock

    def get(self, partition: str, key: str) -> LedgerEntry | None:
        try:
            entity = self.table.get_entity(partition, key)
        except ResourceNotFoundError:
            return None
        return self._entry(entity)

    def insert(self, partition: str, key: str, fields: dict[str, Any]) -> LedgerEntry:
        """Create the row; ``LedgerConflict`` if it already exists."""
        now = iso(self.clock())
        entity = {"PartitionKey": partition, "RowKey": key, "CreatedAt": now, "UpdatedAt": now}
        entity.update({name: _encode(value, name) for name, value in fields.items() if value is not None})
        self._index(partition, key, None, parse_iso(entity.get("NextPollAt")))  # entry before row
        try:
            metadata = self.table.create_entity(entity)
        except ResourceExistsError as exc:
            raise LedgerConflict(f"{partition}/{key} exists") from exc
        return LedgerEntry(partition, key, entity, metadata.get("etag"))

    def update(self, entry: LedgerEntry, **changes: Any) -> LedgerEntry:
        """Merge ``changes`` if nobody changed the row since ``entry`` was read; else ``LedgerConflict``.

        ``NextPollAt=<datetime>`` puts the row in the pending index, ``NextPollAt=None`` takes it out.
        """
        old_due = entry.next_poll
        fields = dict(entry.fields)
        for name, value in changes.items():
            fields[name] = _encode(value, name) if value is not None else ""
        fields["UpdatedAt"] = iso(self.clock())
        new_due = parse_iso(fields.get("NextPollAt") or None)
        if new_due is not None and new_due != old_due:
            self._index(entry.partition, entry.key, None, new_due)
        entity = {"PartitionKey": entry.partition, "RowKey": entry.key, **fields}
        try:
            metadata = self.table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=entry.etag, match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LedgerConflict(f"{entry.partition}/{entry.key} changed meanwhile") from exc
        if old_due is not None and old_due != new_due:
            self._index(entry.partition, entry.key, old_due, None)
        return LedgerEntry(entry.partition, entry.key, fields, metadata.get("etag"))

    def claim_upload(self, partition: str, key: str, fields: dict[str, Any], claim_seconds: float) -> LedgerEntry | None:
        """Take the right to upload this blob version, or return None when there is nothing to do.

        Nothing to do: already sent or settled, being quarantined, or another worker holds a live
        claim. A claim that expired (a worker crashed mid-upload) or a failed attempt is taken over.
        Each claim gets the next ``Attempts`` number, its fence: a worker whose claim was taken over
        still records what it sent (``record_sent``), so nothing it sent goes unnamed.
        The claim's expiry is also the row's next due time in the pending index: if the worker
        dies, the poller finds the row and drives the upload again.
        """
        claim_until = self.clock() + timedelta(seconds=claim_seconds)
        while True:
            try:  # a new blob is the common case: insert first, read only when the row exists
                return self.insert(partition, key, {**fields, "State": UPLOADING, "Attempts": 1,
                                                    "ClaimUntil": iso(claim_until), "NextPollAt": claim_until})
            except LedgerConflict:
                entry = self.get(partition, key)
            if entry is None:
                continue
            if entry.state not in (UPLOADING, FAILED):
                return None
            if entry.state == UPLOADING and (parse_iso(entry.get("ClaimUntil")) or self.clock()) > self.clock():
                return None
            try:  # the row may have been adopted by the repair sweep, which knew only the blob: fill it in
                return self.update(entry, **{k: v for k, v in fields.items() if v is not None}, State=UPLOADING,
                                   Attempts=int(entry.get("Attempts") or 0) + 1, ClaimUntil=iso(claim_until),
                                   NextPollAt=claim_until)
            except LedgerConflict:
                continue

    def renew_claim(self, claimed: LedgerEntry, claim_seconds: float) -> LedgerEntry | None:
        """Extend a live upload claim; None when it is no longer ours (taken over, or settled)."""
        entry: LedgerEntry | None = claimed
        while entry is not None:
            if entry.state != UPLOADING or entry.get("Attempts") != claimed.get("Attempts"):
                return None
            claim_until = self.clock() + timedelta(seconds=claim_seconds)
            try:
                return self.update(entry, ClaimUntil=iso(claim_until), NextPollAt=claim_until)
            except LedgerConflict:
                entry = self.get(claimed.partition, claimed.key)
        return None

    def record_sent(self, claimed: LedgerEntry, inqom_id: int, **outcome: Any) -> LedgerEntry:
        """Record the Inqom document an upload created, whatever happened to the claim meanwhile.

        The row still waiting for its upload takes ``outcome`` (state, id, first poll). A row that
        already names another Inqom document, or was settled meanwhile, keeps its state and lists
        this one in ``ExtraInqomIds``: a second upload is linked, never orphaned.
        """
        entry: LedgerEntry | None = claimed
        while True:
            if entry is None:
                raise LedgerConflict(f"{claimed.partition}/{claimed.key} disappeared while uploading")
            known = entry.get("InqomId")
            try:
                if entry.state in (UPLOADING, FAILED) and known in (None, ""):
                    return self.update(entry, InqomId=inqom_id, **outcome)
                if known not in (None, "") and int(known) == inqom_id:
                    return entry
                extras = [part for part in str(entry.get("ExtraInqomIds") or "").split(",") if part]
                if str(inqom_id) in extras:
                    return entry
                return self.update(entry, ExtraInqomIds=",".join([*extras, str(inqom_id)]))
            except LedgerConflict:
                entry = self.get(claimed.partition, claimed.key)

    def due(self, now: datetime, limit: int) -> list[DueItem]:
        """Oldest ``limit`` index entries due at ``now`` (reads only the pending partition's head)."""
        upper = _pending_row_key(now, "~", "~")
        query = self.table.query_entities(
            "PartitionKey eq @p and RowKey le @upper",
            parameters={"p": PENDING_PARTITION, "upper": upper},
            results_per_page=min(limit, 1000),
        )
        items: list[DueItem] = []
        for entity in query:
            items.append(DueItem(entity["RowKey"], entity["Partition"], entity["Key"], parse_iso(entity["DueAt"]),
                                 entity.metadata.get("etag")))
            if len(items) >= limit:
                break
        return items

    def pending_stats(self, now: datetime) -> tuple[int, float]:
        """(entries in the pending index, seconds the most overdue one is past due): the index only, keys only."""
        count, oldest = 0, None
        for entity in self.table.query_entities("PartitionKey eq @p", parameters={"p": PENDING_PARTITION},
                                                select=["RowKey"], results_per_page=1000):
            count += 1
            oldest = oldest or entity["RowKey"].split("|", 1)[0]  # row keys sort by due time
        overdue = (now - parse_iso(oldest)).total_seconds() if oldest else 0.0
        return count, max(overdue, 0.0)

    def drop_index(self, item: DueItem) -> None:
        """Remove a stale entry, unless it was written again since ``due()`` read it (a claim taking the
        same due time): then it is live, and stays."""
        condition = {"etag": item.etag, "match_condition": MatchConditions.IfNotModified} if item.etag else {}
        try:
            self.table.delete_entity(PENDING_PARTITION, item.index_row_key, **condition)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass

    def has_index(self, entry: LedgerEntry) -> bool:
        """Whether the row's due time has its pending-index entry (the repair sweep's check)."""
        due = entry.next_poll
        if due is None:
            return False
        try:
            self.table.get_entity(PENDING_PARTITION, _pending_row_key(due, entry.partition, entry.key))
        except ResourceNotFoundError:
            return False
        return True

    def reindex(self, entry: LedgerEntry) -> None:
        """Write the pending-index entry of the row's current due time (idempotent)."""
        self._index(entry.partition, entry.key, None, entry.next_poll)

    def scan(self, query_filter: str | None = None, **parameters: Any) -> Iterator[LedgerEntry]:
        """Document rows (not index rows), optionally filtered; for operators' tools."""
        text, system = _document_filter(query_filter)
        for entity in self.table.query_entities(text, parameters={**system, **parameters}):
            yield self._entry(entity)

    def scan_page(self, query_filter: str | None, page_size: int, token: Any = None,
                  **parameters: Any) -> tuple[list[LedgerEntry], Any]:
        """One page of document rows and the continuation token of the next (None at the end)."""
        text, system = _document_filter(query_filter)
        pages = self.table.query_entities(text, parameters={**system, **parameters},
                                          results_per_page=page_size).by_page(continuation_token=token)
        rows = [self._entry(entity) for entity in next(pages, [])]
        return rows, pages.continuation_token

    def _index(self, partition: str, key: str, remove: datetime | None, add: datetime | None) -> None:
        if add is not None:
            self.table.upsert_entity({
                "PartitionKey": PENDING_PARTITION, "RowKey": _pending_row_key(add, partition, key),
                "Partition": partition, "Key": key, "DueAt": iso(add),
            })
        if remove is not None:
            try:
                self.table.delete_entity(PENDING_PARTITION, _pending_row_key(remove, partition, key))
            except ResourceNotFoundError:
                pass

    @staticmethod
    def _entry(entity: Any) -> LedgerEntry:
        fields = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
        return LedgerEntry(entity["PartitionKey"], entity["RowKey"], fields, entity.metadata.get("etag"))


class ClaimKeeper:
    """Renews an upload claim in the background while the upload runs, so no watchdog takes it over.

        with ClaimKeeper(ledger, claimed, claim_seconds=900) as keeper:
            send()
        ledger.record_sent(keeper.entry, document_id, ...)     # the latest version of the row

    Renewals happen every third of the claim. A claim found taken over stops the renewals; the
    final write (``record_sent``) still names what was sent.
    """

    def __init__(self, ledger: Ledger, claimed: LedgerEntry, claim_seconds: float) -> None:
        self._ledger = ledger
        self._claim_seconds = claim_seconds
        self._entry = claimed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"claim-{claimed.key[:8]}", daemon=True)

    @property
    def entry(self) -> LedgerEntry:
        return self._entry

    def __enter__(self) -> "ClaimKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._claim_seconds / 3):
            try:
                renewed = self._ledger.renew_claim(self._entry, self._claim_seconds)
            except Exception as exc:  # a storage hiccup: the claim still holds until its expiry
                log.warning("renewing the upload claim of ledger %s failed: %s", self._entry.key, type(exc).__name__)
                continue
            if renewed is None:
                log.warning("upload claim of ledger %s was taken over; no more renewals", self._entry.key)
                return
            self._entry = renewed
