"""Month-end at scale: P worker processes share one Inqom rate budget (issue 11).

    .venv/bin/python -m bench.scale [--processes 8] [--count 10000] [--folders 500] [--threads 4]
                                    [--phase-seconds 60] [--latency 0.05] [--skip-month-end] [--skip-uneven]

One Azurite and one Inqom emulator (in this process) that enforces Inqom's limit: 15 API requests/s
per credential, 429 with ``Retry-After`` above it; it records every call it answers or refuses.
``--processes`` worker processes (``python -m bench.scale --worker``), each its own interpreter as
Flex instances would be, drive the app's registered functions through ``devtools.host.LocalHost``:
``--threads`` blob deliveries at once each (host.json ``maxDegreeOfParallelism``), and in worker 0
the poll timer fired back to back (a timer runs on one instance at a time) inside
``priority("poll")``, as ``shared.archive.poll.poll_tick`` does once wired. A delivery that raises is
retried like the host would, up to host.json's ``poisonBlobThreshold`` (then it counts as poisoned).

Scenario 1, month-end: ``--count`` small drops over ``--folders`` folders are in the inbox at the
start; uploads and poll ticks run together until every document is archived (or quarantined).
``POLL_FIRST_DELAY_SECONDS=1`` and ``POLL_MAX_INTERVAL_SECONDS=2`` let the emulator's status flow
(Received → Processing → Done, one step per poll) finish a document a few seconds after upload.
Scenario 2, uneven: uploads only; worker 0 alone is busy for ``--phase-seconds``, then it goes idle
and the other P−1 are busy for as long.

Each scenario runs twice against the same emulator: the **baseline** is today's per-process throttle
(``RateLimiter`` at ``INQOM_MAX_REQUESTS_PER_SECOND`` = 10 in every process), then the **shared
budget** (``INQOM_RATE_LIMIT`` = 12 for the whole fleet, ``INQOM_POLL_SHARE`` = 0.3). Printed per
run: Inqom calls/s (budgeted calls: API + token; downloads go to Inqom's storage, outside the budget)
answered and refused, against the budget (utilisation) and Inqom's 15/s; 429s as a share of calls;
documents quarantined and poisoned; time to drain; Inqom calls per document; storage calls spent on
coordination per Inqom call (from each worker's ``InqomBudget.stats()``); throttled hand-backs.
Goals (shared budget): 0 documents quarantined or poisoned; 429s < 1 % of calls; utilisation ≥ 85 %
in both scenarios; coordination ≤ 0.1 storage calls per Inqom call.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._setup import Bench, FunctionalFailure, Goals, bench_environment, header, run_main, table

ROOT = Path(__file__).resolve().parents[1]
INQOM_LIMIT = 15.0  # what the emulator enforces per credential, as Inqom does
BUDGET = 12.0  # INQOM_RATE_LIMIT of the shared-budget runs (the default)
LOCAL_RATE = 10.0  # INQOM_MAX_REQUESTS_PER_SECOND: the baseline's per-process throttle (the default)
POISON_AFTER = 5  # host.json poisonBlobThreshold
FIRST_FOLDER = 200_001
COMMON = {
    "INQOM_RATE_LIMIT": str(BUDGET), "INQOM_POLL_SHARE": "0.3", "INQOM_MAX_REQUESTS_PER_SECOND": str(LOCAL_RATE),
    "HTTP_BACKOFF_CAP_SECONDS": "30", "HTTP_MAX_ATTEMPTS": "4", "HTTP_READ_TIMEOUT_SECONDS": "60",
    "POLL_FIRST_DELAY_SECONDS": "1", "POLL_MAX_INTERVAL_SECONDS": "2", "POLL_TICK_BUDGET_SECONDS": "30",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=8, help="worker processes (default 8)")
    parser.add_argument("--count", type=int, default=10_000, help="month-end drops (default 10000)")
    parser.add_argument("--folders", type=int, default=500, help="accounting folders they spread over (default 500)")
    parser.add_argument("--threads", type=int, default=4, help="blob deliveries at once per process (default 4)")
    parser.add_argument("--phase-seconds", type=float, default=60.0,
                        help="scenario 2: length of each phase, s (default 60)")
    parser.add_argument("--latency", type=float, default=0.05, help="emulator latency per call, s (default 0.05)")
    parser.add_argument("--drain-timeout", type=float, default=None,
                        help="give up on scenario 1 after this many seconds (default: 3 x the budget's minimum + 120)")
    parser.add_argument("--skip-month-end", action="store_true")
    parser.add_argument("--skip-uneven", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a worker's JSON job file
    args = parser.parse_args(argv)
    if args.processes < 2 or args.count < 1 or args.folders < 1 or args.threads < 1 or args.phase_seconds <= 2:
        parser.error("--processes >= 2, --count, --folders, --threads >= 1, --phase-seconds > 2")
    return args


# ================================================================================== worker side


def worker(job_path: str) -> None:
    """One instance: deliver its blobs (with host-like retries), run the timer if asked, report."""
    import logging

    job = json.loads(Path(job_path).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import function_app  # validates the settings, as the host does at start-up
    from devtools.host import LocalHost
    from shared.inqom.budget import priority
    from shared.http import RateLimiter
    from shared.services import get_services

    services = get_services()
    if job["mode"] == "baseline":
        services.inqom_budget = RateLimiter(services.settings.inqom_max_rps)  # today's throttle, per process
    host = LocalHost(function_app.app)
    names: list[str] = job["blobs"]
    lock = threading.Lock()
    stop = threading.Event()
    out: dict[str, Any] = {"delivered": 0, "failures": 0, "poisoned": [], "ticks": 0}
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    started = time.monotonic()
    busy_from, busy_until = job.get("busy", [0.0, None])

    def uploads() -> None:
        while not stop.is_set():
            if busy_until is not None and time.monotonic() - started >= busy_until:
                return
            wait = busy_from - (time.monotonic() - started)
            if wait > 0:
                stop.wait(wait)
                continue
            with lock:
                if not names:
                    return
                name = names.pop(0)
            for attempt in range(1, POISON_AFTER + 1):
                try:
                    host.deliver_blob("upload_document", name)
                    break
                except Exception:  # noqa: BLE001 — the host logs it and delivers the blob again
                    with lock:
                        out["failures"] += 1
                    if attempt == POISON_AFTER:
                        with lock:
                            out["poisoned"].append(name)
                    else:
                        stop.wait(min(2 ** attempt, 10))
            with lock:
                out["delivered"] += 1

    def timer() -> None:
        with priority("poll"):
            while not stop.is_set():
                before = time.monotonic()
                try:
                    host.fire_timer("poll_documents")
                except Exception:  # noqa: BLE001 — a failed tick: the next one runs anyway
                    logging.getLogger("bench.scale").exception("poll tick failed")
                out["ticks"] += 1
                stop.wait(max(0.0, 0.5 - (time.monotonic() - before)))

    threads = [threading.Thread(target=uploads, daemon=True) for _ in range(job["threads"])]
    if job.get("timer"):
        threads.append(threading.Thread(target=timer, daemon=True))
    for thread in threads:
        thread.start()
    sys.stdin.readline()  # "stop", or the end of input
    stop.set()
    for thread in threads:
        thread.join(60)
    budget = services.inqom_budget
    stats = budget.stats() if hasattr(budget, "stats") else None
    out["budget"] = {**stats.__dict__, "storage_calls": stats.storage_calls} if stats else None
    print(json.dumps(out), flush=True)


# ================================================================================== main side


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path
    result: dict[str, Any] | None = None

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else ""
        if line.strip() != "ready":
            self.process.kill()
            raise FunctionalFailure(f"a worker did not start: {line!r}; {self.log.read_text()[-2000:]}")

    def send(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def collect(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            out, _ = self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise FunctionalFailure(f"a worker did not stop; {self.log.read_text()[-2000:]}") from None
        lines = out.strip().splitlines()
        if not lines:
            raise FunctionalFailure(f"a worker ended without figures; {self.log.read_text()[-2000:]}")
        self.result = json.loads(lines[-1])
        return self.result


@dataclass
class Run:
    """One fleet run's figures."""

    label: str
    seconds: float
    documents: int
    budgeted: int = 0  # API + token calls made (answered + refused)
    refused: int = 0
    downloads: int = 0
    archived: int = 0
    quarantined: int = 0
    poisoned: int = 0
    throttled_handbacks: int = 0
    max_failed_attempts: int = 0
    storage_calls: int | None = None
    budget_calls: int = 0
    expired_slots: int = 0
    drained: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answered_rate(self) -> float:
        return (self.budgeted - self.refused) / self.seconds

    @property
    def utilisation(self) -> float:
        return self.answered_rate / BUDGET

    @property
    def refused_share(self) -> float:
        return self.refused / self.budgeted if self.budgeted else 0.0

    @property
    def coordination(self) -> float | None:
        return None if self.storage_calls is None else self.storage_calls / max(self.budget_calls, 1)


class Fleet:
    def __init__(self, bench: Bench, args: argparse.Namespace, workdir: Path) -> None:
        self.bench = bench
        self.args = args
        self.workdir = workdir

    def environment(self, mode: str) -> dict[str, str]:
        """Fresh containers and table for this run, the common settings, in the environment of this process too."""
        self.bench.reconfigure(fresh_names=True, **COMMON)
        return dict(os.environ)

    def spawn(self, mode: str, env: dict[str, str], jobs: list[dict[str, Any]]) -> list[Worker]:
        workers = []
        for index, job in enumerate(jobs):
            job_file = self.workdir / f"{mode}-{index}.json"
            job_file.write_text(json.dumps({"mode": mode, "threads": self.args.threads, **job}))
            log = self.workdir / f"{mode}-{index}.log"
            process = subprocess.Popen([sys.executable, "-m", "bench.scale", "--worker", str(job_file)], cwd=ROOT,
                                       env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=open(log, "wb"), text=True)
            workers.append(Worker(process, log))
        for worker_ in workers:
            worker_.wait_ready()
        return workers

    def drop(self, names: list[str]) -> None:
        services = self.bench.services
        inbox = services.stores.container(services.settings.inbox_container)

        def put(name: str) -> None:
            inbox.upload_blob(name, b"%PDF-1.4\n% " + name.encode() + b"\n" + os.urandom(512), overwrite=True)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, names))

    def names(self, count: int, prefix: str) -> list[str]:
        return [f"{FIRST_FOLDER + i % self.args.folders}/supplier/{prefix}-{i:05d}.pdf" for i in range(count)]

    def figures(self, label: str, workers: list[Worker], start: float, end: float, documents: int,
                drained: bool = True) -> Run:
        results = [w.result or {} for w in workers]
        timeline = [c for c in self.bench.inqom.timeline() if start <= c.at < end]
        budgeted = [c for c in timeline if not c.path.startswith("/public/")]
        run = Run(label, end - start, documents, drained=drained)
        run.budgeted = len(budgeted)
        run.refused = sum(1 for c in budgeted if c.status == 429)
        run.downloads = len(timeline) - len(budgeted)
        run.poisoned = sum(len(r.get("poisoned") or ()) for r in results)
        budgets = [r["budget"] for r in results if r.get("budget")]
        if budgets:
            run.storage_calls = sum(b["storage_calls"] for b in budgets)
            run.budget_calls = sum(b["calls"] for b in budgets)
            run.expired_slots = sum(b["slots_expired"] for b in budgets)
            for name in ("fallback_calls", "conflicts", "reads", "writes", "reservations", "slots_reserved",
                         "slots_borrowed", "throttled"):
                run.extra[name] = sum(b[name] for b in budgets)
        services = self.bench.services
        for row in services.ledger.scan():
            state = row.state
            run.archived += state == "Archived"
            run.quarantined += state == "Quarantined"
            run.throttled_handbacks += int(row.get("Throttled") or 0)
            failed = int(row.get("Attempts") or 0) - int(row.get("Throttled") or 0) - int(row.get("CutShort") or 0)
            run.max_failed_attempts = max(run.max_failed_attempts, failed)
        run.quarantined = max(run.quarantined, sum(1 for _ in services.stores.container(
            services.settings.quarantine_container).list_blobs()))
        return run

    # ----------------------------------------------------------------------------- scenario 1

    def month_end(self, mode: str) -> Run:
        args = self.args
        env = self.environment(mode)
        names = self.names(args.count, f"{mode}-m")
        t0 = time.perf_counter()
        self.drop(names)
        print(f"  [{mode}] {len(names)} drops in the inbox ({time.perf_counter() - t0:.1f} s); starting "
              f"{args.processes} processes", flush=True)
        jobs = [{"blobs": names[i::args.processes], "timer": i == 0} for i in range(args.processes)]
        workers = self.spawn(mode, env, jobs)
        services = self.bench.services
        archive = services.stores.container(services.settings.archive_container)
        quarantine = services.stores.container(services.settings.quarantine_container)
        limit = args.drain_timeout or (3 * args.count * 5 / BUDGET + 120)
        start = time.monotonic()
        for w in workers:
            w.send("go")
        done, last_report = 0, start
        drained = False
        while time.monotonic() - start < limit:
            time.sleep(1.0)
            done = sum(1 for _ in archive.list_blobs()) + sum(1 for _ in quarantine.list_blobs())
            if done >= args.count:
                drained = True
                break
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                print(f"  [{mode}] {done}/{args.count} archived or quarantined after "
                      f"{last_report - start:.0f} s", flush=True)
        end = time.monotonic()
        for w in workers:
            w.send("stop")
        for w in workers:
            w.collect()
        if not drained:
            print(f"  [{mode}] NOT DRAINED: {done}/{args.count} after {end - start:.0f} s", flush=True)
        return self.figures(f"month-end, {mode}", workers, start, end, args.count, drained)

    # ----------------------------------------------------------------------------- scenario 2

    def uneven(self, mode: str) -> tuple[Run, Run]:
        args = self.args
        env = self.environment(mode)
        phase = args.phase_seconds
        alone = self.names(int(phase * INQOM_LIMIT * 1.5), f"{mode}-a")
        many = [self.names(int(phase * LOCAL_RATE * 1.2), f"{mode}-b{i}") for i in range(1, args.processes)]
        self.drop(alone + [name for names in many for name in names])
        jobs = [{"blobs": alone, "busy": [0.0, phase]}] + [
            {"blobs": names, "busy": [phase, 2 * phase]} for names in many]
        workers = self.spawn(mode, env, jobs)
        start = time.monotonic()
        for w in workers:
            w.send("go")
        time.sleep(2 * phase + 0.5)
        for w in workers:
            w.send("stop")
        for w in workers:
            w.collect()
        first = self.figures(f"uneven 1 busy + {args.processes - 1} idle, {mode}", workers[:1], start + 1,
                             start + phase, 0)
        second = self.figures(f"uneven 1 idle + {args.processes - 1} busy, {mode}", workers[1:], start + phase + 1,
                              start + 2 * phase, 0)
        return first, second


def print_coordination(runs: list[Run]) -> None:
    for r in runs:
        if r.storage_calls is None:
            continue
        x = r.extra
        print(f"  {r.label}: {x['reservations']} batches of {x['slots_reserved'] / max(x['reservations'], 1):.1f} "
              f"slots on average ({x['slots_borrowed']} borrowed from the idle lane), {x['reads']} reads + "
              f"{x['writes']} writes ({x['conflicts']} lost to another process) for {r.budget_calls} calls; "
              f"{r.expired_slots} slots lapsed unused; {x['throttled']} waits handed back; "
              f"{x['fallback_calls']} calls on the local fallback rate", flush=True)


def print_runs(runs: list[Run], drain: bool) -> None:
    rows = []
    for r in runs:
        coordination = "-" if r.coordination is None else f"{r.coordination:.3f}"
        row = [r.label, r.seconds, r.budgeted, r.refused, r.answered_rate, f"{r.utilisation:.0%}",
               f"{r.answered_rate / INQOM_LIMIT:.0%}", f"{r.refused_share:.1%}", coordination]
        if drain:
            row += [r.archived, r.quarantined, r.poisoned, f"{r.budgeted / max(r.archived, 1):.2f}",
                    r.throttled_handbacks, r.max_failed_attempts]
        rows.append(row)
    heads = ["run", "seconds", "Inqom calls", "429", "answered/s", f"of budget {BUDGET:g}/s",
             f"of Inqom {INQOM_LIMIT:g}/s", "429 share", "storage/Inqom call"]
    if drain:
        heads += ["archived", "quarantined", "poisoned", "calls/doc", "throttled hand-backs", "max failed attempts"]
    table(heads, rows)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args.worker)
        return
    header("bench.scale: one Inqom budget for a fleet of worker processes", processes=args.processes,
           count=args.count, folders=args.folders, threads=args.threads, phase_seconds=args.phase_seconds,
           latency=args.latency, INQOM_RATE_LIMIT=BUDGET, INQOM_POLL_SHARE=0.3,
           INQOM_MAX_REQUESTS_PER_SECOND=LOCAL_RATE, emulator_limit=f"{INQOM_LIMIT:g}/s per credential")
    options = {"rate_limit": INQOM_LIMIT, "status_flow": ("Received", "Processing", "Done"), "max_memory_part": 0}
    with bench_environment(inqom=True, inqom_options=options, **COMMON) as bench:
        bench.inqom.latency = args.latency
        workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        fleet = Fleet(bench, args, workdir)
        goals = Goals()
        shared_runs: list[Run] = []
        if not args.skip_month_end:
            print(f"\nscenario 1, month-end: {args.count} drops over {args.folders} folders, uploads and poll "
                  f"ticks together until all are archived", flush=True)
            month = [fleet.month_end("baseline"), fleet.month_end("shared")]
            print()
            print_runs(month, drain=True)
            print_coordination(month)
            shared_runs.append(month[1])
            base, shared = month
            print(f"time to drain: baseline {base.seconds:.0f} s, shared budget {shared.seconds:.0f} s "
                  f"(the budget's floor: {shared.budgeted} calls / {BUDGET:g} per s = "
                  f"{shared.budgeted / BUDGET:.0f} s); downloads of temporary URLs (outside the budget): "
                  f"{shared.downloads}", flush=True)
            if not shared.drained:
                raise FunctionalFailure("the shared-budget month-end did not drain")
        if not args.skip_uneven:
            print(f"\nscenario 2, uneven: 1 process busy for {args.phase_seconds:g} s, then the other "
                  f"{args.processes - 1} (uploads only; first second of each phase left out)", flush=True)
            uneven = [*fleet.uneven("baseline"), *fleet.uneven("shared")]
            print()
            print_runs(uneven, drain=False)
            print_coordination(uneven)
            shared_runs += uneven[2:]
        print()
        if shared_runs:
            bad = sum(r.quarantined + r.poisoned for r in shared_runs)
            goals.check("0 documents quarantined or poisoned by throttling (shared budget)", bad == 0,
                        f"{bad} quarantined or poisoned; max failed attempts "
                        f"{max(r.max_failed_attempts for r in shared_runs)}")
            share = max(r.refused_share for r in shared_runs)
            goals.check("429s < 1 % of calls (shared budget)", share < 0.01,
                        ", ".join(f"{r.label}: {r.refused_share:.2%}" for r in shared_runs))
            low = min(r.utilisation for r in shared_runs)
            goals.check("utilisation >= 85 % of the budget in both scenarios (shared budget)", low >= 0.85,
                        ", ".join(f"{r.label}: {r.utilisation:.0%}" for r in shared_runs))
            worst = max(r.coordination or 0.0 for r in shared_runs)
            goals.check("coordination <= 0.1 storage calls per Inqom call (shared budget)", worst <= 0.1,
                        ", ".join(f"{r.label}: {r.coordination:.3f}" for r in shared_runs if r.coordination is not None))


if __name__ == "__main__":
    if "--worker" in sys.argv:
        main()
    else:
        run_main(main)
