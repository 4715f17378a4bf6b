"""What every connector is: the `Sink` contract, its `SinkStats`, `SinkError`, a `Failure`, a
source's `Record`, and the one backoff.

A sink's unit of work is a batch, because a per-item write would cost a syscall or round trip
per trigger. The live engine's relays (`engine.operators.outbox`) call `deliver`: one attempt at
each item of a small batch, and an answer per item that was not delivered, a `Failure` that says
whether the outside system refused it for good (`permanent`: the relay dead-letters it) or
could not take it now (a timeout, a refused connection, a 5xx, a broker down: the relay tries
it again, with backoff, for as long as it takes). The sink does not retry beyond what its client
does by itself, and never decides to give up: that is the relay's policy, written once.
`write_batch` / `settle` are the standalone use (the backtest's output file, tools): deliver or
raise. Counters and health live in `stats`, one `SinkStats` per sink, read by /metrics and
/healthz from other threads while a sink retries.

Waiting out an outage is written once, here: `Backoff` (exponential, full jitter) and
`retry_forever` on top of it; the sinks, the Kafka source and the engine's Redis calls use them.

Connectors import from the engine only `engine.actions` (the trigger record): loggers, metrics
and health hooks are passed in by `engine.operators`.
"""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import msgspec

from engine.errors import EngineError

__all__ = ["DEFAULT_STATUSES", "Backoff", "Failure", "Record", "Sink", "SinkError", "SinkStats", "Status",
           "Waiting", "retry_forever"]

T = TypeVar("T")

Status = Literal["sent", "held_out", "suppressed"]
DEFAULT_STATUSES: tuple[Status, ...] = ("sent",)
"""What a live sink delivers unless its settings say `statuses` (SPEC §4, "Who receives what"):
a messaging system must never see a held-out or suppressed trigger it did not ask for."""

Record = tuple[bytes | None, int, bytes | None]
"""What a source hands the engine: (message value, None for a tombstone; offset; message key or None)."""

Waiting = Callable[[str | None], None]
"""A health hook a client is given: called with what it waits on (an error, as logged) while
the outside system fails, and with None once it works again."""


class SinkStats:
    """A sink's counters (items unless said otherwise), plain ints written by the sink and read
    from any thread at any time.

    - `delivered`: acknowledged by the outside system (or written, for a file);
    - `retries`: sent again after a failure (requests, messages or batches, the sink's unit);
    - `failed`: not delivered after the retries (dead-lettered or raised);
    - `dead_lettered`: written to the sink's own dead-letter output instead;
    - `waiting_since`: `time.time()` since which deliveries fail, None while they do not;
    - `last_error`: while `waiting_since` is set, the reason of the last failure, as logged.
    """

    __slots__ = ("delivered", "retries", "failed", "dead_lettered", "waiting_since", "last_error")

    def __init__(self) -> None:
        self.delivered = self.retries = self.failed = self.dead_lettered = 0
        self.waiting_since: float | None = None
        self.last_error: str | None = None

    def failing(self, why: str) -> None:
        """A delivery attempt failed: waiting since now, unless already."""
        if self.waiting_since is None:
            self.waiting_since = time.time()
        self.last_error = why

    def recovered(self) -> None:
        """The outside system answered: nothing is waited for."""
        self.waiting_since = self.last_error = None

    def __repr__(self) -> str:
        return (f"SinkStats(delivered={self.delivered}, retries={self.retries}, failed={self.failed}, "
                f"dead_lettered={self.dead_lettered}, waiting_since={self.waiting_since})")


class Failure(msgspec.Struct, frozen=True):
    """One item of a `Sink.deliver` batch that was not delivered, and why.

    `index` is its position in the batch; `reason` the outside system's answer in words (as
    logged and dead-lettered); `permanent`: refused for good (a webhook's 4xx other than 408 and
    429, a Kafka message too large), so sending it again cannot help; otherwise transient and
    worth trying again. `retry_after_s`: how long the outside system asked to wait (a
    `Retry-After`), None when it did not say.
    """

    index: int
    reason: str
    permanent: bool
    retry_after_s: float | None = None


class Sink(ABC):
    """One connector instance: `deliver` batches (the relay's call) or `write_batch` + `settle`
    (standalone), `close` at the end; usable in `with`. Not shared between threads (its
    `stats` are readable from any).

    Subclasses call `super().__init__()`, which creates `stats`.
    """

    stats: SinkStats

    def __init__(self) -> None:
        self.stats = SinkStats()

    @abstractmethod
    def deliver(self, items: Sequence[Any]) -> list[Failure]:
        """One attempt at each item (the client's own quick retries aside); return once each is
        delivered (acknowledged, or written durably) or has failed, with one `Failure` per item
        that was not delivered (none: all were). Never raises for what the outside system does;
        `stats` counts `delivered`, and `failing`/`recovered` follow the attempts."""

    @abstractmethod
    def write_batch(self, items: Sequence[Any]) -> None:
        """Write or send the batch; raise `SinkError` (or `OSError`) for what cannot be delivered."""

    @abstractmethod
    def settle(self) -> None:
        """Return once every item written so far is delivered (or durable); raise `SinkError`
        otherwise."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class SinkError(EngineError):
    """A sink could not deliver part of a batch, even after retrying.

    Raised by `write_batch` (standalone use) instead of dropping anything: the batch was not
    acknowledged, so the caller can send it again (receivers de-duplicate by `trigger_id`). The
    live engine's relays call `deliver`, which answers a `Failure` per item instead. `sink` names
    the sink and its destination, `count` is how many items were not delivered, `first_error` is
    the first failure, as the outside system reported it.
    """

    def __init__(self, sink: str, count: int, first_error: str) -> None:
        self.sink = sink
        self.count = count
        self.first_error = first_error
        noun = "item" if count == 1 else "items"
        super().__init__(f"{sink}: {count} {noun} not delivered; first error: {first_error}")

    def __reduce__(self) -> tuple[type[SinkError], tuple[str, int, str]]:
        # Keeps the error picklable across processes (Bytewax reports worker errors).
        return (type(self), (self.sink, self.count, self.first_error))


class Backoff:
    """Exponential backoff with full jitter: the n-th delay (from 0) is a uniform draw in
    [0, min(cap, base * 2^n)).

    Full jitter spreads the retries of many workers that failed together (a receiver or
    broker restart), so they do not come back in lockstep. One `Backoff` per retried call.
    """

    __slots__ = ("base_s", "cap_s", "attempt", "_rng")

    def __init__(self, base_s: float = 0.05, cap_s: float = 5.0, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0   # delays handed out so far
        self._rng = rng or random

    def next_delay(self) -> float:
        delay = self._rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 62)))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def retry_forever(fn: Callable[[], T], what: str, errors: tuple[type[BaseException], ...], log: logging.Logger,
                  on_retry: Callable[[], None] | None = None, cap_s: float = 5.0,
                  fatal: tuple[type[BaseException], ...] = (), log_every_s: float = 5.0) -> T:
    """Call `fn` until it succeeds; on one of `errors` back off and try again.

    For what the engine cannot do without (Redis for state, a broker's offsets at start-up):
    it waits rather than crash-loops, and since the caller blocks, nothing piles up in memory.
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
