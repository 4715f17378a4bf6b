"""Connectors as Bytewax sinks: one connector (a `connectors.base.Sink`) per worker, written in batches.

Delivery before commit: a connector's `write_batch` either returns once its batch is
delivered, or (Kafka with `wait_for_delivery` off) once it is queued; then the worker calls
`settle_sinks()` before it commits the state that produced those triggers, which calls
`settle()` on every connector this worker thread wrote to. Either way a crash can only
re-send triggers, never lose them. Waiting once per commit instead of once per batch keeps
the worker reading while the broker acknowledges (the latency of the Kafka path).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.base import Sink, SinkError
from engine.operators import metrics
from engine.operators.shutdown import SHUTDOWN

SinkFactory = Callable[[int], Sink]   # worker index -> the worker's connector


class ConnectorSink(DynamicSink):
    """A connector as a Bytewax sink. `statuses`: the trigger statuses it delivers (None: every
    item, e.g. dead letters). A connector that fails for good (a `SinkError`, a full disk)
    stops the run with exit 2 and one line, instead of a traceback: nothing after it commits,
    so the restarted run sends those triggers again."""

    def __init__(self, name: str, factory: SinkFactory, statuses: frozenset[str] | None = None) -> None:
        self.name = name
        self.factory = factory   # worker index -> connector
        self.statuses = statuses

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ConnectorPartition:
        try:
            connector = self.factory(worker_index)
        except OSError as e:   # a file sink that cannot be opened: a full disk, a missing directory
            SHUTDOWN.request(f"sink {self.name}: {_os_error(e, None)}", fatal=True)
            return _ConnectorPartition(self.name, None, self.statuses)
        return _ConnectorPartition(self.name, connector, self.statuses)


def _os_error(e: OSError, connector: object) -> str:
    path = e.filename or getattr(getattr(connector, "config", None), "path", None)
    return f"cannot write{f' {path}' if path else ''}: {e.strerror or e}"


# Connectors written to by each worker thread: a worker's sink partitions and its source
# partitions run on the same thread (no exchange in the flow), so this is what it must settle.
_written: dict[int, list[Sink]] = {}


def settle_sinks() -> None:
    """Wait for the deliveries of every connector this thread wrote to (see module docstring)."""
    for connector in _written.get(threading.get_ident(), ()):
        connector.settle()


class _ConnectorPartition(StatelessSinkPartition):
    def __init__(self, name: str, connector: Sink | None, statuses: frozenset[str] | None) -> None:
        self.name = name
        self.connector = connector
        self.statuses = statuses
        self._items = metrics.SINK_ITEMS.labels(name)
        self._retries = metrics.SINK_RETRIES.labels(name)
        self._seen_retries = connector.stats.retries if connector is not None else 0
        self._registered = False
        if connector is not None:
            metrics.HEALTH.watch(name, connector.stats)
            metrics.SINK_DEAD_LETTERS.watch(name, connector.stats)

    def write_batch(self, items: list[Any]) -> None:
        connector = self.connector
        if connector is None or SHUTDOWN.fatal:
            return   # the run stops without committing: these are sent again after the restart
        if not self._registered:
            _written.setdefault(threading.get_ident(), []).append(connector)
            self._registered = True
        statuses = self.statuses
        if statuses is not None:
            items = [t for t in items if t.status in statuses]
            if not items:
                return
        try:
            connector.write_batch(items)
        except SinkError as e:
            SHUTDOWN.request(f"sink {self.name}: {e}", fatal=True)
            return
        except OSError as e:
            SHUTDOWN.request(f"sink {self.name}: {_os_error(e, connector)}", fatal=True)
            return
        self._items.inc(len(items))
        retries = connector.stats.retries
        if retries != self._seen_retries:
            self._retries.inc(retries - self._seen_retries)
            self._seen_retries = retries

    def close(self) -> None:
        if self.connector is not None:
            try:
                self.connector.close()
            except OSError as e:
                SHUTDOWN.request(f"sink {self.name}: {_os_error(e, self.connector)}", fatal=True)
