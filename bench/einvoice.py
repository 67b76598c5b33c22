"""Cost of reading e-invoices at the door: ``read_einvoice_blob`` per document, and its memory, on Azurite.

    .venv/bin/python -m bench.einvoice [--count 100] [--big-count 5] [--big-mb 100]

Documents, each uploaded once to a container of its own in Azurite: a Factur-X PDF of 1 MiB and one of
5 MiB (made by the factur-x library, the base PDF padded with an incompressible image), a UBL invoice,
and a ``--big-mb`` MiB PDF that is not Factur-X, read with the default cap of 20 MiB (it must not be
read at all) and with the cap raised above it (it is downloaded and parsed, and must not be held in
memory). Each is read ``--count`` times (``--big-count`` for the big one), interleaved with the
baseline, measured in the same run: the plain streaming read of the same blob the upload already
makes (``shared.storage.BlobRangeReader`` read to the end). Without the door the upload costs nothing
more, so the door's extra cost per document is the reader's own time; it is also shown relative to the
plain read. "parse" is ``read_einvoice`` over the same bytes already spooled as the door spools them (no
storage), for scale.

Peak RSS growth is measured per case in a fresh subprocess (``--probe``), for the reader and for the plain
read: two untimed reads (imports, connection pool, allocator), then one read between a reset of the
kernel's ``VmHWM`` and its reading (``bench._setup.RssSampler``).
Goals: reader p50 and p99 < 20 ms per document below 5 MiB; the reader's peak RSS growth at most the plain
read's + 8 MiB for every document, and for the big PDF (cap raised) at most the 5 MiB Factur-X's + 8 MiB
(constant in file size: memory is bounded by one ranged read, not by the file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from azure.storage.blob import BlobClient

from bench._setup import MiB, FunctionalFailure, Goals, RssSampler, bench_environment, header, quantile, run_main, table
from shared.einvoice import (
    DEFAULT_MAX_BYTES, FACTUR_X, SPOOL_IN_MEMORY, UBL, EInvoiceError, NotAnEInvoice, read_einvoice, read_einvoice_blob,
)
from shared.storage import READ_CHUNK, TIMEOUTS, BlobRangeReader
from tests.support.einvoices import blank_pdf, cii_invoice, factur_x_pdf, ubl_invoice

ROOT = Path(__file__).resolve().parents[1]
GOAL_MS = 20.0
RSS_MARGIN = 8 * MiB
MAX_SECONDS = 60.0


@dataclass
class Case:
    label: str
    data: bytes
    cap: int
    expect: Callable[[Any], bool]  # the reader's outcome, an EInvoice or the EInvoiceError raised
    count: int
    small: bool  # below 5 MiB: the latency goal applies
    blob: BlobClient | None = None
    etag: str = ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.einvoice", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="reads of each document below 100 MiB (default 100)")
    parser.add_argument("--big-count", type=int, default=5, help="reads of the big PDF per cap (default 5)")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the PDF that is not Factur-X (default 100)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # JSON: measure one read's peak RSS in this process
    args = parser.parse_args()
    if args.count < 1 or args.big_count < 1 or args.big_mb < 21:
        parser.error("--count and --big-count must be positive, --big-mb above the 20 MiB cap")
    return args


def factur_x_of(size: int) -> bytes:
    """A Factur-X PDF of about ``size`` bytes."""
    small = factur_x_pdf(cii_invoice())
    return factur_x_pdf(cii_invoice(), padding=size - len(small) - 200)


def is_invoice(fmt: str) -> Callable[[Any], bool]:
    return lambda outcome: getattr(outcome, "format", None) == fmt and outcome.invoice_number == "F-2026-0042"


def read_outcome(case: Case) -> Any:
    assert case.blob is not None
    try:
        return read_einvoice_blob(case.blob, size=len(case.data), etag=case.etag, max_bytes=case.cap,
                                  max_seconds=MAX_SECONDS)
    except EInvoiceError as exc:
        return exc


def plain_read(blob: BlobClient, size: int, etag: str) -> None:
    reader = BlobRangeReader(blob, size, etag)
    while reader.read(READ_CHUNK):
        pass


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def probe(spec: dict[str, Any]) -> None:
    """Subprocess: peak RSS growth of one read (``reader`` or ``plain``) of a blob, as JSON on stdout."""
    blob = BlobClient.from_connection_string(spec["connection"], spec["container"], spec["blob"], **TIMEOUTS)

    def once() -> None:
        if spec["path"] == "plain":
            plain_read(blob, spec["size"], spec["etag"])
            return
        try:
            read_einvoice_blob(blob, size=spec["size"], etag=spec["etag"], max_bytes=spec["cap"],
                               max_seconds=MAX_SECONDS)
        except EInvoiceError:
            pass

    once()
    once()
    with RssSampler() as rss:
        once()
    print(json.dumps({"growth": max(rss.growth, rss.hwm_growth or 0)}))


def rss_growth(connection: str, container: str, case: Case, path: str) -> int:
    assert case.blob is not None
    spec = {"connection": connection, "container": container, "blob": case.blob.blob_name, "size": len(case.data),
            "etag": case.etag, "cap": case.cap, "path": path}
    result = subprocess.run([sys.executable, "-m", "bench.einvoice", "--probe", json.dumps(spec)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise FunctionalFailure(f"RSS probe of {case.label} ({path}) failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["growth"]


def measure(case: Case) -> tuple[list[Any], list[float]]:
    """The case's table row and the reader's times (ms), every outcome checked."""
    assert case.blob is not None
    blob, size, etag = case.blob, len(case.data), case.etag

    def checked() -> None:
        outcome = read_outcome(case)
        if not case.expect(outcome):
            raise FunctionalFailure(f"{case.label}: unexpected outcome {outcome!r}")

    def parse_only() -> None:
        spool.seek(0)
        try:
            read_einvoice(spool, max_bytes=case.cap)  # type: ignore[arg-type]
        except EInvoiceError:
            pass

    checked()  # warm-up
    plain_read(blob, size, etag)
    reader_ms, plain_ms, parse_ms = [], [], []
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        spool.write(case.data)
        for _ in range(case.count):
            plain_ms.append(timed(lambda: plain_read(blob, size, etag)))
            reader_ms.append(timed(checked))
            if case.cap >= size:
                parse_ms.append(timed(parse_only))
    reader_p50, plain_p50 = quantile(reader_ms, 0.5), quantile(plain_ms, 0.5)
    return [case.label, f"{size / MiB:.2f}", case.count, reader_p50, quantile(reader_ms, 0.99), plain_p50,
            quantile(plain_ms, 0.99), quantile(parse_ms, 0.5) if parse_ms else "-",
            f"{100 * reader_p50 / plain_p50:.0f} %"], reader_ms


def main() -> None:
    args = parse_args()
    if args.probe:
        probe(json.loads(args.probe))
        return
    header("bench.einvoice: read_einvoice_blob per document on Azurite", count=args.count,
           big_count=args.big_count, big_mb=args.big_mb)
    big = blank_pdf(padding=args.big_mb * MiB)
    cases = [
        Case("UBL invoice", ubl_invoice(), DEFAULT_MAX_BYTES, is_invoice(UBL), args.count, True),
        Case("Factur-X 1 MiB", factur_x_of(MiB), DEFAULT_MAX_BYTES, is_invoice(FACTUR_X), args.count, True),
        Case("Factur-X 5 MiB", factur_x_of(5 * MiB), DEFAULT_MAX_BYTES, is_invoice(FACTUR_X), args.count, False),
        Case(f"plain PDF {args.big_mb} MiB, cap 20 MiB", big, DEFAULT_MAX_BYTES,
             lambda o: isinstance(o, EInvoiceError) and "larger than" in str(o), args.big_count, False),
        Case(f"plain PDF {args.big_mb} MiB, cap {args.big_mb + 28} MiB", big, (args.big_mb + 28) * MiB,
             lambda o: isinstance(o, NotAnEInvoice), args.big_count, False),
    ]
    with bench_environment(inqom=False) as bench:
        connection = bench.env["DocumentStorage"]
        container_name = f"bench-einvoice-{uuid.uuid4().hex[:8]}"
        container = bench.services.stores.container(container_name)
        container.create_container()
        rows, figures, memory = [], {}, []
        try:
            for number, case in enumerate(cases):  # one blob at a time: Azurite keeps blobs in memory
                name = f"11287/supplier/{number}.{'xml' if case.data.startswith(b'<') else 'pdf'}"
                case.blob = container.upload_blob(name, case.data, overwrite=True)
                case.etag = case.blob.get_blob_properties().etag
                row, figures[case.label] = measure(case)
                rows.append(row)
                memory.append([rss_growth(connection, container_name, case, path) for path in ("reader", "plain")])
                case.blob.delete_blob()
        finally:
            container.delete_container()
    print()
    print("ms per document; door's extra cost = reader (the upload reads the blob anyway: without the door "
          "it costs nothing more); reader / plain read at p50:")
    table(["document", "MiB", "n", "reader p50", "reader p99", "plain read p50", "plain read p99", "parse p50",
           "reader/plain"], rows)
    print()
    print("peak RSS growth of one read, MiB (each in a fresh process, after two untimed reads):")
    table(["document", "MiB", "reader", "plain read", "reader - plain"],
          [[c.label, f"{len(c.data) / MiB:.2f}", r / MiB, p / MiB, (r - p) / MiB] for c, (r, p) in zip(cases, memory)])
    print()
    goals = Goals()
    for case in (c for c in cases if c.small):
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            ms = quantile(figures[case.label], q)
            goals.check(f"reader {name} < {GOAL_MS:g} ms, {case.label}", ms < GOAL_MS, f"{name} {ms:.2f} ms")
    worst, (reader, plain) = max(zip(cases, memory), key=lambda m: m[1][0] - m[1][1])
    goals.check(f"reader's peak RSS growth <= plain read's + {RSS_MARGIN // MiB} MiB, every size",
                all(r <= p + RSS_MARGIN for r, p in memory),
                f"worst {worst.label}: reader {reader / MiB:.1f} MiB, plain read {plain / MiB:.1f} MiB")
    five, big = memory[2][0], memory[4][0]
    goals.check(f"reader's peak RSS growth constant in file size: {cases[4].label} <= {cases[2].label} + "
                f"{RSS_MARGIN // MiB} MiB", big <= five + RSS_MARGIN, f"{big / MiB:.1f} MiB vs {five / MiB:.1f} MiB")


if __name__ == "__main__":
    run_main(main)
