"""Connectors: where triggers and dead letters leave the engine.

One module per outside system (`file`, and alongside it Kafka, HTTP webhook, Redis
stream), so a reader finds a connector by the system's name. Each module holds one sink
class whose unit of work is a batch (`write_batch`), because the hot path is batch-shaped
and a per-item write would cost a syscall or round trip per trigger; and its configuration
as a typed `msgspec.Struct`, so a bad setting fails when the settings are loaded, not
mid-run.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Literal, Self

__all__ = ["DEFAULT_STATUSES", "Sink", "SinkError", "Status", "backoff_delay"]

Status = Literal["sent", "held_out", "suppressed"]
DEFAULT_STATUSES: tuple[Status, ...] = ("sent",)
"""What a live sink delivers unless its settings say `statuses` (SPEC §4, "Who receives what"):
a messaging system must never see a held-out or suppressed trigger it did not ask for."""


class Sink(ABC):
    """What every connector is: `write_batch` a batch, `close` at the end; usable in `with`."""

    @abstractmethod
    def write_batch(self, items: Any) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class SinkError(Exception):
    """A sink could not deliver part of a batch, even after retrying.

    Raised instead of dropping anything: the batch was not acknowledged, so the dataflow stops
    and a restart replays it (delivery is at least once; receivers de-duplicate by
    `trigger_id`). `sink` names the sink and its destination, `count` is how many items were
    not delivered, `first_error` is the first failure, as the outside system reported it.
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


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)).

    Full jitter spreads the retries of many workers that failed together (a receiver or
    broker restart), so they do not come back in lockstep. `attempt` counts from 0.
    """
    return random.uniform(0.0, min(cap_s, base_s * 2.0 ** min(attempt, 62)))
