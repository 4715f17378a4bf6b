"""Connectors: where triggers and dead letters leave the engine.

One module per outside system (`file`, and alongside it Kafka, HTTP webhook, Redis
stream), so a reader finds a connector by the system's name. Each module holds one sink
class whose unit of work is a batch (`write_batch`), because the hot path is batch-shaped
and a per-item write would cost a syscall or round trip per trigger; and its configuration
as a typed `msgspec.Struct`, so a bad setting fails when the settings are loaded, not
mid-run.
"""
