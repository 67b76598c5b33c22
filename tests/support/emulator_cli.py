"""Run an emulator's command line (``python -m tests.emulators.X``) in a test."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def emulator_process(module: str, *args: str) -> Iterator[dict[str, Any]]:
    """Start ``python -m module *args`` from the repository root; yield the JSON line it prints.

    On leaving normally, SIGTERM must stop it with exit status 0; it is killed in any case.
    """
    process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
