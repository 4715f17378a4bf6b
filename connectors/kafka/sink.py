"""Kafka sink: triggers (or dead letters) to a Kafka topic, never dropped silently.

Bytewax's own `KafkaSink` ignores delivery reports, so a message that fails for good (a
broker down past `message.timeout.ms`) is lost without a word (docs/bytewax.md §6). This sink
waits for the delivery report of every message of a batch before `write_batch` returns — or,
with `wait_for_delivery = false`, before `settle()` returns, so that a caller that only needs
delivery at its own checkpoints does not wait per batch:

- the producer is idempotent (`enable.idempotence`, `acks=all`), so librdkafka's own retries
  can neither duplicate nor reorder a partition's messages;
- a message whose report is an error is produced again, after a backoff (`connectors.base.Backoff`), until
  it is delivered or `delivery_timeout_s` has passed since the batch began; then the batch
  raises `SinkError`. A batch that raises is not acknowledged, so the restarted dataflow
  replays it: delivery is at least once, and receivers de-duplicate by the `trigger_id`
  header. A re-produced message goes after the batch's other messages, so only across such a
  retry can a customer's triggers arrive out of order.
- errors that no retry can fix (message too large, not authorized, a fatal producer error)
  raise at once rather than spin until the deadline.

In the live engine the sink's relay calls `deliver` instead: every item produced once, the call
returns when every delivery report is in (librdkafka retries within `message.timeout.ms`, a
third of `delivery_timeout_s`), with a `Failure` per message not delivered: permanent for what
the broker refuses of that message (`_REFUSED`: too large, invalid), transient otherwise (the
broker down, a timeout, and also refused credentials or ACLs, which an operator fixes), which
the relay produces again later.

Record layout: key = the item's `customer_id` (utf-8) when it has one, so one customer's
triggers land in one partition, in order; value = the item as JSON; header `trigger_id` when
the item has one, so consumers can de-duplicate without parsing the value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.base import DEFAULT_STATUSES, Backoff, Failure, Sink, SinkError, Status

__all__ = ["KafkaSinkConfig", "KafkaSink"]

log = logging.getLogger("connectors.kafka")
_CLIENT_LOG = "kafka"   # librdkafka's own lines, unless the caller passes a logger

_BACKOFF_BASE_S = 0.1
_BACKOFF_CAP_S = 5.0
_POLL_S = 0.1           # the longest a wait for delivery reports sleeps between two looks
_STALL_REPORT_S = 5.0   # deliveries still waited for after this long are reported (health, log)
_ATTEMPTS_PER_DEADLINE = 3
"""librdkafka's per-message timeout is a third of `delivery_timeout_s`, so a batch gets about
three produce rounds (each with librdkafka's internal retries) before its deadline."""

_PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError._INVALID_ARG,
        KafkaError._FATAL,
    }
)

_REFUSED = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD})
"""What the broker refuses of one message whatever happens: `deliver` reports these permanent.
The other `_PERMANENT` errors are about the setup (credentials, ACLs, the topic): a relay keeps
trying, with the error on /healthz, until an operator fixes it, rather than dead-letter everything."""

# As confluent_kafka types them: what `produce` takes and a delivery report's message gives back
# (this sink produces only lists of (str, bytes) and bytes values).
_Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None
_Record = tuple[bytes | None, bytes | None, _Headers]  # key, value, headers


class KafkaSinkConfig(msgspec.Struct, forbid_unknown_fields=True):
    """`brokers` is the bootstrap list, `topic` where items go.

    `extra` holds librdkafka producer settings (`security.protocol`, `sasl.*`, `linger.ms`,
    `message.timeout.ms` …), applied last so they can override the defaults.
    `delivery_timeout_s` bounds how long one batch keeps retrying before it raises; 0 means
    never give up: wait for the broker (logging every few seconds). In a live run it bounds one
    attempt of the relay's (librdkafka's own retries, a third of it): the relay then produces the
    batch again, for as long as the broker is down, and a stop waits at most that long.
    """

    brokers: Annotated[list[str], msgspec.Meta(description="bootstrap servers, host:port")]
    topic: Annotated[str, msgspec.Meta(description="where triggers go, keyed by customer id, trigger_id header")]
    extra: Annotated[dict[str, str], msgspec.Meta(
        description="librdkafka producer settings, applied last: security.protocol, sasl.*, ssl.*, linger.ms")] = {}
    delivery_timeout_s: Annotated[float, msgspec.Meta(
        description="how long one delivery attempt may take (0: wait for the broker for ever); the relay then "
                    "tries again")] = 30.0
    # False: `write_batch` returns once the items are queued, and the caller calls `settle()`
    # before it relies on them being delivered (standalone use; a live run's relay calls `deliver`).
    wait_for_delivery: Annotated[bool, msgspec.Meta(
        description="the sink used on its own: wait for each batch's delivery reports (a live run's relay "
                    "always does)")] = True
    statuses: Annotated[tuple[Status, ...], msgspec.Meta(
        description="which triggers go here: sent only unless it lists held_out, suppressed")] = DEFAULT_STATUSES
    dead_letter_path: Annotated[str | None, msgspec.Meta(
        description="where a live run writes the triggers this topic refuses for good (message too "
                    "large, not authorized); unset: kafka-dead-letters.jsonl")] = None

    def __post_init__(self) -> None:
        if not self.brokers:
            raise ValueError("brokers must name at least one host:port")
        if not self.topic:
            raise ValueError("topic must not be empty")
        if self.delivery_timeout_s < 0:
            raise ValueError(f"delivery_timeout_s must be 0 (wait forever) or positive, got {self.delivery_timeout_s}")


class _Round:
    """The delivery reports of one `write_batch`. A report that arrives after its batch has
    raised lands in that batch's `_Round`, which nobody reads any more, so it cannot be
    mistaken for a report of the next batch."""

    __slots__ = ("outstanding", "delivered", "failures")

    def __init__(self) -> None:
        self.outstanding = 0
        self.delivered = 0
        self.failures: list[tuple[KafkaError, _Record]] = []

    def report(self, err: KafkaError | None, msg: Message) -> None:
        self.outstanding -= 1
        if err is None:
            self.delivered += 1
        else:
            self.failures.append((err, (msg.key(), msg.value(), msg.headers())))


class KafkaSink(Sink):
    """Writes structs to one topic and returns only when Kafka has acknowledged all of them.

    One sink per worker (a Bytewax sink partition), not shared between threads. `stats`:
    `delivered` (messages acknowledged), `retries` (messages produced again after a failed
    delivery), `failed` (messages of batches that raised), `waiting_since`/`last_error`
    while deliveries fail. `logger` receives librdkafka's own log lines (default: `kafka`).
    """

    def __init__(self, config: KafkaSinkConfig, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.config = config
        self.name = f"kafka sink (topic {config.topic!r} on {','.join(config.brokers)})"
        self._encoder = msgspec.json.Encoder()
        self._client_error: KafkaError | None = None
        self._pending: list[tuple[_Round, float]] = []
        settings: dict[str, Any] = {
            "bootstrap.servers": ",".join(config.brokers),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,   # a batch is produced whole, then waited for: lingering only delays it
            # 0 = librdkafka never expires a message: it keeps retrying until the broker is back
            "message.timeout.ms": 0 if not config.delivery_timeout_s else max(
                100, int(config.delivery_timeout_s * 1000 / _ATTEMPTS_PER_DEADLINE)
            ),
            "error_cb": self._on_client_error,
            "logger": logger or logging.getLogger(_CLIENT_LOG),
        }
        settings.update(config.extra)
        self._producer = Producer(settings)

    def _on_client_error(self, err: KafkaError) -> None:
        """Client-level errors (broker unreachable, authentication) explain why deliveries
        fail; keep the latest for the `SinkError` message. librdkafka logs them itself."""
        self._client_error = err

    def write_batch(self, items: Sequence[msgspec.Struct]) -> None:
        """Produce every item; unless `wait_for_delivery` is off, also wait for every delivery
        report (`settle`), raising `SinkError` when some are still not delivered after
        `delivery_timeout_s` or fail for good."""
        self.send(items)
        if self.config.wait_for_delivery:
            self.settle()
        else:
            self._producer.poll(0)   # serve reports that are in; never block

    def deliver(self, items: Sequence[msgspec.Struct]) -> list[Failure]:
        """Produce every item once and wait for all their delivery reports (see module docstring)."""
        results: list[KafkaError | None] = [None] * len(items)
        outstanding = [0]

        def report(index: int) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                outstanding[0] -= 1
                results[index] = err
            return on_delivery

        produce = self._producer.produce
        topic = self.config.topic
        rejected: dict[int, KafkaError] = {}
        for i, (key, value, headers) in enumerate(self._records(items)):
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=report(i))
                    outstanding[0] += 1
                    break
                except BufferError:   # librdkafka's queue is full: serve reports to make room
                    self._producer.poll(0.1)
                except KafkaException as exc:   # rejected before queueing, e.g. message too large
                    rejected[i] = exc.args[0]
                    break
        # poll() returns as soon as a report is served (flush() wakes up far later: 13 ms against
        # 3 ms for a batch of 20 on one machine), so a small batch costs about one round trip.
        started = reported = time.monotonic()
        while outstanding[0] > 0:
            self._producer.poll(_POLL_S)
            now = time.monotonic()
            if now - reported >= _STALL_REPORT_S:
                reported = now
                self.stats.failing(f"{outstanding[0]} message(s) waiting for the broker"
                                   + (f": {_describe(self._client_error)}" if self._client_error else ""))
                log.warning("%s: %d message(s) waiting for the broker for %.0f s", self.name, outstanding[0],
                            now - started)
        failures: list[Failure] = []
        for i, err in enumerate(results):
            err = rejected.get(i, err)
            if err is None:
                continue
            failures.append(Failure(i, _describe(err), err.code() in _REFUSED))
        self.stats.delivered += len(items) - len(failures)
        if any(not f.permanent for f in failures):
            self.stats.failing(failures[0].reason)
        else:
            self.stats.recovered()
        return failures

    def _records(self, items: Sequence[msgspec.Struct]) -> list[_Record]:
        encode = self._encoder.encode
        records: list[_Record] = []
        for item in items:
            customer_id = getattr(item, "customer_id", None)
            tid = getattr(item, "trigger_id", None)
            records.append(
                (
                    customer_id.encode() if isinstance(customer_id, str) else None,
                    encode(item),
                    [("trigger_id", tid.encode())] if isinstance(tid, str) else None,
                )
            )
        return records

    def send(self, items: Sequence[msgspec.Struct]) -> None:
        """Hand the items to the producer; their delivery is checked by the next `settle`."""
        if not items:
            return
        deadline = time.monotonic() + (self.config.delivery_timeout_s or float("inf"))
        batch = _Round()
        self._produce_all(self._records(items), batch, batch.report, deadline)
        self._pending.append((batch, deadline))

    def settle(self) -> None:
        """Wait until everything sent so far is delivered: failed messages are produced again
        with backoff until their batch's deadline, then `SinkError`."""
        pending, self._pending = self._pending, []
        for batch, deadline in pending:
            self._settle(batch, deadline)

    def _settle(self, batch: _Round, deadline: float) -> None:
        backoff = Backoff(_BACKOFF_BASE_S, _BACKOFF_CAP_S)
        while True:
            if deadline == float("inf"):   # wait for the broker as long as it takes, saying so
                waited = 0.0
                while self._producer.flush(5.0) and batch.outstanding > 0:
                    waited += 5.0
                    self.stats.failing(f"{batch.outstanding} message(s) waiting for the broker"
                                       + (f": {_describe(self._client_error)}" if self._client_error else ""))
                    log.warning("%s: %d message(s) waiting for the broker for %.0f s%s", self.name,
                                batch.outstanding, waited,
                                f" (last client error: {_describe(self._client_error)})" if self._client_error else "")
            else:
                self._producer.flush(max(0.0, deadline - time.monotonic()))
            if batch.outstanding > 0:  # the deadline passed with reports still missing
                self._fail(batch, deadline)
            if not batch.failures:
                self.stats.delivered += batch.delivered
                batch.delivered = 0
                self.stats.recovered()
                return
            permanent = [f for f in batch.failures if f[0].fatal() or f[0].code() in _PERMANENT]
            if permanent:
                self._fail(batch, deadline, permanent[0][0])
            delay = backoff.next_delay()
            if time.monotonic() + delay >= deadline:
                self._fail(batch, deadline)
            first = batch.failures[0][0]
            self.stats.failing(_describe(first))
            log.warning(
                "%s: %d message(s) not delivered (%s), producing them again in %.2f s (retry %d)",
                self.name, len(batch.failures), _describe(first), delay, backoff.attempt,
            )
            time.sleep(delay)
            records = [record for _, record in batch.failures]
            batch.failures = []
            self.stats.retries += len(records)
            self._produce_all(records, batch, batch.report, deadline)

    def _produce_all(
        self,
        records: list[_Record],
        batch: _Round,
        report: Callable[[KafkaError | None, Message], None],
        deadline: float,
    ) -> None:
        produce = self._producer.produce
        topic = self.config.topic
        for key, value, headers in records:
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=report)
                    batch.outstanding += 1
                    break
                except BufferError:
                    # librdkafka's queue is full: serve reports to make room, up to the deadline.
                    if time.monotonic() >= deadline:
                        batch.failures.append((KafkaError(KafkaError._QUEUE_FULL), (key, value, headers)))
                        break
                    self._producer.poll(0.1)
                except KafkaException as exc:  # rejected before queueing, e.g. message too large
                    batch.failures.append((exc.args[0], (key, value, headers)))
                    break

    def _fail(self, batch: _Round, deadline: float, cause: KafkaError | None = None) -> NoReturn:
        """Raise `SinkError` for what this batch could not deliver; drop what is still queued
        locally, since the batch will be replayed anyway and a late copy only duplicates."""
        self.stats.delivered += batch.delivered
        count = batch.outstanding + len(batch.failures)
        self.stats.failed += count
        if cause is not None:
            first = _describe(cause)
        elif batch.failures:
            first = _describe(batch.failures[0][0])
        else:
            first = f"no delivery report within delivery_timeout_s={self.config.delivery_timeout_s}s"
        if self._client_error is not None and cause is None:
            first += f" (last client error: {_describe(self._client_error)})"
        try:
            self._producer.purge(in_queue=True, in_flight=False, blocking=False)
            self._producer.poll(0)
        except KafkaException:  # a fatal producer cannot purge; nothing more to lose
            pass
        raise SinkError(self.name, count, first)

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for queued messages; returns how many are still undelivered."""
        return self._producer.flush(self.config.delivery_timeout_s if timeout_s is None else timeout_s)

    def close(self) -> None:
        """Flush what is still queued. After a successful `write_batch` nothing is; after one
        that raised, in-flight copies may still go out (harmless: the batch is replayed)."""
        self._pending = []
        remaining = self.flush()
        if remaining:
            log.warning("%s: closed with %d message(s) still undelivered", self.name, remaining)



def _describe(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"
