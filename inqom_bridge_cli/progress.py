"""A small text progress bar on stderr: files and bytes (or items only, when no byte total is given)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .common import human_bytes


class Progress:
    """``[#####.....]  3/10 files  1.2 MiB/5.0 MiB  name`` (``total_bytes=None``: ``3/10 documents  name``).

    On a terminal the line is redrawn in place (at most ~10 times a second); otherwise (a log,
    a pipe) one line is written per finished file.
    """

    def __init__(self, total_files: int, total_bytes: int | None, stream: TextIO | None = None, enabled: bool = True,
                 width: int = 24, unit: str = "files") -> None:
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.width = width
        self.files = 0
        self.bytes = 0
        self._current = 0
        self._name = ""
        self._last_draw = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def start_file(self, name: str) -> None:
        self._name = name
        self._current = 0

    def file_bytes(self, sent: int) -> None:
        """Bytes of the current file handled so far."""
        self._current = sent
        if self._tty and time.monotonic() - self._last_draw > 0.1:
            self._draw()

    def finish_file(self, size: int, note: str = "") -> None:
        self.files += 1
        self.bytes += size
        self._current = 0
        if note:
            self._name = f"{self._name} ({note})"
        self._draw(done=not self._tty)

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        done = self.bytes + self._current
        fraction = done / self.total_bytes if self.total_bytes else (
            self.files / self.total_files if self.total_files else 1.0)
        filled = min(self.width, int(round(fraction * self.width)))
        bar = "#" * filled + "." * (self.width - filled)
        if self.total_bytes is None:
            return f"[{bar}] {self.files}/{self.total_files} {self.unit}  {self._name}"
        return (f"[{bar}] {self.files}/{self.total_files} {self.unit}  "
                f"{human_bytes(done)}/{human_bytes(self.total_bytes)}  {self._name}")

    def _draw(self, done: bool = False) -> None:
        if not self.enabled:
            return
        self._last_draw = time.monotonic()
        if self._tty:
            self.stream.write("\r\x1b[2K" + self.line())
        elif done:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
