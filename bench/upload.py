"""Upload throughput, per-document overhead and memory of the registered upload function.

    .venv/bin/python -m bench.upload [--count 200] [--size-mb 1] [--big-mb 200] [--concurrency 1]

Drops ``--count`` files of ``--size-mb`` MiB of random bytes, plus one ``--big-mb`` MiB file, into
the Azurite inbox and runs ``upload_document`` over each of them (``LocalHost.deliver_blob``, as
the host would on BlobCreated) against the in-process Inqom emulator. Baseline, in the same run
and against the same emulator endpoint: a plain ``requests`` loop POSTing the same bytes from a
local temporary file with requests-toolbelt's streaming ``MultipartEncoder`` and one bearer token
obtained beforehand. Baseline documents go to another accounting folder so that the emulator
treats both sets as new documents (not duplicates) and does the same work for each.

Prints documents/s of both, the function's per-document overhead over the baseline, the peak RSS
growth while the big file goes through each path, and the Inqom calls each path made (from the
emulator's recorded requests). The client throttle is raised to 1000 requests/s for the run
(``INQOM_MAX_REQUESTS_PER_SECOND``; the default of 10 would dominate the figures) and
``MAX_UPLOAD_BYTES`` is raised above the big file (the default 100 MiB would quarantine it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from requests_toolbelt.multipart.encoder import MultipartEncoder

from bench._setup import (
    INQOM_CREDENTIALS, MiB, Bench, FunctionalFailure, Goals, RssSampler, bench_environment, count_kinds, header,
    run_main, table,
)
from shared.ledger.rows import UPLOADED

FUNCTION_FOLDER = 11287
BASELINE_FOLDER = 11288
DOCUMENTS_PATH = "/api/accounting-documents/accounting-folders/{folder}/Documents/"
RSS_GOAL = 80 * MiB
OVERHEAD_GOAL = 0.10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.upload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="number of small files (default 200)")
    parser.add_argument("--size-mb", type=float, default=1.0, help="size of each small file in MiB (default 1)")
    parser.add_argument("--big-mb", type=float, default=200.0, help="size of the big file in MiB; 0 = none (default 200)")
    parser.add_argument("--concurrency", type=int, default=1, help="documents in flight at once, both paths (default 1)")
    args = parser.parse_args()
    if args.count < 1 or args.size_mb <= 0 or args.big_mb < 0 or args.concurrency < 1:
        parser.error("--count, --size-mb and --concurrency must be positive, --big-mb >= 0")
    return args


class Files:
    """The same bytes twice: as local temporary files (baseline) and as inbox blobs (function)."""

    def __init__(self, bench: Bench, workdir: Path) -> None:
        self.bench = bench
        self.workdir = workdir
        self.sha1: dict[str, str] = {}  # file name -> SHA-1 (upper hex)
        self.size: dict[str, int] = {}

    def blob_name(self, file_name: str) -> str:
        return f"{FUNCTION_FOLDER}/supplier/{file_name}"

    def local(self, file_name: str) -> Path:
        return self.workdir / file_name

    def make(self, file_name: str, size: int, chunk: int = 4 * MiB) -> None:
        """Write ``size`` random bytes to a local file and to the inbox, never holding more than ``chunk``."""
        hasher = hashlib.sha1()
        path = self.local(file_name)
        with open(path, "wb") as out:
            left = size
            while left:
                block = os.urandom(min(chunk, left))
                hasher.update(block)
                out.write(block)
                left -= len(block)
        inbox = self.bench.services.stores.container(self.bench.services.settings.inbox_container)
        with open(path, "rb") as source:
            inbox.upload_blob(self.blob_name(file_name), source, length=size, overwrite=True, max_concurrency=1)
        self.sha1[file_name] = hasher.hexdigest().upper()
        self.size[file_name] = size


class Baseline:
    """A plain requests + requests-toolbelt multipart POST loop with one token obtained up front."""

    def __init__(self, bench: Bench) -> None:
        assert bench.inqom is not None
        self.url = bench.inqom.base_url + DOCUMENTS_PATH.format(folder=BASELINE_FOLDER)
        form = {**INQOM_CREDENTIALS, "grant_type": "password", "scope": "openid apidata"}
        reply = requests.post(bench.inqom.token_url, data=form, timeout=(10, 120))
        reply.raise_for_status()
        self.authorization = f"Bearer {reply.json()['access_token']}"
        self._local = threading.local()

    def post(self, path: Path) -> dict:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        with open(path, "rb") as source:
            encoder = MultipartEncoder(fields={
                "TypeScan": "Supplier", "FileSource": "Api", "SourceId": f"baseline-{path.name}",
                "DocumentName": path.name, "Document": (path.name, source, "application/octet-stream"),
            })
            reply = session.post(self.url, data=encoder, timeout=(10, 120), headers={
                "Content-Type": encoder.content_type, "Authorization": self.authorization})
        if reply.status_code != 200:
            raise FunctionalFailure(f"baseline POST of {path.name} answered {reply.status_code}: {reply.text[:200]}")
        payload = reply.json()
        return payload[0] if isinstance(payload, list) else payload


def timed_map(function, items: list, concurrency: int) -> float:
    started = time.perf_counter()
    if concurrency == 1:
        for item in items:
            function(item)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            for _ in pool.map(function, items):
                pass
    return time.perf_counter() - started


def check_function_uploads(bench: Bench, files: Files, names: list[str], calls_before: int) -> None:
    """Every document reached Inqom with its exact bytes, and its ledger row says Uploaded."""
    received = {}
    for call in bench.inqom.requests[calls_before:]:
        part = call.files.get("Document")
        if call.status == 200 and part is not None:
            received[part.filename] = part.sha1_hex_upper
    rows = {row.get("BlobPath"): row for row in bench.services.ledger.scan()}
    for name in names:
        row = rows.get(files.blob_name(name))
        if row is None or row.state != UPLOADED or not row.get("InqomId"):
            raise FunctionalFailure(f"{name} was not uploaded (ledger: {row.state if row else 'no row'}, "
                                    f"{row.get('LastError') if row else ''})")
        if received.get(name) != files.sha1[name]:
            raise FunctionalFailure(f"{name}: Inqom received SHA-1 {received.get(name)}, expected {files.sha1[name]}")


def main() -> None:
    args = parse_args()
    small = int(args.size_mb * MiB)
    big = int(args.big_mb * MiB)
    header("bench.upload: inbox blob -> upload_document -> Inqom emulator",
           count=args.count, size=f"{small / MiB:g} MiB", big=f"{big / MiB:g} MiB", concurrency=args.concurrency,
           INQOM_MAX_REQUESTS_PER_SECOND=1000)
    overrides = {"INQOM_MAX_REQUESTS_PER_SECOND": "1000",
                 "MAX_UPLOAD_BYTES": str(max(big, small) + MiB)}
    # max_memory_part=0: the emulator keeps no copy of received bytes in memory (only on disk, hashed).
    with bench_environment(inqom=True, inqom_options={"max_memory_part": 0},
                           **overrides) as bench:
        workdir = Path(tempfile.mkdtemp(prefix="bench-upload-"))
        try:
            run(bench, args, small, big, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def run(bench: Bench, args: argparse.Namespace, small: int, big: int, workdir: Path) -> None:
    inqom = bench.inqom
    files = Files(bench, workdir)
    names = [f"doc-{i:04d}.pdf" for i in range(args.count)]
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: files.make(n, small), names + ["warmup.pdf"]))
    if big:
        files.make("big.pdf", big)
    print(f"set-up: {args.count} x {small / MiB:g} MiB + {big / MiB:g} MiB written to Azurite and to local "
          f"files in {time.perf_counter() - started:.1f} s", flush=True)

    def deliver(name: str) -> None:
        bench.host.deliver_blob("upload_document", files.blob_name(name))

    # Warm-up, not timed: one document through each path (connections, lazy imports, the token).
    calls_start = len(inqom.requests)
    deliver("warmup.pdf")
    function_calls = inqom.requests[calls_start:]
    baseline = Baseline(bench)
    baseline.post(files.local("warmup.pdf"))
    baseline_calls = inqom.requests[calls_start + len(function_calls):]

    # Small files: baseline, then the function, same files, same concurrency.
    mark = len(inqom.requests)
    baseline_seconds = timed_map(lambda n: baseline.post(files.local(n)), names, args.concurrency)
    baseline_calls += inqom.requests[mark:]
    mark = len(inqom.requests)
    function_seconds = timed_map(deliver, names, args.concurrency)
    function_calls += inqom.requests[mark:]
    check_function_uploads(bench, files, names, mark)

    # The big file: memory of each path (both sample this process, which also runs the emulator).
    big_rows = []
    big_function = None
    if big:
        mark = len(inqom.requests)
        with RssSampler() as base_rss:
            t0 = time.perf_counter()
            baseline.post(files.local("big.pdf"))
            base_big_seconds = time.perf_counter() - t0
        baseline_calls += inqom.requests[mark:]
        mark = len(inqom.requests)
        with RssSampler() as big_function:
            t0 = time.perf_counter()
            deliver("big.pdf")
            function_big_seconds = time.perf_counter() - t0
        function_calls += inqom.requests[mark:]
        check_function_uploads(bench, files, ["big.pdf"], mark)
        for label, seconds, rss in (("baseline (requests + toolbelt, local file)", base_big_seconds, base_rss),
                                    ("function (upload_document, Azurite blob)", function_big_seconds, big_function)):
            big_rows.append([label, seconds, big / MiB / seconds, rss.growth / MiB,
                             rss.hwm_growth / MiB if rss.hwm_growth is not None else "n/a"])

    # ------------------------------------------------------------------------- report
    n = args.count
    base_ms = baseline_seconds / n * 1000
    func_ms = function_seconds / n * 1000
    overhead = (func_ms - base_ms) / base_ms
    print()
    print(f"{n} documents of {small / MiB:g} MiB, concurrency {args.concurrency} "
          f"(warm-up of 1 document per path not timed):")
    table(["path", "docs", "wall s", "docs/s", "ms/doc", "MiB/s"], [
        ["baseline (requests + toolbelt, local file)", n, baseline_seconds, n / baseline_seconds, base_ms,
         n * small / MiB / baseline_seconds],
        ["function (upload_document, Azurite blob)", n, function_seconds, n / function_seconds, func_ms,
         n * small / MiB / function_seconds],
    ])
    print(f"function overhead per document: {func_ms - base_ms:+.2f} ms ({overhead:+.1%} over the baseline)")
    if big_rows:
        print()
        print(f"one file of {big / MiB:g} MiB (RSS of this process, which also runs the emulator; "
              "sampled every 2 ms and the kernel's VmHWM high-water mark):")
        table(["path", "wall s", "MiB/s", "peak RSS growth MiB (sampled)", "peak RSS growth MiB (VmHWM)"], big_rows)
    print()
    print("Inqom calls (emulator's recorded requests, warm-up included):")
    fc, bc = count_kinds(function_calls), count_kinds(baseline_calls)
    table(["path", "token", "upload POST", "other", "total"], [
        ["function", fc["token"], fc["upload"], sum(fc.values()) - fc["token"] - fc["upload"], len(function_calls)],
        ["baseline", bc["token"], bc["upload"], sum(bc.values()) - bc["token"] - bc["upload"], len(baseline_calls)],
    ])
    expected_uploads = n + 1 + (1 if big else 0)
    if fc["upload"] != expected_uploads:
        raise FunctionalFailure(f"the function made {fc['upload']} upload calls for {expected_uploads} documents")
    print()
    goals = Goals()
    if big_function is not None:
        growth = max(big_function.growth, big_function.hwm_growth or 0)
        goals.check(f"peak RSS growth < {RSS_GOAL // MiB} MiB for the {big / MiB:g} MiB file", growth < RSS_GOAL,
                    f"{growth / MiB:.1f} MiB")
    if args.concurrency == 1:
        goals.check(f"per-document overhead <= {OVERHEAD_GOAL:.0%} at concurrency 1", overhead <= OVERHEAD_GOAL,
                    f"{overhead:+.1%} ({func_ms:.2f} vs {base_ms:.2f} ms/doc)")
    else:
        print(f"(the overhead goal applies at concurrency 1; this run used {args.concurrency})")
    goals.check("exactly one token call for the whole function run", fc["token"] == 1, f"{fc['token']} token call(s)")


if __name__ == "__main__":
    run_main(main)
