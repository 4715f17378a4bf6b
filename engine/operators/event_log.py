"""Where a partition's events come from: the event-log interface the live worker reads.

The live dataflow reads through this small interface so that the same partition logic runs
on Kafka in production (`connectors.kafka.source.KafkaPartitionLog`) and on an in-process list
in benchmarks and tests (`engine.testing.MemoryLog`).
"""

from __future__ import annotations

from typing import Protocol

from connectors.base import Record


class EventLog(Protocol):
    name: str          # the partition's name, e.g. "customer-events-0": offsets are saved under it
    where: str         # how dead letters name it, e.g. "kafka customer-events/0"
    keyed: bool        # records carry the producer's key, which must be the event's customer_id

    def read(self, max_records: int) -> list[Record]:
        """The next records, without blocking; [] when none are available now."""
        ...

    def caught_up(self) -> bool:
        """True when everything written so far has been read."""
        ...

    def end_reached(self) -> bool:
        """True once the offset that was the end at start-up has been read (for bounded runs)."""
        ...

    def lag(self) -> int:
        """Records written but not read yet."""
        ...

    def record_committed(self, offset: int) -> None:
        """Note outside the state store that everything before `offset` is committed there: the
        record a start compares the store's offsets with, so a store that lost data is noticed."""
        ...

    def close(self) -> None: ...
