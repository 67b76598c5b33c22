"""Work done once per test session, its result shared by the pytest-xdist workers through a file.

    report = json.loads(once(tmp_path_factory, "checkov", lambda: json.dumps(run_checkov()).encode()))

The first worker to ask computes under an exclusive lock; the others wait for it and read the file.
If computing raises, nothing is written and the next worker to ask computes (and fails) in turn.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Callable

import pytest


def once(factory: pytest.TempPathFactory, name: str, compute: Callable[[], bytes]) -> bytes:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # the same in every worker of one session
    shared = factory.getbasetemp().parent if run else factory.getbasetemp()
    result = shared / f"{name}-{run or 'serial'}"
    with open(shared / f"{name}-{run or 'serial'}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            data = compute()
            partial = result.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(result)
    return result.read_bytes()
