"""Connectors as Bytewax sinks: one connector instance per worker, written in batches.

A connector's `write_batch` returns once its batch is delivered (or raises): the epoch, and
with it the commit of the state that produced these triggers, waits for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bytewax.outputs import DynamicSink, StatelessSinkPartition


class Connector(Protocol):
    def write_batch(self, items: Sequence[Any]) -> None: ...

    def close(self) -> None: ...


class ConnectorSink(DynamicSink):
    def __init__(self, factory: Callable[[int], Connector]) -> None:
        self.factory = factory   # worker index -> connector

    def build(self, step_id: str, worker_index: int, worker_count: int) -> "_ConnectorPartition":
        return _ConnectorPartition(self.factory(worker_index))


class _ConnectorPartition(StatelessSinkPartition):
    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def write_batch(self, items: list[Any]) -> None:
        self.connector.write_batch(items)

    def close(self) -> None:
        self.connector.close()
