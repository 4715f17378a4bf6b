"""The live path (source, partition worker, commits, sinks) on the shipped test doubles, with no
Kafka and no Redis: the same triggers and the same final states as a backtest of the same
events, with 1 worker and with 2; the store's commits hold the offsets and the deadline index."""

from __future__ import annotations

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
from engine.state.customer import CustomerState, encode_state
from engine.state.store import PartitionStore, StateLost, StateStore
from engine.testing import InMemoryStore, ListSink, MemoryLog

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl"
PARTITIONS = 3


def partitioned(lines: list[bytes]) -> dict[str, list[bytes]]:
    """Like a Kafka producer keyed by customer id: one customer, one partition, order kept."""
    decoder = EventDecoder()
    parts: dict[str, list[bytes]] = {f"events-{p}": [] for p in range(PARTITIONS)}
    for raw in lines:
        cid = getattr(decoder.decode(raw, "sample"), "customer_id", "")   # a broken line: partition of ""
        parts[f"events-{zlib.crc32(cid.encode()) % PARTITIONS}"].append(raw)
    return parts


def run_live(store: InMemoryStore, parts: dict[str, list[bytes]], workers: int) -> tuple[list, list, dict]:
    rules = load_and_compile(ROOT / "rules")
    triggers: list = []
    dead: list = []
    logs: dict[str, MemoryLog] = {}

    def open_log(name: str, start: int | None) -> MemoryLog:
        logs[name] = MemoryLog(name, parts[name], start)
        return logs[name]

    flow = build_flow(Settings(exit_at_end=True, commit_interval_ms=20), rules, partitions=sorted(parts),
                      open_log=open_log, store=lambda: store,
                      sinks={"list": lambda _w: ListSink(triggers)}, dead_letters=lambda _w: ListSink(dead))
    if workers == 1:
        run_main(flow, epoch_interval=timedelta(milliseconds=20))
    else:
        cluster_main(flow, [], 0, epoch_interval=timedelta(milliseconds=20), worker_count_per_proc=workers)
    return triggers, dead, logs


def backtest(lines: list[bytes], until: int) -> tuple[list, dict]:
    out: list = []
    replay = Replay(load_and_compile(ROOT / "rules"), out.extend, until=until)
    events, _ = EventDecoder().decode_batch((raw, "sample") for raw in lines)
    replay.feed(events)
    replay.finish()
    return out, replay.store.states


def test_the_stores_implement_the_protocols() -> None:
    from engine.state.redis import RedisStore

    store: PartitionStore = InMemoryStore()
    assert store.load_offset("p-0") is None
    states: StateStore = InMemoryStore()
    assert states.load_offsets() == {}
    for protocol in (PartitionStore, StateStore):
        wanted = {name for name in vars(protocol) if not name.startswith("_")}
        assert wanted <= set(dir(InMemoryStore)) and wanted <= set(dir(RedisStore)), protocol


@pytest.mark.parametrize("workers", [1, 2])
def test_live_on_the_test_doubles_equals_backtest(workers: int) -> None:
    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    lines.insert(100, b'{"event_id": "broken"')
    parts = partitioned(lines)
    store = InMemoryStore()
    triggers, dead, logs = run_live(store, parts, workers)
    expected, states = backtest(lines, until=now_ms())

    assert len(dead) == 1 and "not JSON" in dead[0].reason
    enc = msgspec.json.encode
    assert len(triggers) > 50
    assert sorted(map(enc, triggers)) == sorted(map(enc, expected))    # same triggers, same ids, same fields
    assert {c: encode_state(s) for c, s in store.items()} == {c: encode_state(s) for c, s in states.items()}
    assert {p: store.load_offset(p) for p in parts} == {p: len(v) for p, v in parts.items()}
    assert {name: log.committed for name, log in logs.items()} == {p: len(v) for p, v in parts.items()}


def test_a_second_run_resumes_from_the_committed_offsets_and_sends_nothing_again() -> None:
    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    parts = partitioned(lines)
    store = InMemoryStore()
    first, _, _ = run_live(store, parts, 1)
    again, dead, _ = run_live(store, parts, 1)
    assert first and again == [] and dead == []


def test_commit_is_conditional_and_keeps_the_deadline_index() -> None:
    store = InMemoryStore()
    a, b = encode_state(CustomerState(last_ts=1)), encode_state(CustomerState(last_ts=2))
    store.commit("p-0", {"a": a, "b": b}, 10, {"a": 500, "b": 200})
    assert store.load_offset("p-0") == 10
    assert store.due_customers("p-0", 1_000) == ["b", "a"]   # earliest first
    assert store.due_customers("p-0", 300) == ["b"] and store.due_customers("p-0", 1_000, limit=1) == ["b"]
    assert store.due_customers("p-1", 1_000) == []
    assert store.load_many_encoded(["a", "x"]) == {"a": a}
    with pytest.raises(StateLost):
        store.commit("p-0", {"a": b}, 11, {"a": None}, expected_offset=9)   # not what it committed
    assert store.load_many_encoded(["a"]) == {"a": a} and store.load_offset("p-0") == 10   # nothing written
    store.commit("p-0", {"a": b}, None, {"a": None}, unindex=["b"], expected_offset=10)
    assert store.due_customers("p-0", 1_000) == [] and store.load_offset("p-0") == 10
    assert store.get("a") == CustomerState(last_ts=2)
