"""Live-path edge cases: offsets that would rewind, index entries without a state."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaException

from engine.events import Event
from engine.evaluate import Evaluator
from engine.operators.log import KafkaPartitionLog, MemoryLog
from engine.operators.partition import Batch, PartitionWorker
from engine.rules.compiler import load_and_compile
from engine.rules.reload import LiveRules
from engine.state.customer import encode_state
from engine.state.redis import RedisStore
from harness import ROOT, create_topic, produce, unique


def test_a_committed_offset_beyond_the_end_is_refused(kafka_bootstrap):
    topic = create_topic(kafka_bootstrap, unique("short"), partitions=1)
    produce(kafka_bootstrap, topic, [b'{"customer_id": "c1"}'] * 3)
    with pytest.raises(KafkaException, match="beyond the partition's end 3"):
        KafkaPartitionLog([kafka_bootstrap], topic, 0, start=100)
    log = KafkaPartitionLog([kafka_bootstrap], topic, 0, start=2)
    assert not log.end_reached()
    log.close()


def test_index_entries_without_a_state_are_removed(redis_url, redis_client):
    rules = load_and_compile(ROOT / "rules")
    store = RedisStore(redis_url, f"edge{uuid.uuid4().hex[:6]}")
    state = Evaluator(rules).on_event(None, Event("e1", "page_view", "ghost", 1_000, {}), [])
    store.commit("p-0", {"ghost": encode_state(state)}, 1, {"ghost": 5_000})
    redis_client.delete(store.state_key("ghost"))             # gone: erased, or evicted by Redis
    worker = PartitionWorker(MemoryLog("p-0", []), store, LiveRules(ROOT / "rules", rules, watch=False), 1)
    worker.process(Batch(worker, [], True, 10_000, True))
    worker.commit(1)
    assert redis_client.zcard(store.deadline_key("p-0")) == 0
