"""The budget's Table row: read it (rebased for clock skew), write it back on its ETag, retry lost races.

    row = BudgetRow(lambda: table, lambda: (username, client_id), rate=12, poll_rate=3.6)
    batch = row.reserve(lambda current: plan(current, UPLOAD, now, now + row.write_time, LaneUsage(), settings),
                        pause=0.05)                 # None when 8 conditional writes in a row were lost
    row.record_hold(now + 30, pause=0.05)           # HoldUntil for every process, the rate factor cut

Not thread-safe: ``InqomBudget`` holds one conversation with the store at a time.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.http import DeadlineExceeded, ThrottledError
from shared.inqom.schedule import (ADAPT_RECOVERY, CLOCK_SKEW_BOUND, POLL, UPLOAD, Plan, Row, cut_factor,
                                   empty_row, rebase)
from shared.storage import TIMEOUTS

log = logging.getLogger("shared.inqom.budget.row")  # under the budget's logger: one name to filter on

BUDGET_PARTITION = "budget"  # in the ledger table; a system partition, not documents
_NEXT = {UPLOAD: "UploadNext", POLL: "PollNext"}  # next unreserved slot of each lane's schedule
_OWNED = {UPLOAD: "UploadOwned", POLL: "PollOwned"}  # end of the last batch a lane reserved for itself
_AT = {UPLOAD: "UploadAt", POLL: "PollAt"}  # the writer's clock when it last set the lane's schedule
#: Budget storage calls stay short: a slow store delays Inqom calls, so fall back early instead.
STORAGE_CALL = {"connection_timeout": min(3, TIMEOUTS["connection_timeout"]),
                "read_timeout": min(10, TIMEOUTS["read_timeout"]), "retry_total": 0}
_SERVER_TIMEOUT = 10  # seconds, the service side of every budget storage call
_MAX_CONFLICTS = 8  # conditional writes lost in a row before the caller backs off and tries again


def credential_key(username: str, client_id: str) -> str:
    """Row key of one Inqom credential: a hash, so neither the user name nor the client id is stored."""
    text = f"inqom-budget\n{username.strip().lower()}\n{client_id.strip()}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class BudgetRow:
    """One credential's budget row. ``table`` and ``credential`` are factories, called when first needed."""

    def __init__(self, table: Callable[[], TableClient], credential: Callable[[], tuple[str, str]], *,
                 rate: float, poll_rate: float, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.poll_rate = rate, poll_rate  # recorded in the row for whoever reads it
        self.write_time = 0.01  # recent duration of a conditional write (EWMA): new slots start after it
        self.reads = self.writes = self.conflicts = 0
        self._table_factory = table
        self._credential = credential
        self._clock = clock
        self._sleep = sleep
        self._counts = threading.Lock()  # the counters are read from other threads (``stats``)
        self._table: TableClient | None = None
        self._key: str | None = None
        self._cached: Row | None = None  # the row as this process last wrote it
        self._trust_cache = False  # write without reading first: the last read found our own last write
        self._skew_logged = False

    def reserve(self, take: Callable[[Row], Plan], pause: float) -> Plan | None:
        """Write the batch ``take`` plans on the row; None when every race was lost. ``take`` may raise
        ``ThrottledError`` (the batch is too far away): a rebased row is written back first."""
        for row in self._attempts(pause):
            try:
                batch = take(row)
            except (ThrottledError, DeadlineExceeded):
                if row.rebased:  # written back at our time, or every reader moves it again on each read
                    self.write(row, row.copy())
                raise
            if self.write(row, batch.row):
                return batch
        return None

    def record_hold(self, until: float, pause: float) -> tuple[float, bool] | None:
        """Hold every process off until ``until`` and cut the rate factor, unless the row holds as long
        already: (the row's hold, whether this call wrote it); None when every race was lost."""
        for row in self._attempts(pause):
            if row.hold_until >= until - 0.05:
                return row.hold_until, False
            now = self._clock()
            factor = cut_factor(row, now)
            if self.write(row, row.copy(hold_until=until, factor=factor, factor_at=now)):
                log.warning("Inqom asked to wait %.1fs: hold-off recorded for every instance, fleet "
                            "rate cut to %.1f/s (recovering by %.2f/s each second)", until - now,
                            self.rate * factor, self.rate * ADAPT_RECOVERY)
                return until, True
        return None

    def reset(self) -> None:
        """After a storage error: the table is built afresh, the cache forgotten."""
        self._table = None
        self._cached, self._trust_cache = None, False

    def _attempts(self, pause: float) -> Iterator[Row]:
        """The row to base each conditional write on (our own last write when nobody wrote since), up to
        ``_MAX_CONFLICTS`` times; after a lost write a random wait up to ``pause`` × attempts, or the
        losers race each other again."""
        self._store()
        for attempt in range(_MAX_CONFLICTS):
            if attempt:
                self._sleep(random.uniform(0, attempt * pause))
            yield self._cached if self._trust_cache and self._cached is not None else self.read()

    def _store(self) -> tuple[TableClient, str]:
        if self._key is None:
            self._key = credential_key(*self._credential())
        if self._table is None:
            self._table = self._table_factory()
        return self._table, self._key

    def counts(self) -> dict[str, int]:
        """Storage work so far: row reads, conditional writes (lost ones included), writes lost to others."""
        with self._counts:
            return {"reads": self.reads, "writes": self.writes, "conflicts": self.conflicts}

    def _count(self, name: str) -> None:
        with self._counts:
            setattr(self, name, getattr(self, name) + 1)

    def read(self) -> Row:
        table, key = self._store()
        self._count("reads")
        try:
            entity = table.get_entity(BUDGET_PARTITION, key, timeout=_SERVER_TIMEOUT, **STORAGE_CALL)
        except ResourceNotFoundError:
            return empty_row()
        row = Row({lane: float(entity.get(column) or 0.0) for lane, column in _NEXT.items()},
                  {lane: float(entity.get(column) or 0.0) for lane, column in _OWNED.items()},
                  float(entity.get("HoldUntil") or 0.0), entity.metadata.get("etag"),
                  float(entity.get("RateFactor") or 1.0), float(entity.get("FactorAt") or 0.0),
                  {lane: float(entity.get(column) or 0.0) for lane, column in _AT.items()})
        self._trust_cache = self._cached is not None and row.etag == self._cached.etag
        stamp = entity.metadata.get("timestamp")  # the store's clock at the last write
        row, skew = rebase(row, self._clock(), stamp.timestamp() if stamp else None)
        if skew.lead and not self._skew_logged:
            self._skew_logged = True
            log.warning("Inqom budget row set %.1fs ahead of this instance's clock (more than "
                        "CLOCK_SKEW_BOUND = %gs; %s): its slots and hold are counted from now instead",
                        skew.lead, CLOCK_SKEW_BOUND, "this clock is behind the store's" if skew.reader_behind
                        else "another instance's clock is fast")
        elif skew.lead:
            log.debug("Inqom budget row set %.1fs ahead of this instance's clock", skew.lead)
        return row

    def write(self, old: Row, new: Row) -> bool:
        """Conditional on ``old``'s ETag (create when the row is new); False when another process won."""
        table, key = self._store()
        entity = {"PartitionKey": BUDGET_PARTITION, "RowKey": key, "HoldUntil": float(new.hold_until),
                  "RateFactor": float(new.factor), "FactorAt": float(new.factor_at),
                  "Rate": float(self.rate), "PollRate": float(self.poll_rate),
                  "UpdatedAt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                  **{column: float(new.next[lane]) for lane, column in _NEXT.items()},
                  **{column: float(new.owned[lane]) for lane, column in _OWNED.items()},
                  **{column: float(new.at[lane]) for lane, column in _AT.items()}}
        self._count("writes")
        began = time.monotonic()
        try:
            if old.etag is None:
                metadata = table.create_entity(entity, timeout=_SERVER_TIMEOUT, **STORAGE_CALL)
            else:
                metadata = table.update_entity(entity, mode=UpdateMode.REPLACE, etag=old.etag,
                                               match_condition=MatchConditions.IfNotModified,
                                               timeout=_SERVER_TIMEOUT, **STORAGE_CALL)
        except (ResourceModifiedError, ResourceExistsError):
            self._lost()
            return False
        except ResourceNotFoundError:
            if old.etag is None:
                raise  # the table itself is missing: that is no race
            self._lost()
            return False
        self.write_time = min(0.7 * self.write_time + 0.3 * (time.monotonic() - began), 1.0)
        self._cached = new.copy(etag=metadata.get("etag"))  # trusted only once a read shows nobody else writes
        return True

    def _lost(self) -> None:
        self._count("conflicts")
        self._trust_cache = False
        self._cached = None


__all__ = ["BUDGET_PARTITION", "STORAGE_CALL", "BudgetRow", "credential_key"]
