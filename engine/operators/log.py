"""Where a partition's events come from: a Kafka topic partition, or a list in memory.

The live dataflow reads through this small interface so that the same partition logic runs
on Kafka in production and on an in-process list in benchmarks and tests.
"""

from __future__ import annotations

import logging
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from engine.operators.metrics import KAFKA_ERRORS
from engine.retry import retry_forever

log = logging.getLogger("engine.source")

Record = tuple[bytes, int]   # (message value, offset)


class EventLog(Protocol):
    name: str          # the partition's name, e.g. "customer-events-0": offsets are saved under it
    where: str         # how dead letters name it, e.g. "kafka customer-events/0"

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

    def close(self) -> None: ...


class KafkaPartitionLog:
    """One consumer assigned to one partition at an offset the engine chose (from Redis).

    No consumer group and no offset commits to Kafka: the engine's committed offsets live
    in Redis with the state they produced.
    """

    def __init__(self, brokers: list[str], topic: str, partition: int, start: int | None,
                 extra: dict[str, str] | None = None) -> None:
        self.name = f"{topic}-{partition}"
        self.where = f"kafka {topic}/{partition}"
        config = {
            "bootstrap.servers": ",".join(brokers),
            "group.id": "trigger-engine",       # required by librdkafka; nothing is committed
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "auto.offset.reset": "earliest",    # an offset lost to retention restarts at the oldest
            **(extra or {}),
        }
        self._consumer = Consumer(config)
        probe = TopicPartition(topic, partition)
        low, high = retry_forever(lambda: self._consumer.get_watermark_offsets(probe, timeout=10),
                                  f"{self.name}: reading the partition's offsets from {','.join(brokers)}",
                                  (KafkaException,), log)
        if start is not None and start > high:
            # Redis says events up to `start` were applied, the partition ends before that: the
            # topic was recreated or lost data. Reading from 0 would apply events twice.
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG,
                f"{self.name}: the committed offset {start} is beyond the partition's end {high} "
                f"(topic recreated?); to start over, delete the Redis key of this partition's offset"))
        if start is not None and start < low:
            log.error("%s: events %d..%d expired from Kafka before they were read (retention); "
                      "continuing at %d", self.name, start, low - 1, low)
            start = low
        self._tp = TopicPartition(topic, partition, start if start is not None else OFFSET_BEGINNING)
        self._consumer.assign([self._tp])
        self._end_at_start = high
        self._position = start if start is not None else low
        self._eof = False

    def read(self, max_records: int) -> list[Record]:
        records: list[Record] = []
        for msg in self._consumer.consume(max_records, timeout=0):
            err = msg.error()
            if err is None:
                if msg.offset() >= self._position:   # never hand out an offset twice
                    records.append((msg.value(), msg.offset()))
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                self._eof = True
            elif err.fatal():
                raise KafkaException(KafkaError(err.code(), f"{self.name}: {err.str()}", fatal=True))
            else:   # librdkafka retries transient errors (broker down) by itself
                KAFKA_ERRORS.labels(self.name).inc()
                log.warning("%s: %s", self.name, err)
        if records:
            self._position = records[-1][1] + 1
            self._eof = False
        return records

    def caught_up(self) -> bool:
        return self._eof

    def end_reached(self) -> bool:
        return self._position >= self._end_at_start

    def lag(self) -> int:
        try:
            _, high = self._consumer.get_watermark_offsets(self._tp, timeout=1)
        except KafkaException:
            return 0
        return max(0, high - self._position)

    def close(self) -> None:
        self._consumer.close()


class MemoryLog:
    """A partition held in a list: the in-process source of benchmarks and tests."""

    def __init__(self, name: str, values: list[bytes], start: int | None = None) -> None:
        self.name = name
        self.where = f"memory {name}"
        self._values = values
        self._position = start or 0

    def read(self, max_records: int) -> list[Record]:
        start = self._position
        chunk = self._values[start:start + max_records]
        self._position += len(chunk)
        return [(value, start + i) for i, value in enumerate(chunk)]

    def caught_up(self) -> bool:
        return self._position >= len(self._values)

    def end_reached(self) -> bool:
        return self.caught_up()

    def lag(self) -> int:
        return len(self._values) - self._position

    def close(self) -> None:
        pass
