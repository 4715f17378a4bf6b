"""State loss is never silent (SPEC §6; issue "Hardening", item 6): Redis losing the engine's
data between runs or in the middle of one is detected; the engine stops with a message that
names the cause and the choices, and re-sends nothing."""

from __future__ import annotations

import subprocess
import time

import orjson
from harness import ROOT, OwnRedis, create_topic, engine_cmd, produce, read_topic, run_engine, unique, write_config

from bench.workload import generate
from engine.events.decode import read_jsonl
from engine.state.redis import RedisStore

SAMPLE = ROOT / "examples" / "sample-events.jsonl"


def engine(cfg, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(engine_cmd(cfg, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_keys_deleted_between_runs_are_refused_and_nothing_is_resent(kafka_bootstrap, redis_url, redis_client,
                                                                     tmp_path):
    topic = create_topic(kafka_bootstrap, unique("loss-events"))
    produce(kafka_bootstrap, topic, [raw for raw, _ in read_jsonl(SAMPLE)])
    sink, prefix = unique("loss-triggers"), unique("loss")
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                       dead_topic=unique("d"))
    first = run_engine(cfg)
    assert "first start on all partitions" in first.stderr and "EARLIEST" in first.stderr
    sent = len(read_topic(kafka_bootstrap, sink))
    assert sent > 100

    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    assert keys
    redis_client.delete(*keys)                        # an operator's mistake, an eviction, a wipe
    second = engine(cfg)
    assert second.returncode == 2, second.stderr[-2000:]
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"triggers run: Redis at {redis_url} lost committed state for 4 partition(s)")
    assert "--accept-state-loss" in last and "Traceback" not in second.stderr
    assert len(read_topic(kafka_bootstrap, sink)) == sent                       # nothing re-sent

    accepted = run_engine(cfg, "--accept-state-loss")
    assert "--accept-state-loss given, resuming at" in accepted.stderr
    assert len(read_topic(kafka_bootstrap, sink)) == sent                       # still nothing re-sent
    assert RedisStore(redis_url, prefix).load_offsets()                         # and it records again


def test_redis_restarted_without_persistence_mid_run_is_detected(kafka_bootstrap, tmp_path):
    lines = [orjson.dumps(e) for e in generate(events=60_000, customers=5_000, days=30, seed=5, start="2026-01-01")]
    topic = create_topic(kafka_bootstrap, unique("wipe-events"))
    produce(kafka_bootstrap, topic, lines)
    own = OwnRedis(tmp_path, persistent=False).start()
    try:
        sink = unique("wipe-triggers")
        cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=own.url, prefix="w", sink_topic=sink,
                           dead_topic=unique("d"))
        store = RedisStore(own.url, "w")
        proc = subprocess.Popen(engine_cmd(cfg), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and sum(store.load_offsets().values()) < 5_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before Redis could be restarted"
        own.restart()                                  # everything the engine committed is gone
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 2, err[-3000:]
        assert "runs WITHOUT PERSISTENCE" in err                          # warned at start-up
        last = err.strip().splitlines()[-1]
        # found by the next commit (the offset) or by a relay (the outbox), whichever looks first
        assert ("the state store has no offset where this engine committed" in last
                or "the state store has no outbox entry where this engine committed" in last), last
        assert "Traceback" not in err and "panicked" not in err

        again = engine(cfg)                            # and a restart does not resume over the loss
        assert again.returncode == 2 and "lost committed state" in again.stderr.strip().splitlines()[-1]
    finally:
        own.close()


def test_accepting_a_loss_after_an_older_copy_came_back_does_not_replay_the_lost_range(kafka_bootstrap, redis_url,
                                                                                       redis_client, tmp_path):
    """Found in review: Redis restored from an older copy (an RDB file, a stale replica) holds
    that copy's clock too. With --accept-state-loss the offset moved to Kafka's record, but the
    old clock's `replay_from` made the start re-read the whole lost range as events held back
    for ordering and apply the ones after its frontier again: 13,604 triggers sent twice in a
    60,000-event run whose copy was taken mid-backlog. The copy here is taken between two runs,
    its clock set back as a copy taken mid-backlog has it."""
    from engine.state.store import PartitionClock, encode_clock

    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    topic = create_topic(kafka_bootstrap, unique("stale-events"))
    produce(kafka_bootstrap, topic, lines[:2500])
    sink, prefix = unique("stale-triggers"), unique("stale")
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                       dead_topic=unique("d"))
    run_engine(cfg)
    store = RedisStore(redis_url, prefix)
    copy = {key: redis_client.dump(key) for key in redis_client.scan_iter(match=f"{prefix}:*")}
    partitions = sorted(store.load_offsets())
    produce(kafka_bootstrap, topic, lines[2500:])
    run_engine(cfg)   # Kafka's record moves on
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(key)
    for key, value in copy.items():
        redis_client.restore(key, 0, value)
    for p in partitions:   # mid-backlog: the frontier early in the data, held events from the start
        redis_client.set(store.clock_key(p), encode_clock(PartitionClock(1, 1, 0)))
    accepted = run_engine(cfg, "--accept-state-loss")
    assert "--accept-state-loss given, resuming at" in accepted.stderr
    assert "re-reading offsets" not in accepted.stderr   # before: every partition re-read its lost range
