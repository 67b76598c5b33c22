"""Shared set-up of the benchmarks: Azurite + emulators, app settings, the LocalHost, and measuring aids.

    with bench_environment(inqom=True, INQOM_MAX_REQUESTS_PER_SECOND="1000") as bench:
        bench.host.deliver_blob("upload_document", "11287/supplier/a.pdf")
        bench.inqom.calls()                    # what the app sent to the Inqom emulator
        services = bench.reconfigure(LEDGER_TABLE="other")   # fresh settings + services

Everything runs on loopback: Azurite (from node_modules, on free ports, in a temporary directory)
and the in-process emulators from ``tests/``. Settings reach the app the way they do in the tests:
environment variables, then ``get_settings.cache_clear(); get_services.cache_clear()``. The
environment is restored and every process and temporary directory removed on exit (also on
Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from shared.config import get_settings
from shared.services import Services, get_services
from tests.emulators.inqom import InqomEmulator, RecordedRequest
from tests.support.appsettings import ENFACT_COMPANY, INQOM_CREDENTIALS, WEBHOOK_SECRET, app_settings  # noqa: F401
from tests.support.azurite import Azurite

MiB = 1024 * 1024


# --------------------------------------------------------------------------- environment


@dataclass
class Bench:
    azurite: Azurite
    inqom: InqomEmulator | None
    env: dict[str, str]
    host: Any = None  # devtools.host.LocalHost over function_app.app

    @property
    def services(self) -> Services:
        return get_services()

    def reconfigure(self, fresh_names: bool = False, **overrides: str) -> Services:
        """Apply changed settings the way tests do; ``fresh_names`` gives new containers/table/queue."""
        if fresh_names:
            fresh = app_settings(self.azurite, self.inqom)
            for name in ("INBOX_CONTAINER", "ARCHIVE_CONTAINER", "QUARANTINE_CONTAINER", "LEDGER_TABLE", "ENFACT_QUEUE"):
                self.env[name] = fresh[name]
        self.env.update(overrides)
        os.environ.update(self.env)
        get_settings.cache_clear()
        get_services.cache_clear()
        get_services().ensure_storage()
        return get_services()


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_environment(inqom: bool = True, inqom_options: dict[str, Any] | None = None, **overrides: str) -> Iterator[Bench]:
    """Start Azurite (+ the Inqom emulator), point the app at them, build the LocalHost; clean up after."""
    previous_handler = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    saved_environ = dict(os.environ)
    quiet_logging()
    with contextlib.ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, previous_handler)
        started = time.perf_counter()
        azurite = stack.enter_context(Azurite.start())
        emulator = None
        if inqom:
            emulator = stack.enter_context(InqomEmulator(**INQOM_CREDENTIALS, **(inqom_options or {})))
        bench = Bench(azurite, emulator, app_settings(azurite, emulator, **overrides))
        try:
            bench.reconfigure()
            import function_app  # validates the settings at import, as the host does at start-up
            from devtools.host import LocalHost

            bench.host = LocalHost(function_app.app)
            print(f"environment ready in {time.perf_counter() - started:.1f} s "
                  f"(Azurite {azurite.blob_port}/{azurite.queue_port}/{azurite.table_port}"
                  + (f", Inqom emulator {emulator.base_url}" if emulator else "")
                  + ")", flush=True)
            yield bench
        finally:
            os.environ.clear()
            os.environ.update(saved_environ)
            get_settings.cache_clear()
            get_services.cache_clear()


def quiet_logging() -> None:
    """The app logs every document at INFO; a bench prints its own table, so only warnings show."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "urllib3", "tests.emulators"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ------------------------------------------------------------------------------ printing


def machine_description() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as info:
            memory = f", {int(info.readline().split()[1]) / MiB:.1f} GiB RAM"
    return (f"machine: {os.cpu_count()} CPU(s) ({len(os.sched_getaffinity(0))} usable), {model}{memory}; "
            f"Python {platform.python_version()} on {platform.system()} {platform.release()}")


def header(title: str, **parameters: Any) -> None:
    print(f"== {title} ==")
    print(machine_description())
    if parameters:
        print("parameters: " + ", ".join(f"{k}={v}" for k, v in parameters.items()))
    sys.stdout.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) or row[i] in ("-", "n/a") for row in rows) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


@dataclass
class Goals:
    """Goal lines ("goal met" / "goal missed"); missing a goal never fails the run."""

    results: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, description: str, met: bool, detail: str) -> None:
        self.results.append((description, met))
        print(f"goal {'met' if met else 'missed'}: {description} — {detail}", flush=True)


class FunctionalFailure(Exception):
    """The app did not do its job during the bench (exit status 1)."""


def run_main(main: Any) -> None:
    """Exit 0 after a completed run, 1 on a functional failure, 130 when interrupted."""
    try:
        main()
    except FunctionalFailure as exc:
        print(f"FUNCTIONAL FAILURE: {exc}", flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; environment cleaned up", flush=True)
        sys.exit(130)


# ------------------------------------------------------------------------------ measuring


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1]) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def release_free_memory() -> None:
    """Give freed heap back to the OS (glibc ``malloc_trim``) so RSS growth is not hidden by reuse."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssSampler:
    """Peak RSS of this process while the block runs, relative to its start.

    Two measures: a thread reading ``VmRSS`` every ``interval`` seconds, and the kernel's own
    high-water mark ``VmHWM`` after resetting it (``/proc/self/clear_refs``), which misses nothing.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start = 0
        self.peak = 0
        self.hwm_peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        release_free_memory()
        self._hwm_reset = False
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset VmHWM to the current RSS
            self._hwm_reset = True
        self.start = self.peak = rss_bytes()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        if self._hwm_reset:
            self.hwm_peak = _status_kib("VmHWM") * 1024

    @property
    def growth(self) -> int:
        return self.peak - self.start

    @property
    def hwm_growth(self) -> int | None:
        return None if self.hwm_peak is None else self.hwm_peak - self.start


def classify(call: RecordedRequest) -> str:
    """Kind of an Inqom emulator request: token, upload, get, public-url, download, other."""
    path = call.path.rstrip("/")
    if path.endswith("/identity/connect/token"):
        return "token"
    if call.method == "POST" and (path.endswith("/Documents") or path.endswith("/expense-bills")):
        return "upload"
    if call.method == "GET" and path.endswith("/public-url"):
        return "public-url"
    if call.method == "GET" and "/Documents/" in path:
        return "get"
    if call.method == "GET" and path.startswith("/public/"):
        return "download"
    return "other"


def count_kinds(calls: Sequence[RecordedRequest]) -> dict[str, int]:
    counts = {kind: 0 for kind in ("token", "upload", "get", "public-url", "download", "other")}
    for call in calls:
        counts[classify(call)] += 1
    return counts
