"""Connectors as Bytewax sinks: one connector instance per worker, written in batches.

Delivery before commit: a connector's `write_batch` either returns once its batch is
delivered, or (Kafka with `wait_for_delivery` off) once it is queued; then the worker calls
`settle_sinks()` before it commits the state that produced those triggers, which waits for
every delivery of the connectors this worker thread wrote to. Either way a crash can only
re-send triggers, never lose them. Waiting once per commit instead of once per batch keeps
the worker reading while the broker acknowledges (the latency of the Kafka path).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from engine.operators import metrics


class Connector(Protocol):
    def write_batch(self, items: Sequence[Any]) -> None: ...

    def close(self) -> None: ...


class ConnectorSink(DynamicSink):
    def __init__(self, name: str, factory: Callable[[int], Connector]) -> None:
        self.name = name
        self.factory = factory   # worker index -> connector

    def build(self, step_id: str, worker_index: int, worker_count: int) -> "_ConnectorPartition":
        return _ConnectorPartition(self.name, self.factory(worker_index))


# Connectors written to by each worker thread: a worker's sink partitions and its source
# partitions run on the same thread (no exchange in the flow), so this is what it must settle.
_written: dict[int, list[Connector]] = {}


def settle_sinks() -> None:
    """Wait for the deliveries of every connector this thread wrote to (see module docstring)."""
    for connector in _written.get(threading.get_ident(), ()):
        settle = getattr(connector, "settle", None)
        if settle is not None:
            settle()


def _retries(connector: Connector) -> int:
    """The connector's retry counter, whatever it calls it (connectors keep plain int counters)."""
    return getattr(connector, "retries", None) or getattr(connector, "retried", 0) or 0


class _ConnectorPartition(StatelessSinkPartition):
    def __init__(self, name: str, connector: Connector) -> None:
        self.connector = connector
        self._items = metrics.SINK_ITEMS.labels(name)
        self._retries = metrics.SINK_RETRIES.labels(name)
        self._seen_retries = _retries(connector)
        self._registered = False

    def write_batch(self, items: list[Any]) -> None:
        if not self._registered:
            _written.setdefault(threading.get_ident(), []).append(self.connector)
            self._registered = True
        self.connector.write_batch(items)
        self._items.inc(len(items))
        retries = _retries(self.connector)
        if retries != self._seen_retries:
            self._retries.inc(retries - self._seen_retries)
            self._seen_retries = retries

    def close(self) -> None:
        self.connector.close()
