"""Progress on stderr, drawn by tqdm: files and bytes (or items only, when no byte total is given).

    bar = Progress(len(files), sum(sizes))   # 40%|████      | 2/5 files  2.0 MiB/5.0 MiB [00:02<00:03]  a.pdf
    bar.start_file("a.pdf"); bar.file_bytes(sent); bar.finish_file(size, note="skipped"); bar.close()

On a terminal tqdm redraws the line in place; otherwise (a log, a pipe) one line per finished file.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from .common import human_bytes

_LEFT = "{percentage:3.0f}%|{bar}| {files}"
_RIGHT = " [{elapsed}<{remaining}]  {name}"


class _Bar(tqdm):
    """tqdm whose format may also name ``{files}``, ``{name}`` and the sizes ``{done}``/``{size}``."""

    def __init__(self, progress: Progress, **kwargs) -> None:
        self.progress = progress
        super().__init__(**kwargs)

    @property
    def format_dict(self):
        p = self.progress
        return {**super().format_dict, "files": f"{p.files}/{p.total_files} {p.unit}", "name": p.name,
                "done": human_bytes(self.n), "size": human_bytes(p.total_bytes or 0)}


class Progress:
    def __init__(self, total_files: int, total_bytes: int | None, stream: TextIO | None = None, enabled: bool = True,
                 unit: str = "files") -> None:
        self.total_files, self.total_bytes, self.unit, self.enabled = total_files, total_bytes, unit, enabled
        self.stream = stream or sys.stderr
        self.files, self.name, self._bytes = 0, "", 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        sizes = "" if total_bytes is None else "  {done}/{size}"
        self._bar = _Bar(self, total=total_files if total_bytes is None else total_bytes, file=self.stream,
                         bar_format=_LEFT + sizes + _RIGHT, disable=not enabled, mininterval=0.1,
                         dynamic_ncols=self._tty, ascii=None if self._tty else True,
                         delay=0 if self._tty else float("inf"))  # no terminal: tqdm never draws, finish_file writes

    def start_file(self, name: str) -> None:
        self.name = name

    def file_bytes(self, sent: int) -> None:
        """Bytes of the current file handled so far."""
        if self.total_bytes is not None:
            self._bar.update(self._bytes + sent - self._bar.n)

    def finish_file(self, size: int, note: str = "") -> None:
        self.files += 1
        self._bytes += size
        self.name = f"{self.name} ({note})" if note else self.name
        self._bar.update((self.files if self.total_bytes is None else self._bytes) - self._bar.n)
        if self.enabled and not self._tty:
            self.stream.write(str(self._bar) + "\n")
            self.stream.flush()

    def close(self) -> None:
        self._bar.close()
