"""Crash safety (SPEC §6): `triggers run` killed with SIGKILL at random points while it
consumes the shared real data (27,189 events, about 31,000 triggers) and relays its triggers,
restarted until done, ends with the same Redis state and the same set of trigger ids as an
uninterrupted run; the engine re-sends nothing, a relay at most its batch in flight, so each
kill re-sends at most `MAX_RESENT_PER_KILL` triggers at the Kafka sink. The same on a real Redis
Cluster, whose commits are not atomic: the states are fenced (issue 15), and a kill inside a
commit re-sends that commit's triggers."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter

import msgspec
import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from harness import ROOT, create_topic, engine_cmd, produce, read_topic, run_engine, trigger_key, unique, write_config

from engine.events.decode import read_jsonl
from engine.operators.settings import RelaySettings
from engine.state.customer import encode_state
from engine.state.redis import RedisStore

DATA = ("online-retail-orders.jsonl", "rees46-clickstream-sample.jsonl")   # in time order, one after the other
MAX_RESENT_PER_KILL = 25
assert RelaySettings().batch_size < MAX_RESENT_PER_KILL   # one relay's batch in flight, and some slack


def delivered(bootstrap: str, topic: str) -> int:
    """Messages in the topic so far (the sum of its partitions' high watermarks); 0 while the
    broker cannot say yet (a new topic's leaders are still being elected)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("count")})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    except KafkaException:
        return 0
    finally:
        consumer.close()


def duplicates(bootstrap: str, topic: str) -> int:
    counts = Counter(t["trigger_id"] for t in read_topic(bootstrap, topic))
    return sum(n - 1 for n in counts.values())


@pytest.mark.parametrize("redis_kind", ["single", "cluster"])
def test_kill_9_at_random_points_changes_nothing_and_re_sends_at_most_a_batch(kafka_bootstrap, request, redis_kind,
                                                                              shared_data, tmp_path):
    """On a single Redis node a commit is atomic; on the 3-primary Redis Cluster it is written slot
    by slot, the states first (fenced: `CustomerState.fence`), the offset last (issue 15)."""
    cluster = redis_kind == "cluster"
    if cluster:
        redis_url = request.getfixturevalue("redis_cluster_url")
    else:
        redis_url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")   # a flushed test database
    lines = [raw for name in DATA for raw, _ in read_jsonl(shared_data / name)]
    topic = create_topic(kafka_bootstrap, unique("crash-events"))
    produce(kafka_bootstrap, topic, lines)
    customers = sorted({orjson.loads(line)["customer_id"] for line in lines})

    ref_sink, ref_prefix = unique("ref-triggers"), unique("ref")
    ref = write_config(tmp_path / "ref.toml", topic=topic, redis_url=redis_url, prefix=ref_prefix,
                       sink_topic=ref_sink, dead_topic=unique("d"), extra_redis="cluster = true" if cluster else "")
    started = time.monotonic()
    run_engine(ref)
    ref_seconds = time.monotonic() - started
    expected = read_topic(kafka_bootstrap, ref_sink)
    assert len(expected) == len({t["trigger_id"] for t in expected}) > 10_000

    sink, prefix = create_topic(kafka_bootstrap, unique("crash-triggers")), unique("crash")
    cfg = write_config(tmp_path / "crash.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                       dead_topic=unique("d"), extra_redis="cluster = true" if cluster else "")
    rng = random.Random(20261201)
    # Kill points: once the triggers delivered at the sink pass each of these shares, after a further
    # random 0-150 ms, so the kill lands anywhere in the read/evaluate/commit/relay cycle (the engine
    # consumes while its relay delivers).
    thresholds = sorted(rng.uniform(0.05, 0.9) for _ in range(5))
    resent: list[int] = []        # per kill: the duplicates that appeared after it
    before = 0
    kills = 0
    running: list[subprocess.Popen] = []
    try:
        for share in thresholds + [None]:
            proc = subprocess.Popen(engine_cmd(cfg), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            running.append(proc)
            if share is not None:
                while proc.poll() is None and delivered(kafka_bootstrap, sink) < share * len(expected):
                    time.sleep(0.02)
                time.sleep(rng.uniform(0, 0.15))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    proc.stderr.close()
                    if kills:
                        resent.append(duplicates(kafka_bootstrap, sink) - before)
                    before = duplicates(kafka_bootstrap, sink)
                    kills += 1
                    continue
            err = proc.communicate(timeout=300)[1]
            assert proc.returncode == 0, err[-3000:]
            if kills:
                resent.append(duplicates(kafka_bootstrap, sink) - before)
            if share is not None:
                break   # it finished before the kill point: done
    finally:   # a failure above must not leave an engine running into the next test
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert kills >= 3, f"only {kills} kills landed mid-run: the test tested nothing"

    got = read_topic(kafka_bootstrap, sink)
    assert {t["trigger_id"] for t in got} == {t["trigger_id"] for t in expected}       # none missing, none extra
    by_id: dict[str, bytes] = {}
    for t in got:                                       # a duplicate is a re-send of the same trigger
        assert by_id.setdefault(t["trigger_id"], trigger_key(t)) == trigger_key(t)
    # On the cluster a kill between the outbox and the offset re-sends that commit's triggers (the
    # batches of one commit interval, here 100 ms of a backlog), with their ids: not bounded by the
    # relay's batch. Atomic outbox-and-offset commits on the cluster are not built yet (issue 15).
    bound = MAX_RESENT_PER_KILL if not cluster else 5_000
    assert len(resent) == kills and all(n <= bound for n in resent), resent
    assert len(got) - len(expected) == sum(resent)

    ref_states = RedisStore(redis_url, ref_prefix, cluster=cluster).load_many(customers)
    crash_states = RedisStore(redis_url, prefix, cluster=cluster).load_many(customers)
    assert len(ref_states) == len(customers)

    def image(state) -> bytes:   # the offset a state was committed at differs between two runs' commits
        return encode_state(msgspec.structs.replace(state, fence=0))

    assert {c: image(s) for c, s in crash_states.items()} == {c: image(s) for c, s in ref_states.items()}
    print(f"{len(lines)} events, {len(expected)} triggers (uninterrupted run {ref_seconds:.1f} s); {kills} kills, "
          f"re-sent per kill {resent}")
