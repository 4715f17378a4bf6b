"""The shipped test doubles: the live path without Kafka, Redis or a receiver.

- `MemoryLog`: a partition held in a list, an `engine.operators.event_log.EventLog`;
- `InMemoryStore`: the state store in a dict, a `PartitionStore` like the Redis one
  (re-exported from `engine.state.memory`);
- `ListSink`: a `connectors.base.Sink` that appends what it is given to a list.

`build_flow(settings, rules, partitions=..., open_log=lambda name, start: MemoryLog(...),
store=lambda: store, sinks={"list": lambda _w: ListSink(out)}, dead_letters=...)` runs the live
dataflow (source, partition worker, commits, sinks) in one process, as `bytewax.testing.run_main`
runs it, and gives the triggers a backtest of the same events gives; `run_in_memory` does
exactly that for one partition of JSON lines.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from connectors.base import Failure, Record, Sink
from engine.state.memory import InMemoryStore

__all__ = ["InMemoryStore", "ListSink", "MemoryLog", "run_in_memory"]


class MemoryLog:
    """A partition held in a list: the in-process source of benchmarks and tests. With `keys`
    (aligned with `values`), records carry them and are checked like Kafka's. `committed` is
    the last offset the worker recorded as committed (Kafka's consumer-group record)."""

    def __init__(self, name: str, values: list[bytes], start: int | None = None,
                 keys: list[bytes | None] | None = None) -> None:
        self.name = name
        self.where = f"memory {name}"
        self.keyed = keys is not None
        self._values = values
        self._keys = keys
        self._position = start or 0
        self.committed: int | None = None

    def read(self, max_records: int) -> list[Record]:
        start = self._position
        chunk = self._values[start:start + max_records]
        self._position += len(chunk)
        keys = self._keys
        if keys is None:
            return [(value, start + i, None) for i, value in enumerate(chunk)]
        return [(value, start + i, keys[start + i]) for i, value in enumerate(chunk)]

    def record_committed(self, offset: int) -> None:
        self.committed = offset

    def caught_up(self) -> bool:
        return self._position >= len(self._values)

    def end_reached(self) -> bool:
        return self.caught_up()

    def lag(self) -> int:
        return len(self._values) - self._position

    def close(self) -> None:
        pass


class ListSink(Sink):
    """Appends every batch to `into` (under a lock: the sinks of several workers may share one
    list); delivered when `write_batch` returns, so `settle` has nothing to wait for.

    As a relay's connector it can play a receiver that refuses: `refuse(item)` returns a reason
    to refuse that item for good (None: take it), and `fail_next` calls of `deliver` fail every
    item transiently (a receiver that is down)."""

    _lock = threading.Lock()

    def __init__(self, into: list[Any], refuse: Callable[[Any], str | None] | None = None,
                 fail_next: int = 0) -> None:
        super().__init__()
        self.into = into
        self.refuse = refuse
        self.fail_next = fail_next

    def deliver(self, items: Sequence[Any]) -> list[Failure]:
        if self.fail_next > 0:
            self.fail_next -= 1
            self.stats.failing("down")
            return [Failure(i, "down", permanent=False) for i in range(len(items))]
        failures: list[Failure] = []
        taken: list[Any] = []
        for i, item in enumerate(items):
            why = self.refuse(item) if self.refuse is not None else None
            if why is None:
                taken.append(item)
            else:
                failures.append(Failure(i, why, permanent=True))
        self.write_batch(taken)
        self.stats.recovered()
        return failures

    def write_batch(self, items: Sequence[Any]) -> None:
        with self._lock:
            self.into.extend(items)
        self.stats.delivered += len(items)

    def settle(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_in_memory(rules: Any, lines: list[bytes]) -> tuple[list[Any], list[Any], InMemoryStore]:
    """The live dataflow over one in-memory partition of JSON lines until its end: (triggers,
    dead letters, the store). `rules`: `CompiledRules`. Its clock is the wall clock, so
    deadlines fire only once they are due by now."""
    from datetime import timedelta

    from bytewax.testing import run_main

    from engine.operators.flow import build_flow
    from engine.operators.settings import Settings

    store, triggers, dead = InMemoryStore(), [], []   # type: ignore[var-annotated]
    flow = build_flow(Settings(exit_at_end=True, commit_interval_ms=20), rules, partitions=["events-0"],
                      open_log=lambda name, at: MemoryLog(name, lines, at), store=lambda: store,
                      sinks={"list": lambda _w: ListSink(triggers)}, dead_letters=lambda _w: ListSink(dead))
    run_main(flow, epoch_interval=timedelta(milliseconds=20))
    return triggers, dead, store
