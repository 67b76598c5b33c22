"""Cost of reading e-invoices at the door: ``read_einvoice_blob`` per document, its memory, and the upload's
overhead with the reader on against off, on Azurite and the Inqom emulator.

    .venv/bin/python -m bench.einvoice [--count 100] [--big-count 5] [--big-mb 100] [--upload-count 100]

Documents, each uploaded once to a container of its own in Azurite: a Factur-X PDF of 1 MiB and one of
5 MiB (made by the factur-x library, the base PDF padded with an incompressible image), a UBL invoice,
and a ``--big-mb`` MiB PDF that is not Factur-X, read with the default cap of 20 MiB (it must not be
read at all) and with the cap raised above it (it is downloaded and parsed, and must not be held in
memory). Each is read ``--count`` times (``--big-count`` for the big one), interleaved with the
baseline, measured in the same run: the plain streaming read of the same blob the upload makes
(``shared.storage.BlobRangeReader`` read to the end); the reader is also shown relative to it. What the
reader adds to an upload is measured by the upload phase below. "parse" is ``read_einvoice`` over the
same bytes already spooled as the door spools them (no storage), for scale.

Peak RSS growth is measured per case in a fresh subprocess (``--probe``), for the reader and for the plain
read: two untimed reads (imports, connection pool, allocator), then one read between a reset of the
kernel's ``VmHWM`` and its reading (``bench._setup.RssSampler``).

Upload phase: the drop function's own entry point, ``shared.drop.upload.upload_inbox_blob``, over a blob in
the Azurite inbox (a fresh ``BlobClient`` from the connection string, as the trigger's binding hands over),
sending to the in-process Inqom emulator, ``--upload-count`` times per document kind (UBL, Factur-X 1 MiB
and 5 MiB), once with the reader on (default settings) and once with it off, interleaved (the order
alternates). Off is ``EINVOICE_MAX_PARSE_BYTES=1``, the smallest legal value (no setting switches the
reader off; with it every file is sent unread, not a byte of it read, the reason on its row). Each
document is a new blob with a new invoice number (``B-000001`` …) and new bytes, so neither business-duplicate
detection (``BUSINESS_DUPLICATES`` stays ``hold``) nor the emulator's checksum duplicates see a repeat. Every
outcome is checked: state Uploaded, and the row's ``EInvoiceFormat`` and number (reader on) or ``none``
(off). The timed call is the whole function: ledger claim, door (read + business-key claim when on), the
streaming POST to Inqom, the row's update; the blob's upload before and its deletion after are not timed.

Goals: reader p50 and p99 < 20 ms per document below 5 MiB; upload overhead (reader on − off, p50 and p99)
< 20 ms per document below 5 MiB; the reader's peak RSS growth at most the plain read's + 8 MiB for every
document, and for the big PDF (cap raised) at most the 5 MiB Factur-X's + 8 MiB (constant in file size:
memory is bounded by one ranged read, not by the file).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from azure.storage.blob import BlobClient

from bench._setup import MiB, FunctionalFailure, Goals, RssSampler, bench_environment, header, quantile, run_main, table
from shared.einvoice import (
    DEFAULT_MAX_BYTES, FACTUR_X, SPOOL_IN_MEMORY, UBL, EInvoiceError, NotAnEInvoice, read_einvoice, read_einvoice_blob,
)
from shared.config import load_settings
from shared.drop.upload import upload_inbox_blob
from shared.ledger.rows import UPLOADED, partition_for
from shared.services import Services
from shared.storage import READ_CHUNK, TIMEOUTS, BlobRangeReader
from tests.support.einvoices import Terms, blank_pdf, cii_invoice, factur_x_pdf, ubl_invoice

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
    parser.add_argument("--upload-count", type=int, default=100,
                        help="uploads of each document kind with the reader on, and as many off (default 100)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # JSON: measure one read's peak RSS in this process
    args = parser.parse_args()
    if args.count < 1 or args.big_count < 1 or args.upload_count < 1 or args.big_mb < 21:
        parser.error("--count, --big-count and --upload-count must be positive, --big-mb above the 20 MiB cap")
    return args


def factur_x_of(size: int, number: str = "F-2026-0042") -> bytes:
    """A Factur-X PDF of about ``size`` bytes, invoice ``number``."""
    terms = replace(Terms(), number=number)
    small = factur_x_pdf(cii_invoice(terms))
    return factur_x_pdf(cii_invoice(terms), padding=size - len(small) - 200)


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


@dataclass
class UploadKind:
    label: str
    make: Callable[[str], bytes]  # invoice number -> the document's bytes (new bytes each call)
    extension: str
    fmt: str
    small: bool  # below 5 MiB: the overhead goal applies


def upload_kinds() -> list[UploadKind]:
    return [
        UploadKind("UBL invoice", lambda n: ubl_invoice(replace(Terms(), number=n)), "xml", UBL, True),
        UploadKind("Factur-X 1 MiB", lambda n: factur_x_of(MiB, n), "pdf", FACTUR_X, True),
        UploadKind("Factur-X 5 MiB", lambda n: factur_x_of(5 * MiB, n), "pdf", FACTUR_X, False),
    ]


def measure_uploads(bench: Any, count: int) -> tuple[list[list[Any]], dict[str, tuple[list[float], list[float]]]]:
    """``upload_inbox_blob`` of new inbox blobs, reader on and off interleaved: table rows and (on, off) times (ms)."""
    reader_on = bench.services
    reader_off = Services(load_settings({**os.environ, "EINVOICE_MAX_PARSE_BYTES": "1"}))
    connection = bench.env["DocumentStorage"]
    inbox_name = reader_on.settings.inbox_container
    inbox = reader_on.stores.container(inbox_name)
    serial = itertools.count(1)

    def once(kind: UploadKind, on: bool) -> float:
        number = f"B-{next(serial):06d}"
        name = f"11287/supplier/{number}.{kind.extension}"
        inbox.upload_blob(name, kind.make(number), overwrite=True)
        client = BlobClient.from_connection_string(connection, inbox_name, name)  # as the trigger's binding
        try:
            started = time.perf_counter()
            outcome = upload_inbox_blob(reader_on if on else reader_off, client)
            ms = (time.perf_counter() - started) * 1000
            row = reader_on.ledger.get(partition_for(name), outcome.key)
            columns = (row.get("EInvoiceFormat"), row.get("EInvoiceNumber")) if row else None
            if outcome.state != UPLOADED or columns != ((kind.fmt, number) if on else ("none", None)):
                raise FunctionalFailure(f"{kind.label} upload (reader {'on' if on else 'off'}) of {name}: "
                                        f"{outcome}, row columns {columns}")
        finally:
            inbox.delete_blob(name)  # Azurite keeps blobs in memory
        return ms

    kinds = upload_kinds()
    for kind in kinds:  # warm-up, not timed: connections, token of each Services, lazy imports
        once(kind, True)
        once(kind, False)
    times: dict[str, tuple[list[float], list[float]]] = {k.label: ([], []) for k in kinds}
    for i in range(count):
        for kind in kinds:
            on_ms, off_ms = times[kind.label]
            for on in ((True, False) if i % 2 == 0 else (False, True)):
                (on_ms if on else off_ms).append(once(kind, on))
    rows = []
    for kind in kinds:
        on_ms, off_ms = times[kind.label]
        q = {(path, name): quantile(values, level) for path, values in (("on", on_ms), ("off", off_ms))
             for name, level in (("p50", 0.5), ("p99", 0.99))}
        rows.append([kind.label, count, q["on", "p50"], q["on", "p99"], q["off", "p50"], q["off", "p99"],
                     q["on", "p50"] - q["off", "p50"], q["on", "p99"] - q["off", "p99"]])
    return rows, times


def main() -> None:
    args = parse_args()
    if args.probe:
        probe(json.loads(args.probe))
        return
    header("bench.einvoice: read_einvoice_blob per document on Azurite, and the upload with the reader on/off",
           count=args.count, big_count=args.big_count, big_mb=args.big_mb, upload_count=args.upload_count)
    load_at_start = os.getloadavg()[0]
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
    # max_memory_part=0: the emulator keeps no copy of received bytes in memory (only on disk, hashed).
    with bench_environment(inqom=True, inqom_options={"max_memory_part": 0}) as bench:
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
        upload_rows, uploads = measure_uploads(bench, args.upload_count)
    print()
    print("read_einvoice_blob per document, ms, against the plain streaming read of the same blob (the upload's "
          "own read); reader / plain read at p50:")
    table(["document", "MiB", "n", "reader p50", "reader p99", "plain read p50", "plain read p99", "parse p50",
           "reader/plain"], rows)
    print()
    print("peak RSS growth of one read, MiB (each in a fresh process, after two untimed reads):")
    table(["document", "MiB", "reader", "plain read", "reader - plain"],
          [[c.label, f"{len(c.data) / MiB:.2f}", r / MiB, p / MiB, (r - p) / MiB] for c, (r, p) in zip(cases, memory)])
    print()
    print("upload_inbox_blob per document (Azurite inbox -> Inqom emulator), ms, reader on (default settings) and "
          "off (EINVOICE_MAX_PARSE_BYTES=1), interleaved; overhead = on - off at each quantile:")
    table(["document", "n", "on p50", "on p99", "off p50", "off p99", "overhead p50", "overhead p99"], upload_rows)
    print()
    print(f"load average (1 min): {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, on "
          f"{os.cpu_count()} CPU(s); above the CPU count other processes share the machine and the p99 figures "
          "are theirs as much as the bench's")
    print()
    goals = Goals()
    for case in (c for c in cases if c.small):
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            ms = quantile(figures[case.label], q)
            goals.check(f"reader {name} < {GOAL_MS:g} ms, {case.label}", ms < GOAL_MS, f"{name} {ms:.2f} ms")
    for kind in (k for k in upload_kinds() if k.small):
        on_ms, off_ms = uploads[kind.label]
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            on, off = quantile(on_ms, q), quantile(off_ms, q)
            goals.check(f"upload overhead (reader on - off) {name} < {GOAL_MS:g} ms, {kind.label}",
                        on - off < GOAL_MS, f"{name} {on - off:+.2f} ms ({on:.2f} vs {off:.2f} ms)")
    worst, (reader, plain) = max(zip(cases, memory), key=lambda m: m[1][0] - m[1][1])
    goals.check(f"reader's peak RSS growth <= plain read's + {RSS_MARGIN // MiB} MiB, every size",
                all(r <= p + RSS_MARGIN for r, p in memory),
                f"worst {worst.label}: reader {reader / MiB:.1f} MiB, plain read {plain / MiB:.1f} MiB")
    five, big = memory[2][0], memory[4][0]
    goals.check(f"reader's peak RSS growth constant in file size: {cases[4].label} <= {cases[2].label} + "
                f"{RSS_MARGIN // MiB} MiB", big <= five + RSS_MARGIN, f"{big / MiB:.1f} MiB vs {five / MiB:.1f} MiB")


if __name__ == "__main__":
    run_main(main)
