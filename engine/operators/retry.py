"""Waiting out an outage: retry with exponential backoff and full jitter, logging each retry.

Used where the engine cannot make progress without the other system (Redis for state):
it waits rather than crash-loops, and since the caller blocks, nothing piles up in memory.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """Exponential backoff with full jitter: sleep a uniform draw below min(cap, base * 2^n)."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 5.0, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, min(self.cap_s, self.base_s * 2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def retry_forever(fn: Callable[[], T], what: str, errors: tuple[type[BaseException], ...], log: logging.Logger,
                  on_retry: Callable[[], None] | None = None, cap_s: float = 5.0,
                  fatal: tuple[type[BaseException], ...] = (), log_every_s: float = 5.0) -> T:
    """Call `fn` until it succeeds; on one of `errors` back off and try again.

    `fatal` errors (subclasses of `errors` that waiting cannot fix, such as a wrong password)
    are raised at once. The first failure is logged, then at most one line per `log_every_s`
    with the count of retries since, so a long outage does not flood the log.
    """
    backoff = Backoff(cap_s=cap_s)
    logged_at = 0.0
    unlogged = 0
    while True:
        try:
            result = fn()
        except fatal:
            raise
        except errors as e:
            delay = backoff.next_delay()
            now = time.monotonic()
            if now - logged_at >= log_every_s:
                since = f" ({unlogged} more retries since the last line)" if unlogged else ""
                log.warning("%s failed (%s: %s); retry %d in %.2f s%s", what, type(e).__name__, e, backoff.attempt,
                            delay, since)
                logged_at, unlogged = now, 0
            else:
                unlogged += 1
            if on_retry is not None:
                on_retry()
            time.sleep(delay)
            continue
        if backoff.attempt:
            log.info("%s succeeded after %d retries", what, backoff.attempt)
        return result
