"""Connectors as Bytewax sinks: one connector instance per worker, written in batches.

A connector's `write_batch` returns once its batch is delivered (or raises): the epoch, and
with it the commit of the state that produced these triggers, waits for it.
"""

from __future__ import annotations

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


def _retries(connector: Connector) -> int:
    """The connector's retry counter, whatever it calls it (connectors keep plain int counters)."""
    return getattr(connector, "retries", None) or getattr(connector, "retried", 0) or 0


class _ConnectorPartition(StatelessSinkPartition):
    def __init__(self, name: str, connector: Connector) -> None:
        self.connector = connector
        self._items = metrics.SINK_ITEMS.labels(name)
        self._retries = metrics.SINK_RETRIES.labels(name)
        self._seen_retries = _retries(connector)

    def write_batch(self, items: list[Any]) -> None:
        self.connector.write_batch(items)
        self._items.inc(len(items))
        retries = _retries(self.connector)
        if retries != self._seen_retries:
            self._retries.inc(retries - self._seen_retries)
            self._seen_retries = retries

    def close(self) -> None:
        self.connector.close()
