"""Azurite (the Azure Storage emulator, pinned in package.json) on free loopback ports.

    with Azurite.start() as azurite:
        BlobServiceClient.from_connection_string(azurite.connection_string)

Used by the test fixtures and by the local runner; it is never a production component.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"

# Azurite's fixed, publicly documented development account.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _listening(process: subprocess.Popen, log: Path, ports: list[int], deadline: float) -> bool:
    """True once this process's own log says it listens on every port.

    A connect test is not enough: another Azurite (a parallel test, a developer's runner) may
    already listen there, while this one is about to exit with EADDRINUSE.
    """
    wanted = [f"successfully listening at http://127.0.0.1:{port}" for port in ports]
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text(errors="replace")
        if all(line in text for line in wanted):
            return True
        time.sleep(0.05)
    return False


@dataclass
class Azurite:
    process: subprocess.Popen
    workdir: Path
    blob_port: int
    queue_port: int
    table_port: int

    @classmethod
    def start(cls, timeout: float = 30.0, ports: tuple[int, int, int] | None = None,
              data_dir: Path | None = None) -> "Azurite":
        """Start on ``ports`` (blob, queue, table) when given and free, else on free ports.

        Data lives in memory (gone at stop), or in ``data_dir`` (kept) when given.
        """
        if not AZURITE_BIN.exists():
            raise RuntimeError(f"Azurite not installed at {AZURITE_BIN}: run `npm ci` in {REPO_ROOT}")
        last_error = ""
        wanted = list(ports) if ports and all(_is_free(p) for p in ports) else None
        for _ in range(3):  # a free port can be taken by someone else before Azurite binds it
            workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
            ports = wanted or [free_port() for _ in range(3)]
            wanted = None
            log = open(workdir / "azurite.log", "wb")
            process = subprocess.Popen(
                [str(AZURITE_BIN), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
                 *(["--location", str(data_dir)] if data_dir else ["--inMemoryPersistence"]),
                 "--blobHost", "127.0.0.1", "--blobPort", str(ports[0]),
                 "--queueHost", "127.0.0.1", "--queuePort", str(ports[1]),
                 "--tableHost", "127.0.0.1", "--tablePort", str(ports[2])],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            log.close()
            deadline = time.monotonic() + timeout
            if _listening(process, workdir / "azurite.log", ports, deadline):
                return cls(process, workdir, *ports)
            process.kill()
            process.wait()
            last_error = (workdir / "azurite.log").read_text(errors="replace")[-2000:]
            shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"Azurite did not start: {last_error}")

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Azurite":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
