"""Repartition stage: re-key a raw event topic by customer id, exactly once (as Kafka Streams does).

The engine needs its topic keyed by `customer_id`: a partition's customers are owned (and
their states cached) by the one worker that reads it, and a message whose key is not its
customer id is dead-lettered. A shop whose producer does not key by customer runs this
stage in front of the engine:

    raw topic (any key, any partitioning)
      -> consume in a consumer group (read_committed, offsets committed only in transactions)
      -> decode each message as the engine does, to find its customer_id
      -> produce the value unchanged, key = customer_id, original headers and timestamp
      -> one Kafka transaction per batch: the produced messages + the consumed offsets
    keyed topic (the engine's `kafka.topic`)

A message the engine cannot decode is forwarded unchanged and without a key, so the engine
dead-letters it with the decode reason, as it would have from the raw topic.

Keys are placed with librdkafka's `murmur2_random` partitioner, which is the Java client's
default: a shop's Java producer writing keyed events to the same topic puts each customer
on the same partition as this stage does.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NoReturn, TypeVar

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from connectors.base import Backoff
from engine.errors import EngineError
from engine.events.decode import EventDecoder
from engine.events.model import Event
from engine.operators.logs import kafka_logger

__all__ = ["RepartitionConfig", "RepartitionError", "RepartitionStats", "Repartitioner", "main"]

log = logging.getLogger("engine.repartition")

T = TypeVar("T")

PROGRESS_EVERY_S = 10.0
POLL_TIMEOUT_S = 0.1
"""How long one consume waits to fill a batch: with a trickle of input the stage commits at
most every 100 ms (the latency it adds), under a backlog it commits full batches."""
TXN_CALL_TIMEOUT_S = 30.0
"""One attempt of a transaction call (commit, send offsets); a timeout is retried, logged."""

# Settings the exactly-once contract depends on: `extra` may not change them.
_CONSUMER_CONTRACT = ("group.id", "group.instance.id", "enable.auto.commit", "enable.auto.offset.store",
                      "isolation.level", "auto.offset.reset", "enable.partition.eof")
_PRODUCER_CONTRACT = ("transactional.id", "enable.idempotence", "acks", "partitioner")

# Delivery errors that no retry of the transaction can fix: aborting and retrying would spin.
_PERMANENT = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_TIMESTAMP,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
})
# Not permanent: _MSG_TIMED_OUT (a broker unreachable for message.timeout.ms) aborts the
# transaction and the batch is read again, so an outage is waited out rather than fatal.


class RepartitionError(EngineError):
    """The stage cannot go on (fenced by another instance, a topic missing, a message the
    keyed topic refuses for good). Nothing committed is lost: a restart resumes after the
    last committed transaction."""


class RepartitionConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Where to read, where to write, and as whom.

    `transactional_id` must be unique per running instance (Kafka fences the older of two
    producers that share one): a multi-process deployment gives each process its own, e.g.
    f"{group_id}-{process_id}". It defaults to f"{group_id}-0", right for one instance. It
    also serves as the consumer's static group member id (`group.instance.id`), so an
    instance that restarts (crash, deploy) takes its partitions back at once instead of
    waiting for the broker's session timeout; an instance that stops for good leaves its
    partitions unread for `session.timeout.ms` (45 s by default) before the others take them.

    `extra` holds librdkafka settings (`security.protocol`, `sasl.*`, `session.timeout.ms` …)
    applied to both the consumer and the producer. The settings the exactly-once contract
    rests on (isolation level, offset commits, idempotence, transactional id, partitioner)
    cannot be overridden there.
    """

    brokers: list[str]
    from_topic: str                         # raw events, keyed any way or not at all
    to_topic: str                           # keyed by customer_id: the engine's kafka.topic
    group_id: str = "trigger-engine-repartition"
    transactional_id: str = ""              # "" -> f"{group_id}-0"
    batch_size: int = 5000                  # messages per transaction, at most (a transaction costs ~10 ms)
    extra: dict[str, str] = {}

    def __post_init__(self) -> None:
        if not self.brokers:
            raise ValueError("brokers must name at least one host:port")
        if not self.from_topic or not self.to_topic:
            raise ValueError("from_topic and to_topic must not be empty")
        if self.from_topic == self.to_topic:
            raise ValueError(f"from_topic and to_topic are both {self.from_topic!r}: the stage would re-read "
                             "its own output forever; write the keyed events to another topic")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not self.transactional_id:
            self.transactional_id = f"{self.group_id}-0"
        fixed = sorted(k for k in self.extra if k in _CONSUMER_CONTRACT or k in _PRODUCER_CONTRACT)
        if fixed:
            raise ValueError(f"extra sets {', '.join(fixed)}, which the exactly-once contract fixes; "
                             "use group_id / transactional_id for the ids, and leave the others out")


class RepartitionStats(msgspec.Struct):
    """Counts of committed work only: a batch whose transaction was aborted is not counted
    (its messages are read again and counted once, when committed)."""

    rekeyed: int = 0            # messages written with their customer_id as key
    unkeyed: int = 0            # undecodable messages forwarded without a key
    transactions: int = 0       # committed
    aborted: int = 0            # aborted and re-read
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        return self.rekeyed + self.unkeyed


class _Abort(Exception):
    """Internal: the transaction must be aborted and its batch read again."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error)
        self.error = error


class _Stopping(Exception):
    """Internal: asked to stop while waiting for the broker."""


class Repartitioner:
    """Consumes `from_topic` in the group and writes it to `to_topic` keyed by customer_id.

    One instance is one consumer and one transactional producer, used from one thread.
    Several instances (processes) with the same `group_id` and distinct `transactional_id`s
    share the raw partitions.
    """

    def __init__(self, config: RepartitionConfig) -> None:
        self.config = config
        self.name = f"repartition {config.from_topic} -> {config.to_topic}"
        self.stats = RepartitionStats()
        self._decode = EventDecoder().decode
        self._delivery_errors: list[KafkaError] = []
        self._in_txn = False
        self._failed = False
        self._finished: set[int] = set()    # raw partitions read and committed to the start-up end
        self._end_at_start: dict[int, int] = {}
        self._stop: threading.Event | None = None
        self._consumer_errors = 0                  # not logged yet
        self._consumer_error_at = float("-inf")
        self._first_at: float | None = None        # monotonic: first message read, last commit
        self._last_commit_at: float | None = None
        brokers = ",".join(config.brokers)
        self._consumer = Consumer({
            "bootstrap.servers": brokers,
            **config.extra,
            "group.id": config.group_id,
            "group.instance.id": config.transactional_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "logger": kafka_logger(),
        })
        self._producer = Producer({
            "bootstrap.servers": brokers,
            "linger.ms": 5,
            # After a commit the coordinator often answers the next transaction's first request
            # with CONCURRENT_TRANSACTIONS until its markers are written: retried after 10 ms
            # instead of 100, sending the offsets takes 5 ms per transaction here instead of up
            # to 20 (the backoff still grows to retry.backoff.max.ms during an outage).
            "retry.backoff.ms": 10,
            **config.extra,
            "transactional.id": config.transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            # Only failures are reported: a Python callback per delivered message would cost
            # as much as the rest of the per-message work.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery_error,
            "logger": kafka_logger(),
        })

    def _on_delivery_error(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(err)

    def run(self, stop: threading.Event | None = None, exit_at_end: bool = False) -> RepartitionStats:
        """Re-key until `stop` is set (or, with `exit_at_end`, until every raw partition is
        read and committed up to its end at start-up), then close; returns the counts.

        Exactly-once contract: each batch is one Kafka transaction holding the re-keyed
        messages and the consumer group's offsets after them, so after any crash (kill -9
        included), rebalance or broker error, every message of `from_topic` appears in
        `to_topic` exactly once for a reader with `isolation.level=read_committed` (librdkafka's
        default; a read_uncommitted reader also sees aborted copies). Its limits:

        - order: messages of one raw partition keep their order per customer (they go to one
          keyed partition, in the order read). A customer whose events are spread over several
          raw partitions gets them in the order this stage reads them, which interleaves the
          raw partitions arbitrarily: a raw topic with several partitions can reorder a
          customer's events. Disorder is what the engine's `time: {lateness: D}` is for; it is
          not solved here. A raw topic with one partition keeps every customer's order.
        - the stage never changes a value, so an event that is in the raw topic twice (a
          producer's retry) is in the keyed topic twice; the engine de-duplicates by event_id.
        - `transactional_id` must be unique per running instance (see `RepartitionConfig`).

        Errors: a retriable error of a transaction call is retried with backoff (and logged);
        an abortable one aborts the transaction and rewinds the consumer to the group's
        committed offsets, so the batch is read again; a fatal one (fenced by another instance
        with the same `transactional_id`, not authorized, a message `to_topic` refuses for
        good) raises `RepartitionError`. On `stop` the in-flight batch is committed first.
        """
        self._stop = stop
        c = self.config
        started = time.monotonic()
        try:
            partitions = self._check_topics()
            if exit_at_end:
                self._end_at_start = self._end_offsets(partitions)
                self._finished = {p for p, end in self._end_at_start.items() if end <= 0}
            # Before joining the group: this aborts a transaction a crashed predecessor with the same
            # transactional id left open, whose pending offsets would otherwise block our start.
            self._retry(lambda: self._producer.init_transactions(TXN_CALL_TIMEOUT_S), "initialising transactions")
            self._consumer.subscribe([c.from_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_revoke)
            log.info("%s: started (group %s, transactional id %s, %d raw partitions)%s", self.name, c.group_id,
                     c.transactional_id, len(partitions),
                     f", until the {sum(self._end_at_start.values())} messages present at start-up are re-keyed"
                     if exit_at_end else "")
            progress_at = time.monotonic()
            reported = 0
            committed_check_at = 0.0
            while not (stop is not None and stop.is_set()):
                msgs = self._consumer.consume(c.batch_size, POLL_TIMEOUT_S)
                if msgs:
                    self._process(msgs)
                now = time.monotonic()
                if now - progress_at >= PROGRESS_EVERY_S:
                    s = self.stats
                    log.info("%s: %d messages re-keyed, %d undecodable forwarded unkeyed, %d transactions "
                             "(%d aborted), %.0f msg/s", self.name, s.rekeyed, s.unkeyed, s.transactions,
                             s.aborted, (s.messages - reported) / (now - progress_at))
                    reported, progress_at = s.messages, now
                if exit_at_end:
                    if len(self._finished) >= len(self._end_at_start):
                        break
                    if not msgs and now - committed_check_at >= 1.0:   # idle: are the others done?
                        committed_check_at = now
                        if self._reached_end():
                            break
        except _Stopping:
            pass
        finally:
            self.stats.seconds = time.monotonic() - started
            self._close()
        s = self.stats
        busy = (self._last_commit_at or 0.0) - (self._first_at or 0.0)
        log.info("%s: stopped after %.1f s: %d messages re-keyed, %d undecodable forwarded unkeyed, "
                 "%d transactions (%d aborted)%s", self.name, s.seconds, s.rekeyed, s.unkeyed, s.transactions,
                 s.aborted, f", {s.messages / busy:.0f} msg/s from the first message to the last commit"
                 if busy > 0 else "")
        return s

    # -- one batch, one transaction ------------------------------------------------------

    def _process(self, msgs: list[Message]) -> None:
        """Produce a consumed batch and commit it with its offsets in one transaction; on an
        abortable error, abort and rewind so that the batch is consumed again."""
        decode = self._decode
        produce = self._producer.produce
        to_topic = self.config.to_topic
        rekeyed = unkeyed = 0
        eofs: list[int] = []
        began = False
        try:
            for m in msgs:
                err = m.error()
                if err is not None:
                    self._consumer_error(m, err, eofs)
                    continue
                if not began:
                    if self._first_at is None:
                        self._first_at = time.monotonic()
                    self._begin()
                    began = True
                value = m.value()
                key = None
                if value is not None:
                    event = decode(value, "")   # a dead letter's reason is the engine's to give
                    if event.__class__ is Event:
                        # encoded as the engine's key check encodes it, so the two always agree
                        key = event.customer_id.encode("utf-8", "surrogatepass")
                ts_type, ts = m.timestamp()
                if key is None:
                    unkeyed += 1
                else:
                    rekeyed += 1
                while True:
                    try:
                        produce(to_topic, value, key, headers=m.headers(),
                                timestamp=0 if ts_type == TIMESTAMP_NOT_AVAILABLE else ts)
                        break
                    except BufferError:     # librdkafka's queue is full: let deliveries drain it
                        self._producer.poll(0.1)
                    except KafkaException as e:
                        self._produce_failed(m, e.args[0])
            if began:
                self._commit()
        except _Abort as a:
            self._abort(a.error, msgs)
            return
        self.stats.rekeyed += rekeyed
        self.stats.unkeyed += unkeyed
        if began:
            self.stats.transactions += 1
            self._last_commit_at = time.monotonic()
        self._finished.update(eofs)

    def _begin(self) -> None:
        self._delivery_errors.clear()
        try:
            self._producer.begin_transaction()
        except KafkaException as e:
            self._fatal("cannot begin a transaction", e.args[0])
        self._in_txn = True

    def _commit(self) -> None:
        """Send the consumer's positions with the transaction, then commit it."""
        consumer = self._consumer
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if offsets:
            self._txn_call(lambda: self._producer.send_offsets_to_transaction(
                offsets, consumer.consumer_group_metadata(), TXN_CALL_TIMEOUT_S), "sending offsets")
        self._txn_call(lambda: self._producer.commit_transaction(TXN_CALL_TIMEOUT_S), "committing")
        self._in_txn = False
        if self._end_at_start:
            end = self._end_at_start
            self._finished.update(tp.partition for tp in offsets if tp.offset >= end.get(tp.partition, 0))

    def _txn_call(self, call: Callable[[], None], what: str) -> None:
        """A transaction call, the confluent-kafka way: retriable -> again (with backoff),
        abortable -> `_Abort`, anything else -> `RepartitionError`."""
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        while True:
            try:
                call()
                return
            except KafkaException as e:
                err: KafkaError = e.args[0]
                if err.fatal():
                    self._fatal(what, err)
                if err.txn_requires_abort():
                    raise _Abort(self._root_cause(err)) from None
                if not _transient(err):
                    self._fatal(what, err)
                delay = backoff.next_delay()
                log.warning("%s: %s the transaction failed (%s), retry %d in %.2f s", self.name, what,
                            _describe(err), backoff.attempt, delay)
                self._sleep(delay)

    def _root_cause(self, err: KafkaError) -> KafkaError:
        """A commit that fails because a message failed reports a generic error; the delivery
        report says which."""
        for d in self._delivery_errors:
            if d.code() in _PERMANENT:
                return d
        return self._delivery_errors[0] if self._delivery_errors else err

    def _abort(self, cause: KafkaError, msgs: list[Message] | None = None) -> None:
        """Abort the transaction and rewind to the committed offsets: the batch is read again."""
        if cause.code() in _PERMANENT:
            self._fatal(f"a message of {_offsets(msgs or [])} cannot be written to {self.config.to_topic!r} "
                        "(nothing after the last committed transaction was written; fix the topic's settings "
                        "or permissions and restart)", cause)
        self.stats.aborted += 1
        log.warning("%s: transaction aborted (%s); reading its batch again", self.name, _describe(cause))
        self._retry(lambda: self._producer.abort_transaction(TXN_CALL_TIMEOUT_S), "aborting the transaction")
        self._in_txn = False
        self._rewind()

    def _rewind(self) -> None:
        """Seek every partition read in the aborted transaction back to the group's committed
        offset (the beginning when none is committed, as `auto.offset.reset=earliest`)."""
        consumer = self._consumer
        positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(consumer.assignment())}
        read = [TopicPartition(t, p) for (t, p), offset in positions.items() if offset >= 0]
        if not read:
            return
        committed = self._retry(lambda: consumer.committed(read, timeout=TXN_CALL_TIMEOUT_S),
                                "reading the committed offsets")
        for tp in committed:
            target = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            if target != positions[(tp.topic, tp.partition)]:
                consumer.seek(TopicPartition(tp.topic, tp.partition, target))

    def _produce_failed(self, m: Message, err: KafkaError) -> None:
        """produce() refused a message before queueing it (too large for the producer ...)."""
        if err.code() in _PERMANENT or err.fatal():
            self._fatal(f"message {m.topic()}/{m.partition()}@{m.offset()} ({len(m.value() or b'')} bytes) cannot "
                        f"be written to {self.config.to_topic!r}", err)
        raise _Abort(err)

    def _consumer_error(self, m: Message, err: KafkaError, eofs: list[int]) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            offset, partition = m.offset(), m.partition()
            assert offset is not None and partition is not None   # an end-of-partition event names both
            if offset >= self._end_at_start.get(partition, 0):
                eofs.append(partition)
            return
        if err.fatal():
            self._fatal("consuming", err)
        # librdkafka retries transient errors (broker down) by itself; during an outage they
        # come with every poll, so say so once per PROGRESS_EVERY_S
        self._consumer_errors += 1
        now = time.monotonic()
        if now - self._consumer_error_at >= PROGRESS_EVERY_S:
            log.warning("%s: consumer: %s%s", self.name, _describe(err),
                        f" ({self._consumer_errors - 1} more errors since the last line)"
                        if self._consumer_errors > 1 else "")
            self._consumer_error_at, self._consumer_errors = now, 0

    # -- rebalances ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned raw partitions %s", self.name, sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions are taken away: commit what is in flight, so that the next owner starts
        after it (transactions never span a consume, so nothing is in flight here today; this
        keeps the contract if that changes). A lost assignment's transaction is fenced by the
        broker and aborted by the commit's error handling."""
        if self._in_txn:
            try:
                self._commit()
            except _Abort as a:
                self._abort(a.error)
        log.info("%s: revoked raw partitions %s", self.name, sorted(tp.partition for tp in partitions))

    # -- bounded runs --------------------------------------------------------------------------

    def _check_topics(self) -> list[int]:
        c = self.config
        found: dict[str, list[int]] = {}
        for topic in (c.from_topic, c.to_topic):
            meta = self._retry(partial(self._consumer.list_topics, topic, timeout=10), f"reading topic {topic}")
            t = meta.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                why = _describe(t.error) if t is not None and t.error is not None else "no partitions"
                hint = ("create it with as many partitions as the engine should have: it is the engine's kafka.topic"
                        if topic == c.to_topic else "check the name")
                raise RepartitionError(f"{self.name}: topic {topic!r} on {','.join(c.brokers)} is not usable "
                                       f"({why}); {hint}")
            found[topic] = sorted(t.partitions)
        return found[c.from_topic]

    def _end_offsets(self, partitions: list[int]) -> dict[int, int]:
        topic = self.config.from_topic

        def watermarks(p: int) -> tuple[int, int]:
            return self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)

        return {p: self._retry(partial(watermarks, p), f"reading the end of {topic}/{p}")[1] for p in partitions}

    def _reached_end(self) -> bool:
        """Every raw partition read to its end at start-up and committed: by this instance
        (it saw the end), or by the group (its committed offset is there)."""
        rest = [TopicPartition(self.config.from_topic, p) for p in self._end_at_start if p not in self._finished]
        if not rest:
            return True
        try:
            committed = self._consumer.committed(rest, timeout=10)
        except KafkaException:
            return False
        for tp in committed:
            if tp.offset >= self._end_at_start[tp.partition]:
                self._finished.add(tp.partition)
        return len(self._finished) >= len(self._end_at_start)

    # -- plumbing --------------------------------------------------------------------------

    def _retry(self, call: Callable[[], T], what: str) -> T:
        """A call that must eventually succeed: retriable errors are retried with backoff."""
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        while True:
            try:
                return call()
            except KafkaException as e:
                err: KafkaError = e.args[0]
                if err.fatal() or not _transient(err):
                    self._fatal(what, err)
                delay = backoff.next_delay()
                log.warning("%s: %s failed (%s), retry %d in %.2f s", self.name, what, _describe(err),
                            backoff.attempt, delay)
                self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        if self._stop is not None and self._stop.wait(seconds):
            raise _Stopping()
        if self._stop is None:
            time.sleep(seconds)

    def _fatal(self, what: str, err: KafkaError) -> NoReturn:
        hint = ""
        if err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                          KafkaError.FENCED_INSTANCE_ID):
            hint = (f" (another instance runs with transactional id {self.config.transactional_id!r}: give each "
                    "instance its own)")
        self._failed = True
        raise RepartitionError(f"{self.name}: {what}: {_describe(err)}{hint}")

    def _close(self) -> None:
        """Abort a transaction that an error left open (its batch is read again by whoever owns
        the partitions next), leave the group, flush the producer. Stops never leave one open:
        `stop` is checked between batches."""
        if self._in_txn:
            try:
                self._producer.abort_transaction(5)
            except KafkaException:
                pass    # fenced or unreachable: the next instance with this transactional id aborts it
            self._in_txn = False
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as e:
            log.warning("%s: closing the consumer: %s", self.name, e)
        try:
            if not self._failed:    # a producer in a fatal state has nothing left to deliver
                self._producer.flush(5)
            close = getattr(self._producer, "close", None)     # confluent-kafka >= 2.10
            if close is not None:
                close()
        except KafkaException as e:     # a fatal producer re-raises its error: it was reported already
            if not self._failed:
                log.warning("%s: closing the producer: %s", self.name, e)


_UNREACHABLE = frozenset({KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                          KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
                          KafkaError.COORDINATOR_LOAD_IN_PROGRESS})


def _transient(err: KafkaError) -> bool:
    """Worth another try: librdkafka says so, or the broker is just not reachable now (admin
    and metadata calls report a timeout without the retriable flag)."""
    return err.retriable() or err.code() in _UNREACHABLE


def _offsets(msgs: list[Message]) -> str:
    """`topic/p@first..last, …` of a batch, for error messages."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for m in msgs:
        if m.error() is None:
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None   # a message names all three
            r = ranges.setdefault((topic, partition), [offset, offset])
            r[0], r[1] = min(r[0], offset), max(r[1], offset)
    return ", ".join(f"{t}/{p}@{a}..{b}" for (t, p), (a, b) in sorted(ranges.items())) or "the batch"


def _describe(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.operators.repartition",
        description="Re-key a raw event topic by customer_id into the engine's topic, exactly once "
                    "(one Kafka transaction per batch, carrying the consumed offsets).")
    parser.add_argument("--brokers", default="127.0.0.1:9092", help="bootstrap servers, comma-separated")
    parser.add_argument("--from", dest="from_topic", required=True, help="raw topic to read")
    parser.add_argument("--to", dest="to_topic", required=True, help="keyed topic to write (the engine's kafka.topic)")
    parser.add_argument("--group", default="trigger-engine-repartition", help="consumer group id")
    parser.add_argument("--transactional-id", default="",
                        help="unique per running instance (default GROUP-0); e.g. GROUP-<process id>")
    parser.add_argument("--batch-size", type=int, default=5000, help="messages per transaction, at most")
    parser.add_argument("-X", dest="extra", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="librdkafka setting for consumer and producer (security.protocol=SSL ...); repeatable")
    parser.add_argument("--exit-at-end", action="store_true",
                        help="stop once the messages present at start-up are re-keyed and committed")
    parser.add_argument("--log-level", default="INFO")
    return parser


def config_from_settings(settings: Any) -> RepartitionConfig:
    """The stage of a `triggers run` / `triggers repartition` with `kafka.repartition_from`: from
    that raw topic into `kafka.topic`, in the group "<consumer group>-repartition", one
    transactional id per process."""
    k = settings.kafka
    group = f"{settings.consumer_group}-repartition"
    return RepartitionConfig(brokers=k.brokers, from_topic=k.repartition_from, to_topic=k.topic, group_id=group,
                             transactional_id=f"{group}-{settings.process_id or 0}", extra=k.extra)


def run_until_stopped(config: RepartitionConfig, exit_at_end: bool = False, prog: str = "repartition") -> int:
    """Run the stage in this thread until SIGTERM/SIGINT (exit 0, after committing the batch in
    flight), the start-up end with `exit_at_end`, or a `RepartitionError` (one line, exit 2)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            log.info("%s received: committing the batch in flight and stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        Repartitioner(config).run(stop, exit_at_end=exit_at_end)
    except RepartitionError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m engine.operators.repartition`: the stage from flags alone (tests, scripts);
    `triggers repartition` runs it from the engine's settings."""
    from engine.operators.logs import setup_logging

    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = RepartitionConfig(brokers=args.brokers.split(","), from_topic=args.from_topic,
                                   to_topic=args.to_topic, group_id=args.group,
                                   transactional_id=args.transactional_id, batch_size=args.batch_size,
                                   extra=dict(args.extra))
    except ValueError as e:
        print(f"repartition: {e}", file=sys.stderr)
        return 2
    return run_until_stopped(config, args.exit_at_end)


if __name__ == "__main__":
    sys.exit(main())
