"""Regression guards CI runs: ratios measured in one process, interleaved, never absolute
times, so a noisy machine slows both sides alike; and sizes, which do not depend on time."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from engine.core.evaluate import Evaluator
from engine.events.decode import EventDecoder
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile
from engine.state.customer import encode_state

ROOT = Path(__file__).resolve().parents[1]


def evaluate_seconds(rules, events) -> float:
    evaluator, states, out = Evaluator(rules), {}, []
    start = time.perf_counter()
    for e in events:
        states[e.customer_id] = evaluator.on_event(states.get(e.customer_id), e, out)
    return time.perf_counter() - start


def test_a_thousand_rules_cost_at_most_twice_ten(events, sized_rules):
    """Rules are indexed by event type: rules for other events cost nothing per event."""
    sample = events[:10_000]
    times: dict[int, list[float]] = {10: [], 100: [], 1000: []}
    for _ in range(5):
        for n in times:
            times[n].append(evaluate_seconds(sized_rules[n], sample))
    ratio_100 = statistics.median(times[100]) / statistics.median(times[10])
    ratio_1000 = statistics.median(times[1000]) / statistics.median(times[10])
    print(f"per event: 10 rules {1e6 * statistics.median(times[10]) / len(sample):.2f} us, "
          f"100 rules x{ratio_100:.2f}, 1000 rules x{ratio_1000:.2f}")
    assert ratio_100 <= 2.0 and ratio_1000 <= 2.0


def test_decode_beats_the_standard_library(raw_events):
    """The cached typed msgspec decoder must stay well ahead of json.loads (measured 4.8x)."""
    decoder = EventDecoder()
    batch = [(raw, "g") for raw in raw_events[:5000]]
    ours, stdlib = [], []
    for _ in range(5):
        t = time.perf_counter()
        decoder.decode_batch(batch)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        for raw, _ in batch:
            json.loads(raw)
        stdlib.append(time.perf_counter() - t)
    assert statistics.median(ours) < statistics.median(stdlib)


def test_state_of_the_spec_aggregates_fits_256_bytes(events):
    """The SPEC §3 rules (its five aggregates and its policy) on a realistic workload:
    a customer's state in Redis stays at 256 bytes or less on average."""
    rules = load_and_compile(ROOT / "tests" / "fixtures" / "spec_rules")
    replay = Replay(rules, lambda out: None)
    replay.feed(events)
    sizes = sorted(len(encode_state(s)) for s in replay.store.states.values())
    mean = statistics.mean(sizes)
    print(f"state bytes: mean {mean:.0f}, median {sizes[len(sizes) // 2]}, p99 {sizes[int(0.99 * len(sizes))]}")
    assert mean <= 256
