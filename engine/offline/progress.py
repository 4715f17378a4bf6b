"""A progress line on stderr for long runs: silent for runs under a second, so short
commands and tests print nothing extra. With no known size (stdin: `total_bytes` 0) it counts
events without a share done, which it could only make up."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total_bytes: int, label: str, stream: TextIO | None = None, after_s: float = 1.0) -> None:
        self.total = total_bytes
        self.label = label
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.after_s = after_s
        self.tty = self.stream.isatty()
        self._next = self.start + after_s
        self._shown = False
        self._last_pct: float = -10

    def update(self, done_bytes: int, events: int) -> None:
        """Cheap enough to call once per batch: it looks at the clock and returns."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + (0.2 if self.tty else 5.0)
        pct = min(100.0, 100.0 * done_bytes / self.total) if self.total > 0 else None
        rate = events / max(now - self.start, 1e-9)
        if pct is None:
            line = f"{self.label}: {events:,} events {rate:,.0f}/s"
            self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        elif self.tty:
            bar = "#" * int(pct // 4)
            self.stream.write(f"\r{self.label} [{bar:<25}] {pct:5.1f}% {events:,} events {rate:,.0f}/s")
        elif pct - self._last_pct >= 10 or not self._shown:
            self.stream.write(f"{self.label}: {pct:.0f}% {events:,} events {rate:,.0f}/s\n")
            self._last_pct = pct
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
