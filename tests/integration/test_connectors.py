"""Outbound connectors against the real Kafka broker and redis-server: what a sink writes is
read back whole, and an unreachable system makes the sink raise, in bounded time, instead of
dropping triggers; `deliver` (the relays' call) tells a refusal for good from an outage."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import msgspec
import pytest
import redis
from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AdminClient, NewTopic
from harness import LateProxy, free_port

from connectors.base import SinkError
from connectors.kafka.sink import KafkaSink, KafkaSinkConfig
from connectors.redis_stream import RedisStreamSink, RedisStreamSinkConfig
from engine.actions.trigger import HELD_OUT, SENT, SUPPRESSED, Trigger, trigger_id
from engine.events.decode import DeadLetter

PARTITIONS = 3


def _triggers(n: int) -> list[Trigger]:
    statuses = [(SENT, None), (HELD_OUT, None), (SUPPRESSED, "frequency_cap")]
    out = []
    for i in range(n):
        status, reason = statuses[i % 3]
        customer = f"c-{i % 7}"
        out.append(
            Trigger(
                trigger_id=trigger_id("cart-abandoned", customer, f"e-{i}"),
                rule_id="cart-abandoned",
                customer_id=customer,
                action="cart-reminder",
                channel="email",
                status=status,
                reason=reason,
                fired_at="2026-11-20T14:33:11.250Z",
                cause_event_id=f"e-{i}",
                payload={"sku": "A-77", "value": 129.8, "n": i},
            )
        )
    return out


# ---------------------------------------------------------------- Kafka


@pytest.fixture
def kafka_topic(kafka_bootstrap: str) -> Iterator[str]:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = f"te-test-connectors-{uuid.uuid4().hex[:12]}"
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(timeout=30)
    yield topic
    admin.delete_topics([topic])[topic].result(timeout=30)


def _consume(bootstrap: str, topic: str, n: int, timeout_s: float = 20.0) -> list[object]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"te-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[object] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            for msg in consumer.consume(n - len(got), timeout=0.5):
                if msg.error() is None:
                    got.append(msg)
                else:
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
        # anything beyond n would be a duplicate
        got.extend(m for m in consumer.consume(10, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    return got


def test_kafka_sink_delivers_every_trigger_with_key_and_trigger_id_header(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    triggers = _triggers(60)
    with KafkaSink(KafkaSinkConfig(brokers=[kafka_bootstrap], topic=kafka_topic)) as sink:
        sink.write_batch(triggers[:25])
        sink.write_batch([])
        sink.write_batch(triggers[25:])
        assert (sink.stats.delivered, sink.stats.retries) == (60, 0)
    messages = _consume(kafka_bootstrap, kafka_topic, len(triggers))
    assert len(messages) == len(triggers)
    decoder = msgspec.json.Decoder(Trigger)
    by_id = {t.trigger_id: t for t in triggers}
    partition_of: dict[str, set[int]] = {}
    for msg in messages:
        value = decoder.decode(msg.value())  # type: ignore[attr-defined]
        headers = dict(msg.headers())  # type: ignore[attr-defined]
        assert headers["trigger_id"] == value.trigger_id.encode()
        assert msg.key() == value.customer_id.encode()  # type: ignore[attr-defined]
        assert by_id.pop(value.trigger_id) == value
        partition_of.setdefault(value.customer_id, set()).add(msg.partition())  # type: ignore[attr-defined]
    assert by_id == {}  # every trigger arrived, none twice
    assert all(len(parts) == 1 for parts in partition_of.values())  # one customer, one partition


def test_kafka_sink_writes_items_without_customer_or_trigger_id(kafka_bootstrap: str, kafka_topic: str) -> None:
    dead = [DeadLetter("not JSON: x", f"kafka customer-events/0@{i}", "{") for i in range(3)]
    with KafkaSink(KafkaSinkConfig(brokers=[kafka_bootstrap], topic=kafka_topic)) as sink:
        sink.write_batch(dead)
    messages = _consume(kafka_bootstrap, kafka_topic, 3)
    assert sorted((msgspec.json.decode(m.value(), type=DeadLetter) for m in messages), key=lambda d: d.source) == dead  # type: ignore[attr-defined]
    assert all(m.key() is None and not m.headers() for m in messages)  # type: ignore[attr-defined]


def test_kafka_sink_unreachable_broker_raises_within_the_deadline() -> None:
    config = KafkaSinkConfig(brokers=["127.0.0.1:1"], topic="te-never", delivery_timeout_s=2.0)
    sink = KafkaSink(config)
    started = time.monotonic()
    with pytest.raises(SinkError) as info:
        sink.write_batch(_triggers(5))
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4.0
    assert info.value.count == 5
    assert "127.0.0.1:1" in str(info.value)
    assert "_MSG_TIMED_OUT" in info.value.first_error or "delivery report" in info.value.first_error
    assert sink.stats.delivered == 0 and sink.stats.retries >= 5  # re-produced at least once before giving up
    started = time.monotonic()
    sink.close()  # nothing is left queued: close does not wait out another timeout
    assert time.monotonic() - started < 1.0


def test_kafka_sink_reproduces_failed_deliveries_until_the_broker_is_back(
    kafka_bootstrap: str, kafka_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = LateProxy(kafka_bootstrap, delay_s=1.8)
    config = KafkaSinkConfig(
        brokers=[f"127.0.0.1:{proxy.port}"],
        topic=kafka_topic,
        delivery_timeout_s=6.0,  # 2 s per produce round: the first round times out, a later one delivers
        extra={"reconnect.backoff.max.ms": "200", "log_level": "2"},
    )
    triggers = _triggers(10)
    try:
        with caplog.at_level(logging.WARNING, logger="connectors.kafka"):
            with KafkaSink(config) as sink:
                sink.write_batch(triggers)
                assert sink.stats.delivered == 10
                assert sink.stats.retries >= 10  # every message of the first round was produced again
    finally:
        proxy.close()
    assert any("producing them again" in r.getMessage() for r in caplog.records)
    messages = _consume(kafka_bootstrap, kafka_topic, len(triggers))
    got = sorted(msgspec.json.decode(m.value(), type=Trigger).trigger_id for m in messages)  # type: ignore[attr-defined]
    assert got == sorted(t.trigger_id for t in triggers)  # each once: the timed-out round never reached Kafka


# ---------------------------------------------------------------- Redis stream


def test_redis_stream_sink_writes_entries_xrange_reads_back(redis_url: str, redis_client: redis.Redis) -> None:
    triggers = _triggers(40)
    with RedisStreamSink(RedisStreamSinkConfig(url=redis_url, stream="te:triggers")) as sink:
        sink.write_batch(triggers[:15])
        sink.write_batch([])
        sink.write_batch(triggers[15:])
        assert (sink.stats.delivered, sink.stats.retries) == (40, 0)
    entries = redis_client.xrange("te:triggers")
    assert len(entries) == 40
    decoder = msgspec.json.Decoder(Trigger)
    back = [decoder.decode(fields[b"data"]) for _, fields in entries]
    assert back == triggers  # in write order
    assert [fields[b"trigger_id"].decode() for _, fields in entries] == [t.trigger_id for t in triggers]


def test_redis_stream_sink_trims_approximately_to_maxlen(redis_url: str, redis_client: redis.Redis) -> None:
    triggers = _triggers(100)
    with RedisStreamSink(RedisStreamSinkConfig(url=redis_url, stream="te:trim", maxlen=50)) as sink:
        for _ in range(20):
            sink.write_batch(triggers)
    length = redis_client.xlen("te:trim")
    assert 50 <= length < 2000 / 4  # trimmed (approximately: whole macro nodes), not all 2000 kept
    assert sink.stats.delivered == 2000


def test_redis_stream_sink_unreachable_server_raises_after_retry_for(caplog: pytest.LogCaptureFixture) -> None:
    config = RedisStreamSinkConfig(url=f"redis://127.0.0.1:{free_port()}/0", retry_for_s=1.0)
    with caplog.at_level(logging.WARNING, logger="connectors.redis_stream"):
        with RedisStreamSink(config) as sink:
            started = time.monotonic()
            with pytest.raises(SinkError) as info:
                sink.write_batch(_triggers(3))
            elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0
    assert info.value.count == 3
    assert "ConnectionError" in info.value.first_error
    assert sink.stats.retries >= 1 and sink.stats.delivered == 0
    warnings = [r for r in caplog.records if r.name == "connectors.redis_stream" and r.levelno == logging.WARNING]
    assert len(warnings) == sink.stats.retries


def test_redis_stream_sink_does_not_retry_an_error_redis_answers(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.set("te:not-a-stream", "x")
    with RedisStreamSink(RedisStreamSinkConfig(url=redis_url, stream="te:not-a-stream")) as sink:
        started = time.monotonic()
        with pytest.raises(SinkError, match="WRONGTYPE"):
            sink.write_batch(_triggers(2))
        assert time.monotonic() - started < 1.0
        assert sink.stats.retries == 0


# ---------------------------------------------------------------- deliver: the relays' call


def test_kafka_deliver_refuses_a_message_too_large_and_delivers_the_rest(kafka_bootstrap: str,
                                                                         kafka_topic: str) -> None:
    triggers = _triggers(4)
    triggers[2].payload["blob"] = "x" * 200_000    # past message.max.bytes below
    with KafkaSink(KafkaSinkConfig(brokers=[kafka_bootstrap], topic=kafka_topic,
                                   extra={"message.max.bytes": "100000"})) as sink:
        failures = sink.deliver(triggers)
    assert [(f.index, f.permanent) for f in failures] == [(2, True)] and "MSG_SIZE_TOO_LARGE" in failures[0].reason
    assert sink.stats.delivered == 3
    got = {msgspec.json.decode(m.value(), type=Trigger).trigger_id   # type: ignore[attr-defined]
           for m in _consume(kafka_bootstrap, kafka_topic, 3)}
    assert got == {t.trigger_id for i, t in enumerate(triggers) if i != 2}


def test_kafka_deliver_to_an_unreachable_broker_fails_every_message_transiently() -> None:
    with KafkaSink(KafkaSinkConfig(brokers=["127.0.0.1:1"], topic="te-never", delivery_timeout_s=1.5)) as sink:
        started = time.monotonic()
        failures = sink.deliver(_triggers(3))
        assert time.monotonic() - started < 3.0      # one attempt: librdkafka's message timeout, 0.5 s
    assert [(f.index, f.permanent) for f in failures] == [(0, False), (1, False), (2, False)]
    assert "_MSG_TIMED_OUT" in failures[0].reason and sink.stats.waiting_since is not None


def test_redis_stream_deliver_tells_an_outage_from_a_refusal(redis_url: str, redis_client: redis.Redis) -> None:
    with RedisStreamSink(RedisStreamSinkConfig(url=f"redis://127.0.0.1:{free_port()}/0")) as down:
        assert {(f.index, f.permanent) for f in down.deliver(_triggers(2))} == {(0, False), (1, False)}
    redis_client.set("te:not-a-stream", "x")
    with RedisStreamSink(RedisStreamSinkConfig(url=redis_url, stream="te:not-a-stream")) as wrong:
        failures = wrong.deliver(_triggers(2))
    assert all(f.permanent and "WRONGTYPE" in f.reason for f in failures) and len(failures) == 2
    with RedisStreamSink(RedisStreamSinkConfig(url=redis_url, stream="te:ok")) as ok:
        assert ok.deliver(_triggers(2)) == [] and redis_client.xlen("te:ok") == 2
