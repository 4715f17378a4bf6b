"""Stopping a live run: on SIGTERM or Ctrl-C, finish the epoch in hand, commit, close the sinks
and exit 0; on a fatal condition (state lost, a credential refused), stop without committing
and exit 2.

Bytewax has no graceful drain of its own (a SIGINT ends the run with a Rust panic, SIGTERM
kills the process), so the engine takes the signals itself: a handler only sets a flag, and
each source partition, at its next poll, stops reading, lets the epoch in flight close (every
output of it written), commits it and ends (`StopIteration`). When every partition has ended,
Bytewax closes the sinks and returns. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("engine")

EXIT_FATAL = 2


class Shutdown:
    """Process-wide: whether the run should stop, why, and with which exit code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requested = False
        self.fatal = False       # stop without committing anything more
        self.reason = ""
        self.exit_code = 0
        self.stopped_at: dict[str, int] = {}   # partition -> offset committed when it stopped

    def request(self, reason: str, fatal: bool = False) -> None:
        """Ask every partition to stop; the first fatal reason wins over a graceful one."""
        with self._lock:
            if self.requested and (self.fatal or not fatal):
                return
            self.requested = True
            self.reason = reason
            if fatal:
                self.fatal = True
                self.exit_code = EXIT_FATAL

    def reset(self) -> None:
        """For tests that run several dataflows in one process."""
        with self._lock:
            self.requested = self.fatal = False
            self.reason = ""
            self.exit_code = 0
            self.stopped_at = {}


SHUTDOWN = Shutdown()


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT request a graceful stop; a second one exits at once (status 130)."""

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if SHUTDOWN.requested:
            log.warning("%s again: exiting at once, without the final commit", name)
            os._exit(130)
        log.debug("%s received: finishing the batch in hand, committing, closing the sinks", name)
        SHUTDOWN.request(f"stopped by {name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
