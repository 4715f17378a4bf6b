"""The real services started by scripts/services.sh: Kafka keeps per-customer order when keyed
by customer, and RedisStore round-trips states and offsets with one MGET / one MSET."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from engine.state.customer import CustomerState, Timer, decode_state, encode_state
from engine.state.redis import RedisStore

N_EVENTS = 2_000
PARTITIONS = 4


class _Event(msgspec.Struct):
    event_id: str
    customer_id: str


def _read_events(shared_data: Path, n: int) -> list[tuple[bytes, _Event]]:
    decoder = msgspec.json.Decoder(_Event)
    with open(shared_data / "online-retail-orders.jsonl", "rb") as f:
        lines = [line.rstrip(b"\n") for line in islice(f, n)]
    return [(line, decoder.decode(line)) for line in lines]


# ---------------------------------------------------------------- Kafka


@pytest.fixture
def kafka_topic(kafka_bootstrap: str) -> Any:
    """A fresh topic with 4 partitions, deleted afterwards."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = f"te-test-services-{uuid.uuid4().hex[:12]}"
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    futures[topic].result(timeout=30)
    yield topic
    admin.delete_topics([topic])[topic].result(timeout=30)


def test_kafka_keyed_events_arrive_once_in_per_customer_order(
    kafka_bootstrap: str, kafka_topic: str, shared_data: Path
) -> None:
    events = _read_events(shared_data, N_EVENTS)
    assert len(events) == N_EVENTS

    # Idempotence: retries can neither duplicate nor reorder a partition's messages.
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    delivered: list[tuple[str, int]] = []  # (customer_id, partition), in delivery order
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.key().decode(), msg.partition()))

    for raw, event in events:
        producer.produce(kafka_topic, key=event.customer_id.encode(), value=raw, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still in the producer queue after 30 s"
    assert errors == []
    assert len(delivered) == N_EVENTS

    # Keyed by customer: one partition per customer, and the customers spread over partitions.
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for customer_id, partition in delivered:
        partitions_of[customer_id].add(partition)
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len({p for ps in partitions_of.values() for p in ps}) == PARTITIONS

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{kafka_topic}-reader",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(kafka_topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    received: list[tuple[int, _Event]] = []
    decoder = msgspec.json.Decoder(_Event)
    try:
        deadline = time.monotonic() + 60
        # Read until all arrived, then one more second, so that a duplicate would show.
        quiet_until = None
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                assert msg.error() is None, msg.error()
                event = decoder.decode(msg.value())
                assert msg.key().decode() == event.customer_id
                received.append((msg.partition(), event))
            if quiet_until is None and len(received) >= N_EVENTS:
                quiet_until = time.monotonic() + 1.0
    finally:
        consumer.close()

    sent_ids = Counter(e.event_id for _, e in events)
    got_ids = Counter(e.event_id for _, e in received)
    assert got_ids == sent_ids, f"missing: {sent_ids - got_ids}, extra: {got_ids - sent_ids}"
    assert len(received) == N_EVENTS

    sent_order: dict[str, list[str]] = defaultdict(list)
    for _, e in events:
        sent_order[e.customer_id].append(e.event_id)
    got_order: dict[str, list[str]] = defaultdict(list)
    for _, e in received:
        got_order[e.customer_id].append(e.event_id)
    assert got_order == sent_order
    assert len(sent_order) > 100  # a real mix of customers, not one hot key


# ---------------------------------------------------------------- Redis


def _customer_state(i: int) -> CustomerState:
    return CustomerState(
        aggs={
            "lifetime_spend": 12.5 * i,
            "purchases": i,
            "interest": {"shoes": 1.0 / (i + 1), "bags": 0.25},
            "views_7d": [[1_700_000_000_000 + i, 2]],
        },
        profile={"email": f"c{i}@example.com", "timezone": "Europe/London", "consent": {"email": i % 2 == 0}},
        armed=["vip-5000"] if i % 3 == 0 else [],
        last_contact={"cart-abandoned": 1_700_000_000_000 + i},
        timers=[
            Timer(
                due=1_700_000_600_000 + i,
                rule="cart-abandoned",
                step=0,
                key="",
                cause=f"e-{i}",
                cause_ts=1_700_000_000_000 + i,
                ctx={"sku": f"A-{i}", "cart_value": 9.5 * i},
            ),
            Timer(due=1_700_100_000_000, rule="welcome-series", step=1, key="", cause=f"s-{i}", cause_ts=1),
        ],
        last_ts=1_700_000_000_000 + i,
        seen=[i, i + 1, i + 2],
    )


class _CommandLog:
    """Records the Redis commands a client sends, by wrapping its execute_command."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[Any, ...]] = []
        original = client.execute_command

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(client, "execute_command", execute_command)

    def names(self) -> list[str]:
        return [str(call[0]).upper() for call in self.calls]


@pytest.fixture
def store(redis_url: str, redis_client: redis.Redis) -> Any:
    # redis_client flushed the test database; a unique prefix guards against anything else in it.
    s = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}")
    yield s
    s.close()


def test_redis_store_round_trips_states_and_offsets(
    store: RedisStore, redis_client: redis.Redis, redis_url: str
) -> None:
    states = {f"c{i}": _customer_state(i) for i in range(300)}
    offsets = {"orders-0": 1_234, "orders-1": 0, "orders-2": 98_765_432_100, "orders-3": 7}
    store.save_many(states, offsets)

    wanted = list(states) + ["never-seen-1", "never-seen-2"]
    loaded = store.load_many(wanted)
    assert set(loaded) == set(states)
    assert loaded == states
    assert store.load_offsets() == offsets

    # Another client (a restarted engine) sees the same thing: it lives in Redis, not in the store object.
    fresh = RedisStore(redis_url, prefix=store.prefix)
    try:
        assert fresh.load_many(["c42", "nobody"]) == {"c42": states["c42"]}
        assert fresh.load_offsets() == offsets
    finally:
        fresh.close()

    # The key layout is a contract: state keys hash-tagged by customer, a partition's by partition.
    assert decode_state(redis_client.get(f"{store.prefix}:s:{{c7}}")) == states["c7"]
    assert redis_client.get(f"{store.prefix}:o:{{orders-2}}") == b"98765432100"


def test_redis_store_outbox_commits_with_the_states_numbered_read_after_a_cursor_and_trimmed(
    store: RedisStore, redis_client: redis.Redis
) -> None:
    """The outbox contract of `engine.state.store`, as the in-memory store keeps it (tests/unit/test_outbox.py)."""
    from engine.state.outbox import ItemKind, OutboxEntry, OutboxTail
    from engine.state.store import StateLost

    def entries(n: int, first: int = 0) -> list[OutboxEntry]:
        return [OutboxEntry(ItemKind.TRIGGER, "sent", b'{"trigger_id": "t%d"}' % i) for i in range(first, first + n)]

    p = "orders-0"
    image = encode_state(_customer_state(1))
    assert store.outbox_tail(p) == OutboxTail(0, 0) and store.read_outbox(p, 0, 10) == ([], OutboxTail(0, 0))
    assert store.commit(p, {"c1": image}, 5, {"c1": None}, outbox=entries(3)) == OutboxTail(3, 3)
    assert store.commit(p, {}, 6, {}, expected_offset=5) is None
    with pytest.raises(StateLost):
        store.commit(p, {"c1": image}, 9, {}, expected_offset=1, outbox=entries(2, 3))
    assert store.outbox_tail(p) == OutboxTail(3, 3)                         # nothing written by the refused one
    assert store.commit(p, {}, 7, {}, expected_offset=6, outbox=entries(2, 3)) == OutboxTail(5, 5)
    got, tail = store.read_outbox(p, 1, 3)
    assert [e.seq for e in got] == [2, 3, 4] and tail == OutboxTail(5, 5) and got[0].data == b'{"trigger_id": "t1"}'
    assert redis_client.xrange(store.outbox_key(p))[0][0] == b"1-0"       # stream ids are <seq>-0

    store.save_cursor(p, "kafka", 4, ["kafka", "webhook"])
    assert store.outbox_tail(p).length == 5                                  # the webhook has passed nothing
    store.save_cursor(p, "webhook", 2, ["kafka", "webhook"])
    assert store.outbox_tail(p) == OutboxTail(5, 3) and store.read_outbox(p, 0, 9)[0][0].seq == 3
    store.save_cursor(p, "webhook", 5, ["kafka", "webhook"])
    store.save_cursor(p, "kafka", 5, ["kafka", "webhook"])
    assert store.outbox_tail(p) == OutboxTail(5, 0) and store.load_cursors(p) == {"kafka": 5, "webhook": 5}
    assert store.commit(p, {}, 8, {}, expected_offset=7, outbox=entries(1)) == OutboxTail(6, 1)   # numbering goes on
    assert store.commit(p, {}, 9, {}, expected_offset=8, outbox=entries(3)) == OutboxTail(9, 4)
    got, tail = store.advance(p, "kafka", 7, ["kafka"], 5)                   # save, trim, read on: one script
    assert [e.seq for e in got] == [8, 9] and tail == OutboxTail(9, 2) and store.load_cursors(p)["kafka"] == 7


def test_redis_store_renames_the_keys_of_an_engine_before_the_outbox(store: RedisStore,
                                                                     redis_client: redis.Redis) -> None:
    redis_client.set(f"{store.prefix}:o:orders-1", 41)
    redis_client.zadd(f"{store.prefix}:t:orders-1", {"c9": 1_000})
    assert store.load_offsets() == {"orders-1": 41}                          # seen before the rename too
    assert store.load_offset("orders-1") == 41
    assert redis_client.exists(f"{store.prefix}:o:orders-1", f"{store.prefix}:t:orders-1") == 0
    assert store.due_customers("orders-1", 2_000) == ["c9"]
    store.commit("orders-1", {}, 42, {}, expected_offset=41)                 # the state-loss check holds
    assert store.load_offset("orders-1") == 42 and store.load_offsets() == {"orders-1": 42}


def test_redis_store_moves_the_clock_of_an_engine_before_the_hash_tags(store: RedisStore,
                                                                       redis_client: redis.Redis) -> None:
    """The event-time clock's key gained the hash tag with the outbox; the old one is moved, so a
    restart after the upgrade still re-reads the events held back for ordering."""
    from engine.state.store import PartitionClock, encode_clock

    redis_client.set(f"{store.prefix}:c:orders-3", encode_clock(PartitionClock(1_000, 1_500, 7)))
    assert store.load_clock("orders-3") == PartitionClock(1_000, 1_500, 7)
    assert redis_client.exists(f"{store.prefix}:c:orders-3") == 0
    assert store.load_clock("orders-3") == PartitionClock(1_000, 1_500, 7)


def test_redis_store_unknown_customers_and_empty_batches(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.load_many(["a", "b"]) == {}
    assert store.load_offsets() == {}
    log = _CommandLog(store.client, monkeypatch)
    assert store.load_many([]) == {}
    store.save_many({}, None)
    store.save_many({}, {})
    assert log.calls == []  # nothing to do, no round trip


def test_redis_store_writes_a_batch_with_one_mset_and_reads_it_with_one_mget(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save_many({"c1": _customer_state(1)}, {"orders-0": 1})
    states = {f"c{i}": _customer_state(i) for i in range(1, 201)}
    states["c1"] = _customer_state(1001)  # overwrites
    offsets = {"orders-0": 501, "orders-1": 77}

    log = _CommandLog(store.client, monkeypatch)
    store.save_many(states, offsets)
    assert log.names() == ["MSET"], "states and offsets must commit in one atomic MSET"
    args = log.calls[0][1:]
    written_keys = {args[i].decode() if isinstance(args[i], bytes) else args[i] for i in range(0, len(args), 2)}
    assert written_keys == {store.state_key(c) for c in states} | {store.offset_key(p) for p in offsets}

    log.calls.clear()
    loaded = store.load_many(list(states) + ["nobody"])
    assert log.names() == ["MGET"]
    assert loaded == states
    assert loaded["c1"].aggs["purchases"] == 1001
    assert store.load_offsets() == offsets
