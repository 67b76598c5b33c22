"""The invariants of DESIGN.md, checked on a simulated ``World`` (tests only).

    invariants = Invariants(world, STATS)                # World builds its own: ``world.invariants``
    problems = invariants.stranded_rows()                # at every step: unsettled rows keep their index entry
    problems = invariants.check()                        # after the run: every invariant; [] when they hold

They read the world as it stands (its versions, pushes, the interceptor's record of the wire, the
emulators, the ledger) and count what they check in ``stats``; ``SendLimits`` holds those counted
from the wire (sends, Inqom documents, claims).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.enfact.push import enfact_row_key
from shared.ledger.rows import (
    ENFACT_PARTITION, FINAL_STATES, PENDING_PARTITION, _pending_row_key, ledger_key, partition_for,
)
from tests.support.appsettings import ENFACT_COMPANY, ENFACT_SESSION_KEY, INQOM_CREDENTIALS, WEBHOOK_SECRET

if TYPE_CHECKING:
    from tests.emulators.inqom import InqomEmulator
    from tests.support.simulation import Stats, Version, VersionKey, World

#: States in which an invoice's inbox blob was set aside with a reason (invariant 1 checks the copy).
_SET_ASIDE = ("Quarantined", "Deleted")
_REJECTED = "Rejected"  # an ``enfact`` row's state for an invoice enFact does not know


class Invariants:
    """What must hold of ``world``, at every step (``stranded_rows``) and after a run (``check``)."""

    def __init__(self, world: World, stats: Stats) -> None:
        self.world = world
        self.stats = stats
        self.sends = SendLimits(world)

    def stranded_rows(self) -> list[str]:
        """Invariant 1 and 4 at every step: an unsettled row always has its due index entry."""
        self.stats.invariant_checks += 1
        return self.world.unchanged("stranded", "rows", lambda: [
            f"stranded: {e.partition}/{e.key} {e.state} {e.get('BlobPath')!r} has no due index entry"
            for e in self.world.rows() if e.state not in FINAL_STATES and not self._indexed(e)])

    def _indexed(self, entry: Any) -> bool:
        """``Ledger.has_index``, answered from one read of the whole due index."""
        due = entry.next_poll
        return due is not None and _pending_row_key(due, entry.partition, entry.key) in self._index_keys()

    def _index_keys(self) -> set[str]:
        table = self.world.services().ledger.table
        return self.world.unchanged("index", "rows", lambda: {
            row["RowKey"] for row in table.query_entities(f"PartitionKey eq '{PENDING_PARTITION}'", select=["RowKey"])})

    def check(self, settled: bool = True) -> list[str]:
        """Every invariant of DESIGN.md, after the run; returns the violations."""
        self.stats.invariant_checks += 1
        with self.world.interceptor.quiet():
            problems = sorted(set(self.world.step_problems))
            problems += self._every_version_accounted(settled)
            problems += self._every_invoice_accounted(settled)
            problems += self.sends.check()
            problems += list(self.world.interceptor.overwrites)
            problems += self._no_secrets()
        self.stats.violations += len(problems)
        return problems

    def _every_version_accounted(self, settled: bool) -> list[str]:
        services = self.world.services()
        settings = services.settings
        ledger = services.ledger
        problems = []
        for (name, etag), version in self.world.versions.items():
            self.stats.versions_checked += 1
            entry = ledger.get(partition_for(name), ledger_key(settings.inbox_container, name, etag))
            where = _where((name, etag))
            if entry is None:
                key = ledger_key(settings.inbox_container, name, etag)
                sent = any(d.get("SourceId") == key for d in self.world.inqom.documents.values())
                if version.replaced and not sent:
                    continue  # overwritten by its sender before any step could read it: those bytes are gone
                problems.append(f"lost: {where} has no ledger row")
                continue
            if entry.state not in FINAL_STATES:
                if settled or not ledger.has_index(entry):
                    problems.append(f"unsettled: {where} is {entry.state}: {entry.get('LastError')}")
                continue
            if entry.state == "Archived":
                container, _, path = entry.get("ArchivePath").partition("/")
                blob = services.stores.container(container).get_blob_client(path)
                if not blob.exists():
                    problems.append(f"lost: {where} Archived at {path} which does not exist")
                elif hashlib.sha1(blob.download_blob().readall()).hexdigest() != hashlib.sha1(version.data).hexdigest():
                    problems.append(f"corrupt: {where} archive copy differs from the dropped bytes")
                elif blob.get_blob_properties().metadata.get("ledgerkey") != entry.key:
                    problems.append(f"mislinked: {where} archive copy belongs to another row")
            elif entry.state in ("Quarantined", "Deleted"):
                path = (entry.get("QuarantinePath") or "/").partition("/")[2]
                blob = services.stores.container(settings.quarantine_container).get_blob_client(path)
                if not entry.get("QuarantineReason"):
                    problems.append(f"unexplained: {where} {entry.state} without a reason")
                if not path or not blob.exists():
                    problems.append(f"lost: {where} {entry.state} but no blob at {path!r}")
                elif blob.download_blob().readall() != version.data:
                    problems.append(f"corrupt: {where} quarantined copy differs")
                elif not blob.get_blob_properties().metadata.get("reason"):
                    problems.append(f"unexplained: {where} quarantined blob has no reason metadata")
        return problems

    def _every_invoice_accounted(self, settled: bool) -> list[str]:
        """enFact end to end: every invoice pushed, or listed by enFact to the reconcile, ends ``Archived``
        (its inbox blob's row), set aside with a reason (``Rejected`` by the fetch; its blob ``Quarantined``
        or ``Deleted``), or is still pending where a queue message or a due entry will find it."""
        services = self.world.services()
        settings = services.settings
        ledger = services.ledger
        expected: dict[tuple[str, str], str] = {}
        for invoice_id in self.world.pushed:
            expected.setdefault((ENFACT_COMPANY.lower(), invoice_id), "pushed")
        since = (self.world.now() - timedelta(days=settings.enfact_reconcile_days)).date().isoformat()
        for company, invoice_id, day in sorted(self.world.interceptor.listed):
            if day >= since:  # older ones are outside the reconcile's window by design
                expected.setdefault((company, invoice_id), "listed by enFact")
        queued = None
        problems = []
        for (company, invoice_id), how in sorted(expected.items()):
            self.stats.invoices_checked += 1
            where = f"enFact invoice {invoice_id} ({how})"
            row = ledger.get(ENFACT_PARTITION, enfact_row_key(company, invoice_id))
            if row is not None and row.state == _REJECTED:
                if not row.get("Reason"):
                    problems.append(f"unexplained: {where} Rejected without a reason")
                continue
            entries = [ledger.get(partition_for(v.name), ledger_key(settings.inbox_container, v.name, v.etag))
                       for v in self.world.versions.values() if v.enfact_id == invoice_id]
            entries = [e for e in entries if e is not None]
            if any(e.state == "Archived" for e in entries):
                continue
            if any(e.state in _SET_ASIDE and e.get("QuarantineReason") for e in entries):
                continue
            if not settled:
                if any(e.state not in FINAL_STATES and ledger.has_index(e) for e in entries):
                    continue
                if queued is None:
                    queue = services.stores.queue(settings.enfact_queue)
                    queued = bool(self.world.pushes) or bool(queue.peek_messages(max_messages=1))
                if queued:
                    continue
            problems.append(f"lost: {where} is neither Archived, Rejected nor pending: its enfact row is "
                            f"{row.state if row is not None else 'absent'}, its inbox versions "
                            f"{[e.state for e in entries] or 'none'}")
        return problems

    def _no_secrets(self) -> list[str]:
        """Invariant 6: no secret in a log record (tracebacks included) or a ledger column."""
        secrets = _secrets(self.world.inqom)
        texts = [("log", line) for line in self.world.log_lines]
        for entry in self.world.services().ledger.table.list_entities():
            texts.extend(("ledger", str(value)) for value in entry.values() if isinstance(value, str))
        problems = []
        for where, text in texts:
            for label, secret in secrets.items():
                if secret and (secret in text or _urlencoded(secret) in text):
                    problems.append(f"secret leaked: {label} in a {where} line: {text[:120]!r}")
        return sorted(set(problems))


class SendLimits:
    """Invariants 2, 8 and 11 and the claims, from the wire: what was sent to Inqom and what it holds, per blob
    version and per invoice, against what crashes after a send and takeovers of lapsed claims allow.

        problems = SendLimits(world).check()             # Invariants builds its own: ``invariants.sends``
    """

    def __init__(self, world: World) -> None:
        self.world = world

    def check(self) -> list[str]:
        """The violations; called inside ``interceptor.quiet()``, as ``Invariants.check`` does."""
        return (self._inqom_documents_named() + self._no_double_send() + self._one_invoice_one_document()
                + self._claims_respected())

    def _inqom_documents_named(self) -> list[str]:
        """Invariant 2, from what Inqom answered: every document Inqom holds is named by a row (``InqomId``,
        ``ExtraInqomIds``, ``OriginId``), whatever its kind (expense bills carry no ``SourceId``), except at
        most one per crash that came after its blob version was sent."""
        recorded: set[int] = set()
        linked: set[int] = set()
        for entry in self.world.services().ledger.scan():
            if entry.get("InqomId") not in (None, ""):
                recorded.add(int(entry.get("InqomId")))
            if entry.get("OriginId") not in (None, ""):
                linked.add(int(entry.get("OriginId")))
            recorded.update(int(x) for x in str(entry.get("ExtraInqomIds") or "").split(",") if x)
        named = recorded | linked
        problems = [f"forgotten: Inqom answered document {doc_id} to a worker that lived on, and no row records it"
                    for doc_id in sorted(self.world.must_name - recorded)]
        unnamed: dict[VersionKey | None, list[int]] = {}
        unanswered: list[int] = []
        for doc_id, document in sorted(self.world.inqom.documents.items()):
            if doc_id in named:
                continue
            if doc_id in self.world.interceptor.answers:
                version = self.world.interceptor.answers[doc_id]
            else:  # its answer never reached the app: matched to the version by bytes and name
                version = _version_of(self.world.versions, document)
                unanswered.append(doc_id)
            unnamed.setdefault(version, []).append(doc_id)
        for version, ids in unnamed.items():
            allowed = self.world.interceptor.crashes_after_send[version] if version else 0
            if len(ids) > allowed:
                lost = [i for i in ids if i in unanswered]
                problems.append(
                    f"orphaned: Inqom documents {ids} of blob version {_where(version)} are named by no ledger "
                    f"row; allowed {allowed} (one per crash after the send)"
                    + (f"; the answers to {lost} never reached the app" if lost else ""))
        return problems

    def _no_double_send(self) -> list[str]:
        """Invariant 8, counted from the wire: upload POSTs that may have made a document (answered 2xx, or
        not answered) per blob version ≤ 1 + crashes after its send + takeovers of a live worker's lapsed
        claim; and the same summed per enFact invoice (one invoice, one Inqom document)."""
        interceptor = self.world.interceptor
        sends: Counter[VersionKey] = Counter()
        problems = []
        for send in interceptor.sends:
            if not send.reached:
                continue
            if send.version is None:
                problems.append(f"unattributed: an upload POST ({send.op}) was made with no blob version on the stack")
            else:
                sends[send.version] += 1
        resends = Counter(t.version for t in interceptor.takeovers if t.allows_resend)

        def allowed(versions: list[VersionKey]) -> tuple[int, int, int]:
            crashes = sum(interceptor.crashes_after_send[v] for v in versions)
            takeovers = sum(resends[v] for v in versions)
            return 1 + crashes + takeovers, crashes, takeovers

        for version, count in sorted(sends.items()):
            limit, crashes, takeovers = allowed([version])
            if count > limit:
                problems.append(f"sent twice: blob version {_where(version)} was POSTed to Inqom {count} times; "
                                f"allowed {limit} (1 + {crashes} crashes after the send + {takeovers} takeovers of "
                                "a live worker's lapsed claim)")
        invoices: dict[str, list[VersionKey]] = {}
        for key, version in self.world.versions.items():
            if version.enfact_id:
                invoices.setdefault(version.enfact_id, []).append(key)
        held = Counter(str(d.get("SourceId")) for d in self.world.inqom.documents.values() if d.get("SourceId"))
        for invoice_id, versions in sorted(invoices.items()):
            limit, crashes, takeovers = allowed(versions)
            count = max(sum(sends[v] for v in versions), held[invoice_id])
            if count > limit:
                problems.append(f"sent twice: enFact invoice {invoice_id} reached Inqom {count} times "
                                f"({len(versions)} inbox versions); allowed {limit} (1 + {crashes} crashes after the "
                                f"send + {takeovers} takeovers of a live worker's lapsed claim)")
        return problems

    def _one_invoice_one_document(self) -> list[str]:
        """Invariant 11: the files of one invoice (every channel) make at most one Inqom document, beyond what
        crashes after a send and takeovers allow; and each held duplicate names a row holding its invoice."""
        services = self.world.services()
        settings = services.settings
        ledger = services.ledger
        problems = []
        labelled: dict[str, list[VersionKey]] = {}
        for key, version in self.world.versions.items():
            label = self.world.invoice_of.get(version.name) or self.world.invoice_of.get(version.enfact_id or "")
            if label:
                labelled.setdefault(label, []).append(key)
        crashes = self.world.interceptor.crashes_after_send
        resends = Counter(t.version for t in self.world.interceptor.takeovers if t.allows_resend)
        for label, versions in sorted(labelled.items()):
            sources = {ledger_key(settings.inbox_container, name, etag) for name, etag in versions}
            sources |= {self.world.versions[v].enfact_id for v in versions if self.world.versions[v].enfact_id}
            made = sum(1 for d in self.world.inqom.documents.values() if d.get("SourceId") in sources)
            limit = 1 + sum(crashes[v] + resends[v] for v in versions)
            if made > limit:
                problems.append(f"sent twice: invoice {label!r} ({len(versions)} files) made {made} Inqom documents; "
                                f"allowed {limit}")
            for name, etag in versions:
                row = ledger.get(partition_for(name), ledger_key(settings.inbox_container, name, etag))
                holder_ref = row.get("DuplicateOf") if row is not None else None
                if not holder_ref:
                    continue
                partition, _, key = holder_ref.partition("/")
                holder = ledger.get(partition, key)
                if holder is None or holder.get("BusinessKey") != row.get("BusinessKey"):
                    problems.append(f"mislinked: {_where((name, etag))} is a duplicate of {holder_ref}, "
                                    "which does not hold its invoice")
        return problems

    def _claims_respected(self) -> list[str]:
        """Two workers never both upload: an upload claim is taken over only once it has lapsed."""
        return [f"claim stolen: an upload claim of {_where(t.version)} was taken over while it was live "
                f"(until {t.claim_until})" for t in self.world.interceptor.takeovers if not t.stalled]


def _where(version: VersionKey | None) -> str:
    return f"{version[0]!r} ({version[1][-8:]})" if version else "(no blob version on the stack)"


def _version_of(versions: dict[VersionKey, Version], document: dict[str, Any]) -> VersionKey | None:
    """The blob version an Inqom document was made from, by its bytes (and its name when bytes repeat)."""
    checksum = str(document.get("Checksum") or "").upper()
    names = {document.get("OriginalName"), document.get("Name")}
    candidates = [key for key, v in versions.items() if v.sha1 == checksum]
    if len(candidates) > 1:
        candidates = [key for key in candidates if key[0].rsplit("/", 1)[-1] in names] or candidates
    return candidates[0] if len(candidates) == 1 else None


def _secrets(inqom: InqomEmulator) -> dict[str, str]:
    """Every secret the simulation holds or the Inqom emulator issued, by label."""
    secrets = {"Inqom password": INQOM_CREDENTIALS["password"],
               "Inqom client secret": INQOM_CREDENTIALS["client_secret"],
               "enFact session key": ENFACT_SESSION_KEY, "webhook secret": WEBHOOK_SECRET.split("_", 1)[1]}
    secrets.update({f"token {t[:6]}": t for t in inqom._identity.tokens})  # noqa: SLF001 (the tokens issued)
    secrets.update({f"sig of {k[:6]}": link.signature for k, link in inqom._store.links.items()})  # noqa: SLF001
    return secrets


def _urlencoded(secret: str) -> str:
    return quote(secret, safe="")
