"""The live dataflow on the real Redis with an in-process event log: the same triggers and the
same final states as a backtest of the same events, with 1 worker and with 2."""

from __future__ import annotations

import uuid
import zlib
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from bytewax.testing import cluster_main, run_main

from engine.core.times import now_ms
from engine.events.decode import EventDecoder, read_jsonl
from engine.offline.backtest import Replay
from engine.operators.flow import build_flow
from engine.operators.settings import Settings
from engine.rules.compiler import load_and_compile
from engine.state.customer import encode_state
from engine.state.redis import RedisStore
from engine.testing import ListSink, MemoryLog

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl"
PARTITIONS = 4


def partitioned(lines: list[bytes]) -> dict[str, list[bytes]]:
    """Like a Kafka producer keyed by customer id: one customer, one partition, order kept."""
    decoder = EventDecoder()
    parts: dict[str, list[bytes]] = {f"events-{p}": [] for p in range(PARTITIONS)}
    for raw in lines:
        decoded = decoder.decode(raw, "sample")
        cid = getattr(decoded, "customer_id", "")      # a broken message goes to partition of ""
        parts[f"events-{zlib.crc32(cid.encode()) % PARTITIONS}"].append(raw)
    return parts


def run_live(redis_url: str, prefix: str, parts: dict[str, list[bytes]], workers: int) -> tuple[list, list]:
    rules = load_and_compile(ROOT / "rules")
    triggers: list = []
    dead: list = []
    settings = Settings(exit_at_end=True, commit_interval_ms=50)
    flow = build_flow(
        settings, rules, partitions=sorted(parts),
        open_log=lambda name, start: MemoryLog(name, parts[name], start),
        store=lambda: RedisStore(redis_url, prefix),
        sinks={"list": lambda _w: ListSink(triggers)},
        dead_letters=lambda _w: ListSink(dead),
    )
    if workers == 1:
        run_main(flow, epoch_interval=timedelta(milliseconds=50))
    else:
        cluster_main(flow, [], 0, epoch_interval=timedelta(milliseconds=50), worker_count_per_proc=workers)
    return triggers, dead


def backtest(lines, until: int):
    rules = load_and_compile(ROOT / "rules")
    out: list = []
    replay = Replay(rules, out.extend, until=until)
    events, _ = EventDecoder().decode_batch((raw, "sample") for raw in lines)
    replay.feed(events)
    replay.finish()
    return out, replay.store.states


@pytest.mark.parametrize("workers", [1, 2])
def test_live_equals_backtest(redis_url, redis_client, workers):
    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    lines.insert(100, b'{"event_id": "broken"')
    parts = partitioned(lines)
    prefix = f"live{uuid.uuid4().hex[:6]}"
    triggers, dead = run_live(redis_url, prefix, parts, workers)
    expected, states = backtest(lines, until=now_ms())

    assert len(dead) == 1 and "not JSON" in dead[0].reason
    enc = msgspec.json.encode
    assert sorted(map(enc, triggers)) == sorted(map(enc, expected))    # same triggers, same ids, same fields
    store = RedisStore(redis_url, prefix)
    live_states = store.load_many(list(states))
    assert {c: encode_state(s) for c, s in live_states.items()} == {c: encode_state(s) for c, s in states.items()}
    offsets = {p: store.load_offset(p) for p in parts}
    assert offsets == {p: len(v) for p, v in parts.items()}
