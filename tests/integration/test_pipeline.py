"""The core on the real services: events through Kafka, evaluated in batches with customer
state loaded from and saved to Redis (with the source offsets), give the same triggers and
the same final states as a backtest of the same file."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from engine.core.evaluate import Evaluator
from engine.events.decode import EventDecoder, read_jsonl
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile
from engine.state.customer import encode_state
from engine.state.redis import RedisStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl"
PARTITIONS = 4


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    name = f"events-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for f in admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)]).values():
        f.result(timeout=30)
    yield name
    admin.delete_topics([name])


def produce(bootstrap: str, topic: str, lines: list[tuple[bytes, str]], decoder: EventDecoder) -> None:
    failures: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for raw, _ in lines:
        ev = decoder.decode(raw, "sample")
        producer.produce(topic, key=ev.customer_id.encode(), value=raw,
                         on_delivery=lambda err, msg: err and failures.append(err))
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []


def test_kafka_to_redis_state_matches_backtest(kafka_bootstrap, redis_url, redis_client, topic):
    rules = load_and_compile(ROOT / "rules")
    decoder = EventDecoder()
    lines = list(read_jsonl(SAMPLE))
    produce(kafka_bootstrap, topic, lines, decoder)

    # Reference: the backtest of the file, drained (the pipeline below jumps its clock past every deadline).
    expected: list = []
    replay = Replay(rules, expected.extend, drain=True)
    events, _ = decoder.decode_batch(lines)
    replay.feed(events)
    horizon = replay.session.clock
    replay.finish()

    # The pipeline: consume in batches, load the batch's customers once, evaluate, save
    # states and offsets in one atomic write.
    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:6]}")
    evaluator = Evaluator(rules)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "test", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got: list = []
    eof: set[int] = set()
    while len(eof) < PARTITIONS:
        msgs = consumer.consume(500, timeout=5)
        assert msgs, "no messages from Kafka within 5 s"
        batch, offsets = [], {}
        for m in msgs:
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                eof.add(m.partition())
                continue
            batch.append((m.value(), f"kafka {topic}/{m.partition()}@{m.offset()}"))
            offsets[str(m.partition())] = m.offset() + 1
        evs, dead = decoder.decode_batch(batch)
        assert dead == []
        states = store.load_many({e.customer_id for e in evs})
        for e in evs:
            states[e.customer_id] = evaluator.on_event(states.get(e.customer_id), e, got)
        if evs:
            store.save_many(states, offsets)
    consumer.close()

    # End of input: the same clock jump as the drained backtest.
    customers = {e.customer_id for e in events}
    states = store.load_many(customers)
    for cid, state in states.items():
        evaluator.on_time(state, cid, 2**62, got, recurring_until=horizon)
    store.save_many(states)

    assert sorted(t.trigger_id for t in got) == sorted(t.trigger_id for t in expected)
    assert sorted(map(encode_state, got_states := store.load_many(customers).values())) == \
        sorted(encode_state(s) for s in replay.store.states.values())
    assert len(got_states) == len(customers)
    offsets = store.load_offsets()
    assert sum(offsets.values()) == len(lines)
