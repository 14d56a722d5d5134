"""A one-line progress display for the CLI, shown only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`label: count (rate/s) note` redrawn in place at most ten times a second."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self.enabled = stream.isatty()
        self.count = 0
        self._shown = 0.0
        self._start = time.monotonic()

    def step(self, n: int = 1, note: str = "") -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and now - self._shown > 0.1:
            rate = self.count / max(now - self._start, 1e-9)
            self.stream.write(f"\r{self.label}: {self.count} ({rate:.0f}/s) {note[:40]:<40}")
            self.stream.flush()
            self._shown = now

    def clear(self) -> None:
        """Blanks the line so that other output starts on a clean one; the next step redraws
        it."""
        if self.enabled and self._shown:
            self.stream.write(f"\r{' ' * 80}\r")
            self.stream.flush()
            self._shown = 0.0

    def done(self) -> None:
        if self.enabled:
            self.stream.write(f"\r{self.label}: {self.count} done{' ' * 50}\n")
            self.stream.flush()
