"""Where a partition's events come from: a Kafka topic partition, or a list in memory.

The live dataflow reads through this small interface so that the same partition logic runs
on Kafka in production and on an in-process list in benchmarks and tests.
"""

from __future__ import annotations

import logging
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from engine.operators.logs import kafka_logger

from engine.operators.metrics import HEALTH, KAFKA_ERRORS
from engine.operators.retry import retry_forever

log = logging.getLogger("engine.source")

Record = tuple[bytes, int, bytes | None]   # (message value, offset, message key)


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


class KafkaPartitionLog:
    """One consumer assigned to one partition at an offset the engine chose (from Redis).

    The offsets the engine resumes from live in Redis with the state they produced. After each
    Redis commit the same offset is also committed to the consumer group `group_id` in Kafka
    (asynchronously, never read back to resume): the record that a start checks Redis against
    (`engine.operators.resume`), so a Redis that lost data is noticed instead of replayed over.
    """

    keyed = True

    def __init__(self, brokers: list[str], topic: str, partition: int, start: int | None,
                 extra: dict[str, str] | None = None, group_id: str = "trigger-engine") -> None:
        self.name = f"{topic}-{partition}"
        self.where = f"kafka {topic}/{partition}"
        config = {
            "bootstrap.servers": ",".join(brokers),
            "group.id": group_id,
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "auto.offset.reset": "earliest",    # an offset lost to retention restarts at the oldest
            "logger": kafka_logger(),
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
        self._unhealthy = False

    def read(self, max_records: int) -> list[Record]:
        records: list[Record] = []
        eof_at = None
        for msg in self._consumer.consume(max_records, timeout=0):
            err = msg.error()
            if err is None:
                if msg.offset() >= self._position:   # never hand out an offset twice
                    records.append((msg.value(), msg.offset(), msg.key()))
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                eof_at = msg.offset()
            elif err.fatal():
                raise KafkaException(KafkaError(err.code(), f"{self.name}: {err.str()}", fatal=True))
            else:   # librdkafka retries transient errors (broker down) by itself
                KAFKA_ERRORS.labels(self.name).inc()
                kafka_logger().warning("%s: %s", self.name, err.str())
                HEALTH.waiting("kafka", self.name, err.str())
                self._unhealthy = True
        if records:
            self._position = records[-1][1] + 1
            self._eof = False
        # A topic written in transactions (the repartition stage, Kafka Streams, Debezium) ends
        # each transaction with a commit marker: an offset that is never delivered as a record.
        # The end-of-partition event says where the partition really ends.
        if eof_at is not None and eof_at >= self._position:
            self._position = eof_at
            self._eof = True
        if self._unhealthy and (records or self._eof):
            HEALTH.waiting("kafka", self.name, None)
            self._unhealthy = False
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

    def record_committed(self, offset: int) -> None:
        try:
            self._consumer.commit(offsets=[TopicPartition(self._tp.topic, self._tp.partition, offset)],
                                  asynchronous=True)
        except KafkaException as e:   # only the check at the next start is weaker: say so, go on
            log.warning("%s: could not record offset %d in the consumer group: %s", self.name, offset, e)

    def close(self) -> None:
        self._consumer.close()


class MemoryLog:
    """A partition held in a list: the in-process source of benchmarks and tests. With `keys`
    (aligned with `values`), records carry them and are checked like Kafka's."""

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
