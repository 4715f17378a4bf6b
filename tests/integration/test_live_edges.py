"""Live-path edge cases: offsets that would rewind, index entries without a state."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaException
from harness import ROOT, create_topic, produce, unique

from connectors.kafka.source import KafkaPartitionLog
from engine.core.evaluate import Evaluator
from engine.events.model import Event
from engine.operators.partition import Batch, PartitionWorker
from engine.rules.compiler import load_and_compile
from engine.rules.reload import LiveRules
from engine.state.customer import encode_state
from engine.state.outbox import decode_item
from engine.state.redis import RedisStore
from engine.testing import MemoryLog


def test_a_committed_offset_beyond_the_end_is_refused(kafka_bootstrap):
    topic = create_topic(kafka_bootstrap, unique("short"), partitions=1)
    produce(kafka_bootstrap, topic, [b'{"customer_id": "c1"}'] * 3)
    with pytest.raises(KafkaException, match="beyond the partition's end 3"):
        KafkaPartitionLog([kafka_bootstrap], topic, 0, start=100)
    log = KafkaPartitionLog([kafka_bootstrap], topic, 0, start=2)
    assert not log.end_reached()
    log.close()


def _read_up_to(log: KafkaPartitionLog, n: int, within_s: float = 10.0) -> int:
    got, deadline = 0, time.monotonic() + within_s
    while got < n and time.monotonic() < deadline:
        got += len(log.read(n - got))
    return got


def test_the_lag_is_read_without_waiting_for_the_broker(kafka_bootstrap):
    """The source asks for its lag every few seconds per partition, on the dataflow thread. Asked
    of the broker, the answer waited behind the fetch in flight, which the broker holds up to
    `fetch.wait.max.ms` (500 ms) at the end of a partition: 450-500 ms per call, the engine
    stalled meanwhile (a tenth of a 100,000-event run through Kafka). It is the high watermark
    of the latest fetch response now: correct, and at once."""
    topic = create_topic(kafka_bootstrap, unique("lag"), partitions=1)
    produce(kafka_bootstrap, topic, [b'{"customer_id": "c1"}'] * 1000)
    log = KafkaPartitionLog([kafka_bootstrap], topic, 0, start=None)
    try:
        assert _read_up_to(log, 400) == 400
        deadline = time.monotonic() + 10
        while log.lag() != 600 and time.monotonic() < deadline:   # 0 until the first fetch response
            time.sleep(0.01)
        assert log.lag() == 600
        assert _read_up_to(log, 600) == 600
        took = []
        for _ in range(5):   # caught up: the consumer's fetch waits at the broker for new records
            log.read(100)
            started = time.perf_counter()
            lag = log.lag()
            took.append(time.perf_counter() - started)
            time.sleep(0.05)
        assert lag == 0
        assert max(took) < 0.05, [f"{t * 1000:.0f} ms" for t in took]
    finally:
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


def test_an_unstorable_state_is_caught_at_the_commit_and_its_event_dead_lettered(redis_url, redis_client,
                                                                                  monkeypatch):
    from engine.events.decode import DeadLetter, Stage

    real = Evaluator.on_event

    def buggy(self, state, ev, out):   # a bug that leaves a value no msgpack integer holds
        state = real(self, state, ev, out)
        if ev.event_id == "p1":
            state.profile["oops"] = 2**70
        return state

    monkeypatch.setattr(Evaluator, "on_event", buggy)
    rules = load_and_compile(ROOT / "rules")
    store = RedisStore(redis_url, f"edge{uuid.uuid4().hex[:6]}")
    lines = [b'{"event_id": "p%d", "type": "purchase", "customer_id": "c1", "ts": %d, "properties": {"amount": 1}}'
             % (i, 1_000 + i) for i in range(3)]
    worker = PartitionWorker(MemoryLog("p-0", lines), store, LiveRules(ROOT / "rules", rules, watch=False), 0)
    records = worker.event_log.read(10)
    worker.process(Batch(worker, records, False, 10_000, False))
    worker.commit(3)                                             # the check: p1 made the state unstorable
    # its dead letter is in this very commit, which drops the event (not in the next one)
    dead = [item for entry in store.read_outbox("p-0", 0, 100)[0]
            if isinstance(item := decode_item(entry), DeadLetter)]
    assert [d.stage for d in dead] == [Stage.STORE] and '"event_id":"p1"' in dead[0].raw
    state = store.load_many(["c1"])["c1"]
    assert state.aggs["purchases"] == 2 and "oops" not in state.profile
