"""`triggers backfill` + `triggers run` on the rest equals one backtest over everything, minus
the triggers of the past; and the backfill's partitioners place keys as Kafka's producers do.
Real Kafka, real Redis, the real online-retail data."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import orjson
import pytest
from confluent_kafka import Producer
from harness import ROOT, create_topic, produce, read_topic, run_engine, trigger_key, unique, write_config

from engine.core.times import format_ts, now_ms, parse_ts
from engine.events.decode import EventDecoder
from engine.offline.backfill import Partitioner, partition_of
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile

CUT = parse_ts("2011-06-01T00:00:00Z")


def backfill_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "backfill", "--rules", str(ROOT / "rules"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_backfill_then_live_equals_one_backtest_minus_the_past(shared_data, tmp_path, kafka_bootstrap, redis_url,
                                                               redis_client):
    lines = (shared_data / "online-retail-orders.jsonl").read_bytes().splitlines()
    events = EventDecoder().decode_batch((raw, "retail") for raw in lines)[0]
    history = [raw for raw, ev in zip(lines, events) if ev.ts < CUT]
    rest = [raw for raw, ev in zip(lines, events) if ev.ts >= CUT]
    assert history and rest and len(history) + len(rest) == len(lines)
    (tmp_path / "history.jsonl").write_bytes(b"\n".join(history) + b"\n")
    topic, prefix = unique("backfill-events"), unique("backfill")
    create_topic(kafka_bootstrap, topic)
    flags = ["--events", str(tmp_path / "history.jsonl"), "--redis-url", redis_url, "--prefix", prefix,
             "--topic", topic, "--partitions", "4", "--brokers", kafka_bootstrap, "--until", format_ts(CUT - 1)]
    res = backfill_cmd(*flags)
    assert res.returncode == 0, res.stderr
    print(res.stderr.strip())
    again = backfill_cmd(*flags)   # live state is there now: refused
    assert again.returncode == 2 and "already holds live state" in again.stderr
    produce(kafka_bootstrap, topic, rest)
    sink = unique("backfill-triggers")
    config = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                          dead_topic=unique("backfill-dead"))
    run_engine(config, timeout=400)
    live = read_topic(kafka_bootstrap, sink)

    expected: list = []
    replay = Replay(load_and_compile(ROOT / "rules"), expected.extend, until=now_ms())
    replay.feed(events)
    replay.finish()
    after = [msgspec.to_builtins(t) for t in expected if parse_ts(t.fired_at) >= CUT]
    before = len(expected) - len(after)
    print(f"backtest over all: {len(expected)} triggers, {before} fired before the cut; live after backfill: "
          f"{len(live)}")
    assert before > 0 and after
    assert sorted(map(trigger_key, live)) == sorted(map(trigger_key, after))


@pytest.mark.parametrize("partitioner", list(Partitioner), ids=lambda p: p.value)
def test_partition_of_places_keys_as_the_producer_does(partitioner, kafka_bootstrap):
    topic = create_topic(kafka_bootstrap, unique("backfill-keys"), partitions=7)
    keys = [f"c{i}" for i in range(300)] + ["", "ü-ñ", "c-17850-long-key-of-odd-length"]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": partitioner.value})
    for k in keys:
        producer.produce(topic, key=k.encode(), value=orjson.dumps({"k": k}))
    assert producer.flush(30) == 0
    placed = dict(read_topic(kafka_bootstrap, topic, lambda m: (orjson.loads(m.value())["k"], m.partition())))
    keys = [k for k in keys if k]   # an empty key is placed at random by both
    assert {k: placed[k] for k in keys} == {k: partition_of(k, 7, partitioner) for k in keys}
