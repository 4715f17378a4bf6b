"""Crash safety (SPEC §6): `triggers run` killed with SIGKILL at random points while it
consumes 100,000 events, restarted until done, ends with the same Redis state and the same
set of trigger ids as an uninterrupted run; duplicates only as re-sends of the same trigger."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import orjson
from harness import ROOT, create_topic, engine_cmd, produce, read_topic, run_engine, trigger_key, unique, write_config

from bench.workload import generate
from engine.state.customer import encode_state
from engine.state.redis import RedisStore

EVENTS = 100_000


def committed(store: RedisStore, partitions: list[str]) -> int:
    return sum(store.load_offset(p) or 0 for p in partitions)


def test_kill_9_at_random_points_changes_nothing(kafka_bootstrap, redis_url, redis_client, tmp_path):
    lines = [orjson.dumps(e) for e in generate(events=EVENTS, customers=10_000, days=30, seed=3, start="2026-01-01")]
    topic = create_topic(kafka_bootstrap, unique("crash-events"))
    produce(kafka_bootstrap, topic, lines)
    customers = sorted({orjson.loads(l)["customer_id"] for l in lines})

    ref_sink, ref_prefix = unique("ref-triggers"), unique("ref")
    ref = write_config(tmp_path / "ref.toml", topic=topic, redis_url=redis_url, prefix=ref_prefix,
                       sink_topic=ref_sink, dead_topic=unique("d"))
    run_engine(ref)

    sink, prefix = unique("crash-triggers"), unique("crash")
    cfg = write_config(tmp_path / "crash.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                       dead_topic=unique("d"))
    store = RedisStore(redis_url, prefix)
    partitions = [f"{topic}-{p}" for p in range(4)]
    rng = random.Random(20261126)
    # Kill points: once the committed progress passes each of these shares of the input, after
    # a further random 0-150 ms, so the kill lands anywhere in the read/evaluate/send/commit cycle.
    thresholds = sorted(rng.uniform(0.05, 0.9) for _ in range(5))
    kills_mid_run = 0
    for share in thresholds + [None]:
        proc = subprocess.Popen(engine_cmd(cfg), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if share is not None:
            while proc.poll() is None and committed(store, partitions) < share * EVENTS:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc.stderr.close()
                kills_mid_run += committed(store, partitions) < EVENTS
                continue
        err = proc.communicate(timeout=300)[1]
        assert proc.returncode == 0, err[-3000:]
        if share is not None:
            break   # it finished before the kill point: done
    assert kills_mid_run >= 3, f"only {kills_mid_run} kills landed mid-consumption: the test tested nothing"

    expected = read_topic(kafka_bootstrap, ref_sink)
    got = read_topic(kafka_bootstrap, sink)
    assert {t["trigger_id"] for t in got} == {t["trigger_id"] for t in expected}       # none missing, none extra
    by_id: dict[str, bytes] = {}
    for t in got:                                       # a duplicate is a re-send of the same trigger
        assert by_id.setdefault(t["trigger_id"], trigger_key(t)) == trigger_key(t)
    assert len(expected) == len({t["trigger_id"] for t in expected})

    ref_states = RedisStore(redis_url, ref_prefix).load_many(customers)
    crash_states = RedisStore(redis_url, prefix).load_many(customers)
    assert len(ref_states) == len(customers)
    assert {c: encode_state(s) for c, s in crash_states.items()} == {c: encode_state(s) for c, s in ref_states.items()}
    print(f"{kills_mid_run} kills mid-consumption, {len(got) - len(expected)} re-sent triggers, "
          f"{len(expected)} distinct")
