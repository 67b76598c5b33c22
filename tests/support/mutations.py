"""Does the simulation catch what it is meant to? Mutation check (a development tool, not part of the suite).

    .venv/bin/python -m tests.support.mutations                 # every mutation, two at a time
    .venv/bin/python -m tests.support.mutations --only claim    # those whose name contains "claim"
    .venv/bin/python -m tests.support.mutations --list          # what each one changes, nothing run

Each mutation is a small, named defect of the kind the simulation exists to find (an index written
after its row, a live claim taken over, a push answered 202 but never queued…). For each, the
repository is copied to a temporary directory (``node_modules`` linked, ``.git`` and ``.venv`` left out),
the defect is patched into the copy's text, and the simulation tests that should catch it run there
with this same Python, stopping at the first failure. The working tree is never touched. A mutation
whose text no longer matches the code (someone changed it) is reported ``stale``, not skipped.

Before the mutations, each selection of tests runs once on an unmutated copy (``--no-baseline`` skips
it): a selection that already fails there cannot tell a caught mutation from an old failure, and its
mutations are reported ``inconclusive``. The exit status is 0 only when every mutation was caught.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_LEFT_OUT = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".mypy_cache"}

#: Selections of ``tests/test_simulation.py`` (pytest ``-k`` expressions).
DROP = "every_crash_point and drop"
EXPENSE = "every_crash_point and expense"
TRANSIENT = "every_crash_point and transient"
LOST_EVENT = "every_crash_point and lost and event"
PUSH = "every_crash_point and fetch"
INTERLEAVED = "interleaved"


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str  # file in the repository
    edits: tuple[tuple[str, str], ...]  # (text, replacement): each text must occur exactly once
    selection: str  # the tests that should catch it
    origin: str = "ours"  # "issue 24" for the audit's five


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "insert-row-before-index", "ledger.insert writes the row before its pending-index entry",
        "shared/ledger/rows.py", (
            ('        self._index(partition, key, None, parse_iso(entity.get("NextPollAt")))  # entry before row\n', ""),
            ('            raise LedgerConflict(f"{partition}/{key} exists") from exc\n',
             '            raise LedgerConflict(f"{partition}/{key} exists") from exc\n'
             '        self._index(partition, key, None, parse_iso(entity.get("NextPollAt")))  # mutated: after the row\n'),
        ), DROP, "issue 24"),
    Mutation(
        "update-drops-old-index-first", "ledger.update deletes the old index entry before writing the row",
        "shared/ledger/rows.py", (
            ("        if old_due is not None and old_due != new_due:\n"
             "            self._index(entry.partition, entry.key, old_due, None)\n", ""),
            ('        entity = {"PartitionKey": entry.partition, "RowKey": entry.key, **fields}\n',
             "        if old_due is not None and old_due != new_due:  # mutated: before the row\n"
             "            self._index(entry.partition, entry.key, old_due, None)\n"
             '        entity = {"PartitionKey": entry.partition, "RowKey": entry.key, **fields}\n'),
        ), DROP, "issue 24"),
    Mutation(
        "claim-ignores-live-claim", "claim_upload takes over another worker's live claim",
        "shared/ledger/rows.py", (
            ('            if entry.state == UPLOADING and (parse_iso(entry.get("ClaimUntil")) or self.clock()) > '
             'self.clock():\n                return None\n', ""),
        ), INTERLEAVED, "issue 24"),
    Mutation(
        "plain-update-not-record-sent", "the uploader records its Inqom id with a plain update, not record_sent",
        "shared/drop/upload.py", (
            ("    recorded = ledger.record_sent(\n        keeper.entry, document.id, ",
             "    recorded = ledger.update(\n        keeper.entry, InqomId=document.id, "),
        ), INTERLEAVED, "issue 24"),
    Mutation(
        "webhook-never-queues", "the webhook answers 202 but never queues the push",
        "shared/enfact/push.py", (
            ("        services.enfact_queue.send_message(json.dumps(message))\n",
             "        pass  # mutated: never queued\n"),
        ), PUSH, "issue 24"),
    Mutation(
        "record-sent-forgets-extra", "record_sent drops a second upload's id instead of linking it (ExtraInqomIds)",
        "shared/ledger/rows.py", (
            ('                return self.update(entry, ExtraInqomIds=",".join([*extras, str(inqom_id)]))\n',
             "                return entry  # mutated: the extra upload is not linked\n"),
        ), INTERLEAVED),
    Mutation(
        "failed-upload-not-due", "a failed upload is recorded without a due time (no watchdog entry)",
        "shared/drop/upload.py", (
            ("NextPollAt=ledger.clock() + timedelta(seconds=retry_after_seconds)", "NextPollAt=None"),
        ), TRANSIENT),
    Mutation(
        "sweep-never-adopts", "the repair sweep never adopts an inbox blob that has no ledger row",
        "shared/archive/repair.py", (
            ("        if ledger.get(partition, key) is not None:\n            continue\n",
             "        if True:  # mutated: never adopted\n            continue\n"),
        ), LOST_EVENT),
    Mutation(
        "push-queued-before-hand-off", "the webhook marks a push Queued before handing it to the queue",
        "shared/enfact/push.py", (
            ("    try:\n        services.enfact_queue.send_message(json.dumps(message))\n",
             "    received = ledger.update(received, State=QUEUED)  # mutated: before the hand-off\n"
             "    try:\n        services.enfact_queue.send_message(json.dumps(message))\n"),
        ), PUSH),
    Mutation(
        "fetch-in-inbox-before-write", "the enFact fetch records InInbox before the inbox blob is written",
        "shared/enfact/fetch.py", (
            ("    try:\n        inbox.upload_blob(blob_name, pdf, ",
             "    current = ledger.update(current, State=IN_INBOX, InboxPath=blob_name)  # mutated: before the write\n"
             "    try:\n        inbox.upload_blob(blob_name, pdf, "),
        ), PUSH),
    Mutation(
        "expense-bill-sent-twice", "an expense bill is POSTed twice (a blind resend; the first answer dropped)",
        "shared/drop/upload.py", (
            ("        document_id = services.inqom.upload_expense_bill(\n",
             "        services.inqom.upload_expense_bill(instruction.folder_id, open_file=open_blob,  # mutated\n"
             "                                           file_name=instruction.file_name,\n"
             "                                           beneficiary=instruction.beneficiary or \"\")\n"
             "        document_id = services.inqom.upload_expense_bill(\n"),
        ), EXPENSE),
)


@dataclass
class Outcome:
    mutation: Mutation | None  # None: the unmutated baseline of ``selection``
    selection: str
    result: str = ""  # caught, missed, stale, error, inconclusive; baseline: passes, fails
    seconds: float = 0.0
    evidence: str = ""
    extra: dict = field(default_factory=dict)


def copy_repository(source: Path, target: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        return {name for name in names if name in _LEFT_OUT}

    shutil.copytree(source, target, ignore=ignore, symlinks=True)
    if (source / "node_modules").exists():
        (target / "node_modules").symlink_to(source / "node_modules", target_is_directory=True)


def apply(mutation: Mutation, root: Path) -> str | None:
    """Patch the copy; the reason it cannot be, or None."""
    path = root / mutation.path
    text = path.read_text()
    for old, new in mutation.edits:
        count = text.count(old)
        if count != 1:
            return f"{mutation.path}: the text to replace occurs {count} times (expected once): {old.strip()[:70]!r}"
        text = text.replace(old, new)
    path.write_text(text)
    return None


def run_selection(root: Path, selection: str, stop_first: bool, timeout: float) -> tuple[int, str, float]:
    command = [sys.executable, "-m", "pytest", "tests/test_simulation.py", "-q", "-p", "no:cacheprovider",
               "--no-header", "-rf", "-k", selection]
    if stop_first:
        command.append("-x")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SIM_SEEDS", None)
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out", time.monotonic() - started
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


_VIOLATION = re.compile(r"^E\s+(?:AssertionError: )?(.+)$", re.MULTILINE)


def evidence(output: str) -> str:
    """The first violation the failing test printed (crash point or seed, then what was wrong)."""
    for match in _VIOLATION.finditer(output):
        line = match.group(1).strip()
        if line and not line.startswith(("assert ", "Left contains", "Use -v", "+", "-", "At index")):
            return line[:220]
    failed = re.search(r"^FAILED (.+)$", output, re.MULTILINE)
    return failed.group(1)[:220] if failed else output.strip().splitlines()[-1][:220] if output.strip() else ""


def check(mutation: Mutation | None, selection: str, timeout: float, keep: bool) -> Outcome:
    outcome = Outcome(mutation, selection)
    root = Path(tempfile.mkdtemp(prefix=f"mutation-{mutation.name if mutation else 'baseline'}-"))
    try:
        copy_repository(REPO, root / "repo")
        if mutation is not None:
            problem = apply(mutation, root / "repo")
            if problem:
                outcome.result, outcome.evidence = "stale", problem
                return outcome
        code, output, outcome.seconds = run_selection(root / "repo", selection, stop_first=mutation is not None,
                                                      timeout=timeout)
        if mutation is None:
            outcome.result = "passes" if code == 0 else "fails"
            outcome.evidence = "" if code == 0 else evidence(output)
        elif code == 1:
            outcome.result, outcome.evidence = "caught", evidence(output)
        elif code == 0:
            outcome.result = "missed"
        else:
            outcome.result, outcome.evidence = "error", f"pytest exit {code}: {evidence(output)}"
        return outcome
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def table(outcomes: list[Outcome]) -> str:
    lines = ["| mutation | from | tests (-k) | result | s | evidence |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        m = o.mutation
        name = f"`{m.name}`: {m.what}" if m else "(unmutated)"
        lines.append(f"| {name} | {m.origin if m else 'baseline'} | `{o.selection}` | **{o.result}** | "
                     f"{o.seconds:.0f} | {o.evidence.replace('|', '/')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the mutations whose name contains this text")
    parser.add_argument("--jobs", type=int, default=2, help="copies tested at once (each starts its own Azurite)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed per selection run")
    parser.add_argument("--no-baseline", action="store_true", help="do not run the selections unmutated first")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (for a look)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    if args.list or not chosen:
        for m in chosen or MUTATIONS:
            print(f"{m.name:32} {m.origin:9} {m.path:24} -k {m.selection!r}: {m.what}")
        return 0 if chosen else 2
    started = time.monotonic()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        baseline: dict[str, Outcome] = {}
        if not args.no_baseline:
            selections = sorted({m.selection for m in chosen})
            for o in pool.map(lambda s: check(None, s, args.timeout, args.keep), selections):
                baseline[o.selection] = o
        outcomes = list(pool.map(lambda m: check(m, m.selection, args.timeout, args.keep), chosen))
    for o in outcomes:
        base = baseline.get(o.selection)
        if o.result == "caught" and base is not None and base.result != "passes":
            o.result, o.evidence = "inconclusive", f"the unmutated code fails these tests too: {base.evidence}"
    print(table(list(baseline.values()) + outcomes))
    caught = sum(o.result == "caught" for o in outcomes)
    print(f"\n{caught} of {len(outcomes)} mutations caught in {time.monotonic() - started:.0f} s "
          f"({args.jobs} at a time{', baseline included' if baseline else ''})")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
