"""Status polling: work per tick over a large ledger, and Inqom calls per document lifecycle.

    .venv/bin/python -m bench.poll [--rows 10000] [--due-share 0.05] [--ks 1,2,4,8,16,32]

Part 1, work per tick. A ledger of ``--rows`` pending rows (State ``Uploaded``), inserted through
``services.ledger.insert(...)`` so each also gets its pending-index row, pointing at a handful of
real emulator documents (uploaded through the app's Inqom client, then pinned to ``Processing``
so every poll is one GET and nothing progresses). A share ``--due-share`` of the rows is due now,
the rest in 1 to 24 hours. ``poll_documents`` is fired through the LocalHost until a tick finds
nothing due; per tick it prints the rows examined (the tick's own report), the ledger rows read
(pending-index entries returned + document rows fetched), the Inqom calls and the wall time.
Baseline in the same run: a naive poller's full scan of the ledger for pending rows. The repair
sweep that ends every tick is then timed on its own over the same ledger (rows and blobs examined
per run, milliseconds per run, ticks needed to cover the whole ledger).

Part 2, Inqom calls per document lifecycle. For each k in ``--ks`` one document is dropped in the
inbox and uploaded by ``upload_document``; Inqom "finishes" it k × POLL_FIRST_DELAY_SECONDS of
simulated time after its upload (the emulator's ``set_status(doc, "Done")`` once the simulated
clock passes that point; ``Processing`` before). Simulated time is the ledger clock
(``services.ledger.clock``), advanced by ``--tick-seconds`` (default POLL_FIRST_DELAY_SECONDS)
before each ``poll_documents`` tick, until every document is archived. Counted per document from
the emulator's recorded requests: the upload POST, GET Documents/{id}, GET .../public-url and the
download of the temporary URL (it counts: it is a request to the host Inqom names, though it is
storage, not the API); the process's single token call is shared by all documents and not
counted. Baseline in the same run: the same lifecycle with a fixed-interval poller, i.e. the same
code with POLL_MAX_INTERVAL_SECONDS = POLL_FIRST_DELAY_SECONDS (backoff disabled).

Part 3, month-end. ``--month-end-docs`` documents, each its own emulator document already
``Done``, all due at once; the emulator answers every call after ``--latency`` and never answers
``--hang-share`` of API calls. Ticks are fired back to back until all are archived. Printed:
documents archived per second against the bound the API budget allows (``--rate`` ÷ API calls per
document; the download of the temporary URL is outside the budget), tick durations (max, p99)
against the tick budget plus its grace, hung calls cut by the deadline, rows lost or left claimed.
Baseline in the same run: the sequential tick (``POLL_WORKERS=1``) for ``--baseline-seconds``.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from bench._setup import (
    Bench, FunctionalFailure, Goals, bench_environment, count_kinds, header, quantile, run_main, table,
)
from shared.archive.poll import TickReport
from shared.ledger.rows import ARCHIVED, UPLOADED, iso, parse_iso
from shared.archive.repair import repair_sweep

TICK_FOLDER = 11287
LIFECYCLE_FOLDER = 11290
BASELINE_FOLDER = 11291


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.poll", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000, help="pending ledger rows (default 10000)")
    parser.add_argument("--due-share", type=float, default=0.05, help="share of the rows due now (default 0.05)")
    parser.add_argument("--documents", type=int, default=5, help="distinct emulator documents the rows point at")
    parser.add_argument("--insert-threads", type=int, default=8, help="threads inserting the ledger rows")
    parser.add_argument("--ks", default="1,2,4,8,16,32",
                        help="k values: Inqom finishes a document k x POLL_FIRST_DELAY_SECONDS after upload")
    parser.add_argument("--first-delay", type=float, default=60.0, help="POLL_FIRST_DELAY_SECONDS (default 60)")
    parser.add_argument("--max-interval", type=float, default=3600.0,
                        help="POLL_MAX_INTERVAL_SECONDS of the backoff run (default 3600, the app default)")
    parser.add_argument("--tick-seconds", type=float, default=None,
                        help="simulated time between ticks in part 2 (default: POLL_FIRST_DELAY_SECONDS)")
    parser.add_argument("--month-end-docs", type=int, default=3000,
                        help="part 3: documents due at once (the issue's month-end is 10000; ~17 min at --rate 20)")
    parser.add_argument("--rate", type=float, default=20.0, help="part 3: Inqom API budget, requests/s (default 20)")
    parser.add_argument("--latency", type=float, default=0.08, help="part 3: emulator latency per call, s (default 0.08)")
    parser.add_argument("--hang-share", type=float, default=0.002,
                        help="part 3: share of API calls the emulator never answers (default 0.002)")
    parser.add_argument("--tick-budget", type=float, default=20.0, help="part 3: POLL_TICK_BUDGET_SECONDS (default 20)")
    parser.add_argument("--baseline-seconds", type=float, default=30.0,
                        help="part 3: how long the sequential baseline runs (default 30 s)")
    parser.add_argument("--skip-ticks", action="store_true", help="skip part 1")
    parser.add_argument("--skip-lifecycle", action="store_true", help="skip part 2")
    parser.add_argument("--skip-month-end", action="store_true", help="skip part 3")
    args = parser.parse_args()
    args.ks = sorted({int(k) for k in args.ks.split(",") if k.strip()})
    if args.rows < 1 or not 0 <= args.due_share <= 1 or args.documents < 1 or any(k < 1 for k in args.ks):
        parser.error("--rows and --documents must be positive, --due-share in [0, 1], k values >= 1")
    args.tick_seconds = args.tick_seconds or args.first_delay
    return args


class TickLog:
    """Keeps the TickReport of every ``poll_documents`` tick.

    The registered function calls ``poll_tick`` (imported into ``functions.poll``) and only logs
    the report, so the bench wraps that module global: the function itself runs unchanged.
    """

    def __init__(self) -> None:
        import functions.poll as poll_function

        self.reports: list[TickReport] = []
        original = poll_function.poll_tick

        def recording_poll_tick(*args: Any, **kwargs: Any) -> TickReport:
            report = original(*args, **kwargs)
            self.reports.append(report)
            return report

        poll_function.poll_tick = recording_poll_tick


class LedgerReads:
    """Counts ledger rows read through the ledger under test (index entries from ``due``, rows from ``get``)."""

    def __init__(self, ledger: Any) -> None:
        self.index_rows = 0
        self.document_rows = 0
        due, get = ledger.due, ledger.get

        def counted_due(*args: Any, **kwargs: Any):
            items = due(*args, **kwargs)
            self.index_rows += len(items)
            return items

        def counted_get(*args: Any, **kwargs: Any):
            entry = get(*args, **kwargs)
            self.document_rows += 1
            return entry

        ledger.due, ledger.get = counted_due, counted_get  # instance attributes: the bench's own Services only


def fire_tick(bench: Bench, tick_log: TickLog) -> TickReport:
    before = len(tick_log.reports)
    bench.host.fire_timer("poll_documents")
    if len(tick_log.reports) != before + 1:
        raise FunctionalFailure("poll_documents did not call shared.archive.poll.poll_tick through functions.poll")
    report = tick_log.reports[-1]
    if report.errors:
        raise FunctionalFailure(f"tick errors: {report.errors[:3]}")
    return report


# ---------------------------------------------------------------------------------- part 1


def part_ticks(bench: Bench, args: argparse.Namespace, tick_log: TickLog, goals: Goals) -> None:
    services = bench.reconfigure(fresh_names=True)
    settings = services.settings
    inqom = bench.inqom
    ledger = services.ledger

    doc_ids = []
    for j in range(args.documents):
        content = os.urandom(2048)
        document = services.inqom.upload_document(
            TICK_FOLDER, type_scan="Supplier", open_file=lambda c=content: io.BytesIO(c),
            file_name=f"seed-{j}.pdf", source_id=f"bench-seed-{j}")
        inqom.set_status(document.id, "Processing")  # pinned: every poll is one GET, nothing progresses
        doc_ids.append(document.id)

    rng = random.Random(20260601)
    due_count = round(args.rows * args.due_share)
    due_rows = set(rng.sample(range(args.rows), due_count))
    now = ledger.clock()
    next_polls = [now - timedelta(seconds=rng.uniform(1, 3600)) if i in due_rows
                  else now + timedelta(seconds=rng.uniform(3600, 86400)) for i in range(args.rows)]

    def insert(i: int) -> None:
        next_poll = next_polls[i]
        ledger.insert(str(TICK_FOLDER), f"bench{i:06d}", {
            "Source": "bench", "Container": settings.inbox_container, "BlobPath": f"{TICK_FOLDER}/supplier/p{i}.pdf",
            "BlobETag": "0x8DBENCH", "Size": 2048, "Kind": "supplier", "FolderId": TICK_FOLDER,
            "State": UPLOADED, "InqomId": doc_ids[i % len(doc_ids)], "InqomStatus": "Processing",
            "UploadedAt": iso(now - timedelta(hours=1)), "NextPollAt": next_poll, "Polls": 0,
        })

    started = time.perf_counter()
    with ThreadPoolExecutor(args.insert_threads) as pool:
        list(pool.map(insert, range(args.rows)))
    print(f"\npart 1 set-up: {args.rows} pending rows ({due_count} due now) inserted through "
          f"services.ledger.insert in {time.perf_counter() - started:.1f} s, pointing at {len(doc_ids)} "
          f"emulator documents pinned to Processing; POLL_BATCH_SIZE={settings.poll_batch_size}", flush=True)

    # Baseline: what a poller without the pending index reads — every document row, due or not.
    started = time.perf_counter()
    scanned = list(ledger.scan("State eq @state", state=UPLOADED))
    found_due = sum(1 for entry in scanned if entry.next_poll and entry.next_poll <= ledger.clock())
    scan_seconds = time.perf_counter() - started

    reads = LedgerReads(ledger)
    rows = []
    remaining = due_count
    per_tick_ok = True
    total_examined = 0
    for tick in range(1, math.ceil(due_count / settings.poll_batch_size) + 3):
        calls_before, index_before, docs_before = len(inqom.requests), reads.index_rows, reads.document_rows
        started = time.perf_counter()
        report = fire_tick(bench, tick_log)
        seconds = time.perf_counter() - started
        calls = len(inqom.requests) - calls_before
        expected = min(remaining, settings.poll_batch_size)
        per_tick_ok &= report.examined == expected and calls == report.polled
        remaining -= report.polled
        total_examined += report.examined
        read = (reads.index_rows - index_before) + (reads.document_rows - docs_before)
        rows.append([f"tick {tick}", expected, report.examined, report.polled, read, calls, seconds * 1000,
                     seconds * 1000 / report.examined if report.examined else "-"])
        if report.examined == 0:
            break

    print()
    print(f"ledger of {args.rows} pending rows, {due_count} due ({args.due_share:.0%}):")
    table(["poller", "due (≤ batch)", "rows examined", "polled", "ledger rows read", "Inqom calls", "wall ms",
           "ms/row"], [[label, *rest] for label, *rest in rows]
          + [["baseline: full ledger scan (no index)", due_count, "-", "-", len(scanned), 0, scan_seconds * 1000,
              scan_seconds * 1000 / max(len(scanned), 1)]])
    if found_due != due_count:
        raise FunctionalFailure(f"the full scan found {found_due} due rows, {due_count} were inserted due")

    polled_rows = [e for e in ledger.scan("State eq @state", state=UPLOADED) if int(e.get("Polls") or 0) > 0]
    wrong = [e.key for e in polled_rows if int(e.key[5:]) not in due_rows]
    if len(polled_rows) != due_count or wrong:
        raise FunctionalFailure(f"{len(polled_rows)} rows were polled for {due_count} due "
                                f"({len(wrong)} of them were not due)")
    sweep_runs = []
    for _ in range(3):  # the repair sweep each tick ends with, timed on its own over this ledger
        started = time.perf_counter()
        sweep = repair_sweep(services, ledger.clock())
        sweep_runs.append((time.perf_counter() - started, sweep))
    sweep_ms = sorted(seconds for seconds, _ in sweep_runs)[1] * 1000
    examined = sweep_runs[-1][1].rows
    print(f"\nrepair sweep (ends every tick; REPAIR_SWEEP_BATCH={settings.repair_sweep_batch}): "
          f"{examined} unsettled rows and {sweep_runs[-1][1].blobs} inbox blobs examined per run, "
          f"median {sweep_ms:.0f} ms per run, {sum(s.reindexed for _, s in sweep_runs)} re-indexed; the whole "
          f"{args.rows}-row ledger is covered every {math.ceil(args.rows / settings.repair_sweep_batch)} ticks")
    if any(s.reindexed or s.adopted for _, s in sweep_runs):
        raise FunctionalFailure("the repair sweep found rows to repair in a ledger written by the app itself")
    busiest = max(r[2] for r in rows)
    goals.check("rows examined per tick ≈ due rows (not the whole ledger)", per_tick_ok and total_examined == due_count,
                f"each tick examined min(due left, batch {settings.poll_batch_size}); {total_examined} examined in "
                f"{len(rows)} ticks for {due_count} due of {args.rows} rows, busiest tick {busiest}")


# ---------------------------------------------------------------------------------- part 2


def lifecycle(bench: Bench, args: argparse.Namespace, tick_log: TickLog, mode: str, folder: int,
              max_interval: float) -> dict[int, dict[str, Any]]:
    """Upload one document per k, walk simulated time tick by tick until all are archived."""
    services = bench.reconfigure(fresh_names=True, POLL_FIRST_DELAY_SECONDS=str(args.first_delay),
                                 POLL_MAX_INTERVAL_SECONDS=str(max_interval))
    inqom = bench.inqom
    ledger = services.ledger
    start = datetime.now(timezone.utc).replace(microsecond=0)
    offset = [0.0]
    ledger.clock = lambda: start + timedelta(seconds=offset[0])  # the simulated clock of this run
    inbox = services.stores.container(services.settings.inbox_container)
    calls_before = len(inqom.requests)

    docs: dict[int, dict[str, Any]] = {}
    for k in args.ks:
        file_name = f"k{k:03d}-{mode}.pdf"
        blob_name = f"{folder}/supplier/{file_name}"
        inbox.upload_blob(blob_name, os.urandom(4096), overwrite=True)  # distinct bytes: never a Duplicate
        bench.host.deliver_blob("upload_document", blob_name)
        (entry,) = list(ledger.scan("BlobPath eq @p", p=blob_name))
        if entry.state != UPLOADED:
            raise FunctionalFailure(f"{blob_name} was not uploaded: {entry.state} {entry.get('LastError')}")
        inqom_id = int(entry.get("InqomId"))
        inqom.set_status(inqom_id, "Processing")
        docs[k] = {"file": file_name, "blob": blob_name, "id": inqom_id, "done": False, "archived_at": None}

    limit = (2 * max(args.ks) + 4) * args.first_delay  # backoff sees Done by (2^n - 1)·F < 2kF
    ticks = 0
    while offset[0] < limit and any(d["archived_at"] is None for d in docs.values()):
        offset[0] += args.tick_seconds
        for k, doc in docs.items():
            if not doc["done"] and offset[0] >= k * args.first_delay:
                inqom.set_status(doc["id"], "Done")
                doc["done"] = True
        report = fire_tick(bench, tick_log)
        ticks += 1
        if report.archived:
            for k, doc in docs.items():
                if doc["archived_at"] is None:
                    (entry,) = list(ledger.scan("BlobPath eq @p", p=doc["blob"]))
                    if entry.state == ARCHIVED:
                        doc["archived_at"] = offset[0]
                        doc["polls"] = int(entry.get("Polls") or 0)
    missing = [d["blob"] for d in docs.values() if d["archived_at"] is None]
    if missing:
        raise FunctionalFailure(f"{mode}: not archived after {limit:.0f} simulated seconds: {missing}")

    calls = inqom.requests[calls_before:]
    for k, doc in docs.items():
        doc_path = f"/Documents/{doc['id']}"
        mine = [c for c in calls
                if (c.files.get("Document") is not None and c.files["Document"].filename == doc["file"])
                or c.path.rstrip("/").endswith(doc_path) or c.path.rstrip("/").endswith(doc_path + "/public-url")
                or (c.path.startswith("/public/") and c.path.endswith("/" + quote(doc["file"], safe="")))]
        doc["calls"] = count_kinds(mine)
        doc["total"] = len(mine)
    doc_calls = sum(d["total"] for d in docs.values())
    shared_calls = count_kinds(calls)
    print(f"  {mode}: {ticks} ticks of {args.tick_seconds:g} simulated s, {len(calls)} Inqom calls "
          f"({doc_calls} attributed to documents, {shared_calls['token']} token)", flush=True)
    return docs


def part_lifecycle(bench: Bench, args: argparse.Namespace, tick_log: TickLog, goals: Goals) -> None:
    print(f"\npart 2: lifecycle, POLL_FIRST_DELAY_SECONDS=F={args.first_delay:g}, backoff cap "
          f"POLL_MAX_INTERVAL_SECONDS={args.max_interval:g}; baseline cap = F (fixed interval)", flush=True)
    backoff = lifecycle(bench, args, tick_log, "backoff", LIFECYCLE_FOLDER, args.max_interval)
    fixed = lifecycle(bench, args, tick_log, "fixed", BASELINE_FOLDER, args.first_delay)
    F = args.first_delay
    rows = []
    all_met = True
    for k in args.ks:
        b, f = backoff[k], fixed[k]
        bound = 4 + math.ceil(math.log2(k))
        met = b["total"] <= bound
        all_met &= met
        c = b["calls"]
        rows.append([k, c["upload"], c["get"], c["public-url"], c["download"], b["total"], bound,
                     "met" if met else "MISSED", f["total"], b["archived_at"] / F, f["archived_at"] / F])
    print()
    print("Inqom calls per document lifecycle (Inqom finishes the document k·F after upload):")
    table(["k", "upload", "GET doc", "public-url", "download", "calls (backoff)", "bound 4+⌈log2 k⌉", "goal",
           "calls (fixed-interval baseline)", "archived at /F (backoff)", "archived at /F (fixed)"], rows)
    goals.check("calls per document lifecycle ≤ 4 + ⌈log2 k⌉ (upload + GETs + public-url + download)", all_met,
                ", ".join(f"k={r[0]}: {r[5]}/{r[6]}" for r in rows))


# ---------------------------------------------------------------------------------- part 3


def month_end_rows(bench: Bench, count: int, folder: int) -> list[str]:
    """``count`` rows ``Uploaded`` and due now, each with its own emulator document, finished (``Done``)."""
    services = bench.services
    ledger, settings = services.ledger, services.settings

    def one(i: int) -> str:
        content = f"month-end {folder} {i} ".encode() + os.urandom(1024)
        document = services.inqom.upload_document(folder, type_scan="Supplier", open_file=lambda: io.BytesIO(content),
                                                  file_name=f"m{i}.pdf", source_id=f"bench-m{folder}-{i}")
        bench.inqom.set_status(document.id, "Done")
        key = f"m{folder}x{i:06d}"
        inbox_blob = services.stores.container(settings.inbox_container).upload_blob(f"{folder}/supplier/m{i}.pdf", content)
        ledger.insert(str(folder), key, {
            "Source": "bench", "Container": settings.inbox_container, "BlobPath": f"{folder}/supplier/m{i}.pdf",
            "BlobETag": inbox_blob.get_blob_properties().etag.strip('"'), "Size": len(content), "Kind": "supplier", "FolderId": folder, "State": UPLOADED,
            "InqomId": document.id, "Sha1": document.checksum, "UploadedAt": iso(ledger.clock()),
            "NextPollAt": ledger.clock() - timedelta(seconds=1), "Polls": 0,
        })
        return key

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def drain(bench: Bench, tick_log: "TickLog", keys: list[str], folder: int, seconds: float | None) -> dict[str, Any]:
    """Fire ticks back to back until every row is archived (or ``seconds`` pass); what it took."""
    services = bench.services
    calls_before = len(bench.inqom.requests)
    durations, cut, started = [], 0, time.perf_counter()
    while seconds is None or time.perf_counter() - started < seconds:
        tick_started = time.perf_counter()
        before = len(tick_log.reports)
        bench.host.fire_timer("poll_documents")
        durations.append(time.perf_counter() - tick_started)
        report = tick_log.reports[before]
        cut += report.cut_short
        print(f"    tick: {durations[-1]:.1f} s, examined {report.examined}, archived {report.archived}, "
              f"cut short {report.cut_short}, errors {len(report.errors)}", flush=True)
        if report.examined == 0:
            break
    elapsed = time.perf_counter() - started
    rows = [services.ledger.get(str(folder), key) for key in keys]
    archived = sum(1 for r in rows if r.state == ARCHIVED)
    now = services.ledger.clock()
    claimed = sum(1 for r in rows if r.state != ARCHIVED and (parse_iso(r.get("PollClaimUntil")) or now) > now)
    unindexed = sum(1 for r in rows if r.state != ARCHIVED and not services.ledger.has_index(r))
    api = [c for c in bench.inqom.requests[calls_before:] if "/api/" in c.path]
    return {"archived": archived, "seconds": elapsed, "durations": durations, "cut": cut, "claimed": claimed,
            "unindexed": unindexed, "api_calls": len(api), "per_doc": len(api) / max(archived, 1)}


def part_month_end(bench: Bench, args: argparse.Namespace, goals: Goals) -> None:
    tick_log = TickLog()
    grace = 10.0
    common = {"INQOM_MAX_REQUESTS_PER_SECOND": str(args.rate), "INQOM_RATE_LIMIT": str(args.rate),
              "POLL_TICK_BUDGET_SECONDS": str(args.tick_budget), "POLL_TICK_GRACE_SECONDS": str(grace),
              "POLL_BATCH_SIZE": "1000", "HTTP_READ_TIMEOUT_SECONDS": "120"}
    inqom = bench.inqom
    print(f"\npart 3: month-end, {args.month_end_docs} documents due at once; emulator latency "
          f"{args.latency * 1000:.0f} ms per call, {args.hang_share:.1%} of API calls hang; API budget {args.rate:g}/s; "
          f"tick budget {args.tick_budget:g} s + grace {grace:g} s", flush=True)

    results = {}
    for label, workers, seconds, folder, count in (
            ("baseline: sequential tick (POLL_WORKERS=1)", 1, args.baseline_seconds, 11401,
             max(50, int(args.baseline_seconds * 10))),
            ("concurrent tick (POLL_WORKERS=8)", 8, None, 11402, args.month_end_docs)):
        bench.reconfigure(fresh_names=True, POLL_WORKERS=str(workers), **common)
        inqom.latency, inqom.hang_rate = 0.0, 0.0
        started = time.perf_counter()
        keys = month_end_rows(bench, count, folder)
        print(f"  {label}: {count} rows set up in {time.perf_counter() - started:.0f} s; draining…", flush=True)
        inqom.latency, inqom.hang_rate = args.latency, args.hang_share
        results[label] = drain(bench, tick_log, keys, folder, seconds)
        results[label]["count"] = count
    inqom.latency, inqom.hang_rate = 0.0, 0.0

    rows = []
    for label, r in results.items():
        durations = r["durations"]
        rows.append([label, r["archived"], r["count"], r["seconds"], r["archived"] / r["seconds"], r["per_doc"],
                     max(durations), quantile(durations, 0.99), r["cut"], r["claimed"] + r["unindexed"]])
    table(["poller", "archived", "due", "wall s", "docs/s", "API calls/doc", "tick max s", "tick p99 s",
           "rows cut by the deadline", "lost or left claimed"], rows)
    concurrent = results["concurrent tick (POLL_WORKERS=8)"]
    bound = args.rate / concurrent["per_doc"]
    rate = concurrent["archived"] / concurrent["seconds"]
    print(f"bound the budget allows: {args.rate:g} calls/s ÷ {concurrent['per_doc']:.2f} API calls per document "
          f"= {bound:.1f} documents/s (the download goes to Inqom's storage, outside the budget)")
    goals.check("month-end throughput ≥ 85 % of the budget's bound", rate >= 0.85 * bound,
                f"{rate:.1f} documents/s = {rate / bound:.0%} of {bound:.1f}")
    goals.check("no tick longer than its budget plus the grace", max(concurrent["durations"]) <= args.tick_budget + grace,
                f"longest tick {max(concurrent['durations']):.1f} s for {args.tick_budget:g} + {grace:g} s")
    goals.check("0 rows lost or left claimed", concurrent["archived"] == concurrent["count"]
                and concurrent["claimed"] + concurrent["unindexed"] == 0,
                f"{concurrent['archived']} of {concurrent['count']} archived, {concurrent['claimed']} claimed, "
                f"{concurrent['unindexed']} without a due entry")


def main() -> None:
    args = parse_args()
    header("bench.poll: poll_documents over the ledger, against the Inqom emulator",
           rows=args.rows, due_share=args.due_share, ks=",".join(map(str, args.ks)), first_delay=args.first_delay,
           tick_seconds=args.tick_seconds, INQOM_MAX_REQUESTS_PER_SECOND=1000)
    goals = Goals()
    with bench_environment(inqom=True, inqom_options={"max_memory_part": 0},
                           INQOM_MAX_REQUESTS_PER_SECOND="1000") as bench:
        tick_log = TickLog()
        if not args.skip_ticks:
            part_ticks(bench, args, tick_log, goals)
        if not args.skip_lifecycle:
            part_lifecycle(bench, args, tick_log, goals)
        if not args.skip_month_end:
            part_month_end(bench, args, goals)


if __name__ == "__main__":
    run_main(main)
