"""Connectors: where triggers and dead letters leave the engine, and where events come in.

One module per outside system, so a reader finds a connector by the system's name:
`kafka.source` (the event log's consumer), `kafka.sink`, `webhook` (HTTP), `redis_stream`,
`file` (JSONL). Each holds one class whose unit of work is a batch, and its configuration as
a typed `msgspec.Struct`, so a bad setting fails when the settings are loaded, not mid-run.
Every sink implements the one contract of `connectors.base` (`Sink`: `deliver`, which answers a
`Failure` per item not delivered, transient or permanent; `write_batch`, `settle`, `close`,
`stats`); the names below are re-exported from there.
"""

from connectors.base import DEFAULT_STATUSES, Backoff, Failure, Sink, SinkError, SinkStats, Status, retry_forever

__all__ = ["DEFAULT_STATUSES", "Backoff", "Failure", "Sink", "SinkError", "SinkStats", "Status", "retry_forever"]
