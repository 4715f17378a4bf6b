"""Micro-benchmarks of each hot-path stage (pytest-benchmark).

    .venv/bin/pytest bench/test_hot_path.py --benchmark-enable --benchmark-columns=median,ops,rounds

Each benchmark works on a batch and states the batch size in `extra_info`, so per-event cost
is median / batch. In the normal test run (benchmarks disabled) each runs once, as a check
that the stage still works.
"""

from __future__ import annotations

import uuid

import msgspec
import pytest

from engine.core.evaluate import Evaluator
from engine.events.decode import EventDecoder
from engine.offline.backtest import Replay
from engine.policy.contact import Candidate, ContactPolicy
from engine.state.customer import decode_state, encode_state
from engine.state.redis import RedisStore

BATCH = 1000


@pytest.fixture(scope="module")
def states(events, bundled_rules):
    replay = Replay(bundled_rules, lambda out: None)
    replay.feed(events)
    return list(replay.store.states.values())[:BATCH]


def test_decode_batch(benchmark, raw_events):
    decoder = EventDecoder()
    batch = [(raw, "bench") for raw in raw_events[:BATCH]]
    benchmark.extra_info["batch"] = BATCH
    events, dead = benchmark(decoder.decode_batch, batch)
    assert len(events) == BATCH and not dead


def test_state_encode_decode(benchmark, states):
    benchmark.extra_info["batch"] = len(states)

    def roundtrip():
        return [decode_state(encode_state(s)) for s in states]

    assert benchmark(roundtrip) == states


def test_state_load_batch(benchmark, states, redis_url):
    store = RedisStore(redis_url, f"bench{uuid.uuid4().hex[:6]}")
    ids = [f"c{i}" for i in range(len(states))]
    store.save_many(dict(zip(ids, states)))
    benchmark.extra_info["batch"] = len(ids)
    assert len(benchmark(store.load_many, ids)) == len(ids)


def test_state_commit_batch(benchmark, states, redis_url):
    store = RedisStore(redis_url, f"bench{uuid.uuid4().hex[:6]}")
    batch = {f"c{i}": s for i, s in enumerate(states)}
    due = {cid: s.next_due() for cid, s in batch.items()}
    benchmark.extra_info["batch"] = len(batch)
    images = {cid: encode_state(s) for cid, s in batch.items()}
    store.commit("bench-0", images, 12345, due)   # the offset is there from now on

    def commit() -> None:   # what a partition's commit costs: its states encoded, one conditional write
        store.commit("bench-0", {cid: encode_state(s) for cid, s in batch.items()}, 12345, due, expected_offset=12345)

    benchmark(commit)
    assert store.load_offset("bench-0") == 12345


@pytest.mark.parametrize("rules", [10, 100, 1000])
def test_evaluate_per_event(benchmark, events, sized_rules, rules):
    compiled = sized_rules[rules]
    sample = events[:5000]
    benchmark.extra_info["batch"] = len(sample)

    def setup():
        return (Evaluator(compiled), {}), {}

    def run(evaluator, states):
        out: list = []
        for e in sample:
            states[e.customer_id] = evaluator.on_event(states.get(e.customer_id), e, out)
        return out

    benchmark.pedantic(run, setup=setup, rounds=5)


def test_policy_decide(benchmark, bundled_rules, states):
    policy = ContactPolicy(bundled_rules.ruleset.policy)
    rule = bundled_rules.by_id["cart-abandoned"]
    at = 1_767_261_600_000
    candidates = [Candidate(rule, 0, rule.then, f"e{i}", f"e{i}", at + i * 60_000, {}, at + i * 60_000)
                  for i in range(len(states))]
    benchmark.extra_info["batch"] = len(candidates)

    def decide():
        copies = [msgspec.structs.replace(s) for s in states]
        return [policy.decide(s, f"c{i}", [c]) for i, (s, c) in enumerate(zip(copies, candidates))]

    assert len(benchmark(decide)) == len(candidates)


def test_trigger_encode(benchmark, events, bundled_rules):
    out: list = []
    replay = Replay(bundled_rules, out.extend)
    replay.feed(events)
    replay.finish()
    triggers = out[:BATCH]
    encoder = msgspec.json.Encoder()
    benchmark.extra_info["batch"] = len(triggers)
    assert benchmark(encoder.encode_lines, triggers).count(b"\n") == len(triggers)
