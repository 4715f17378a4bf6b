"""Kafka source: one consumer per topic partition, read from the offset the engine chose.

The engine resumes from the offsets committed with the states in its state store, not from a
consumer group's: the consumer is assigned its partition at that offset. After each state
commit the same offset is also committed to the consumer group (asynchronously, never read
back to resume): the record that a start compares the store with (`engine.operators.resume`),
so a store that lost data is noticed instead of replayed over.

It implements the engine's event-log interface (`engine.operators.event_log.EventLog`) by its
shape; what the engine observes of it (librdkafka's log lines, transient errors for metrics
and /healthz) goes through the `logger` and `waiting` hooks it is given.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from connectors.base import Record, Waiting, retry_forever

RECORD_EVERY_S = 1.0   # the consumer group's record of the committed offset, at most this often

__all__ = ["KafkaPartitionLog"]

log = logging.getLogger("connectors.kafka")


class KafkaPartitionLog:
    """One consumer assigned to one partition at `start` (None: the beginning).

    `logger` receives librdkafka's own lines and the transient errors the consumer reports
    (default: the `kafka` logger); `waiting` is told each transient error (the consumer keeps
    going: librdkafka retries by itself) and None once records flow again.
    """

    keyed = True

    def __init__(self, brokers: list[str], topic: str, partition: int, start: int | None,
                 extra: dict[str, str] | None = None, group_id: str = "trigger-engine", *,
                 logger: logging.Logger | None = None, waiting: Waiting | None = None) -> None:
        self.name = f"{topic}-{partition}"
        self.where = f"kafka {topic}/{partition}"
        self._logger = logger or logging.getLogger("kafka")
        self._waiting = waiting
        config = {
            "bootstrap.servers": ",".join(brokers),
            "group.id": group_id,
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "auto.offset.reset": "earliest",    # an offset lost to retention restarts at the oldest
            "logger": self._logger,
            **(extra or {}),
        }
        self._consumer = Consumer(config)
        probe = TopicPartition(topic, partition)
        low, high = retry_forever(lambda: self._consumer.get_watermark_offsets(probe, timeout=10),
                                  f"{self.name}: reading the partition's offsets from {','.join(brokers)}",
                                  (KafkaException,), log)
        if start is not None and start > high:
            # The store says events up to `start` were applied, the partition ends before that:
            # the topic was recreated or lost data. Reading from 0 would apply events twice.
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
        self._to_record: int | None = None     # the latest committed offset, recorded or not
        self._recorded: int | None = None
        self._recorded_at = -RECORD_EVERY_S

    def read(self, max_records: int) -> list[Record]:
        records: list[Record] = []
        eof_at = None
        for msg in self._consumer.consume(max_records, timeout=0):
            err = msg.error()
            if err is None:
                offset = msg.offset()
                assert offset is not None   # only error events have none
                if offset >= self._position:   # never hand out an offset twice
                    records.append((msg.value(), offset, msg.key()))
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                eof_at = msg.offset()
            elif err.fatal():
                raise KafkaException(KafkaError(err.code(), f"{self.name}: {err.str()}", fatal=True))
            else:   # librdkafka retries transient errors (broker down) by itself
                self._logger.warning("%s: %s", self.name, err.str())
                if self._waiting is not None:
                    self._waiting(err.str())
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
            if self._waiting is not None:
                self._waiting(None)
            self._unhealthy = False
        return records

    def caught_up(self) -> bool:
        return self._eof

    def end_reached(self) -> bool:
        return self._position >= self._end_at_start

    def lag(self) -> int:
        """Records written but not read yet, from the high watermark of the consumer's latest fetch
        response (librdkafka's cache: no request). A query of the broker would wait behind the
        fetch in flight, which a broker holds up to `fetch.wait.max.ms` (500 ms) at the end of a
        partition, and it runs on the dataflow thread: 450-500 ms per call on a caught-up
        partition, every few seconds per partition. 0 before the first fetch response."""
        try:
            _, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except KafkaException:
            return 0
        return max(0, high - self._position)

    def record_committed(self, offset: int) -> None:
        """Record the offset in the consumer group, at most every `RECORD_EVERY_S` (each one is a
        request the broker handles: a commit every few milliseconds cost it more than the
        events); the latest is recorded on `close`. The record only has to trail Redis's offset
        (`engine.operators.resume`); trailing by a second weakens the state-loss check by that."""
        self._to_record = offset
        now = time.monotonic()
        if now - self._recorded_at >= RECORD_EVERY_S:
            self._recorded_at = now
            self._record(offset, asynchronous=True)

    def _record(self, offset: int, asynchronous: bool) -> None:
        offsets = [TopicPartition(self._tp.topic, self._tp.partition, offset)]
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:   # close: the record must be out before the consumer goes
                self._consumer.commit(offsets=offsets, asynchronous=False)
            self._recorded = offset
        except KafkaException as e:   # only the check at the next start is weaker: say so, go on
            log.warning("%s: could not record offset %d in the consumer group: %s", self.name, offset, e)

    def close(self) -> None:
        if self._to_record is not None and self._to_record != self._recorded:
            self._record(self._to_record, asynchronous=False)   # the latest, before the consumer goes
        self._consumer.close()
