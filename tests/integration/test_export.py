"""`triggers export`: the live states in the real Redis (and Redis Cluster) as JSONL, as the
rules read them, one object per customer."""

from __future__ import annotations

import subprocess
import sys
import uuid

import orjson
import pytest
from harness import ROOT, OwnRedis, create_topic, produce, run_engine, unique, write_config

from engine.core.times import parse_ts
from engine.events.decode import EventDecoder
from engine.offline.backtest import Replay
from engine.offline.profile import customer_profile, encode_profile
from engine.rules.compiler import load_and_compile
from engine.state.customer import decode_state
from engine.state.redis import RedisStore

SAMPLE = ROOT / "examples" / "sample-events.jsonl"
AT = "2026-03-05T00:00:00.000Z"


def backtest_states():
    rules = load_and_compile(ROOT / "rules")
    replay = Replay(rules, lambda _t: None)
    replay.feed(EventDecoder().decode_batch((raw, "s") for raw in SAMPLE.read_bytes().splitlines())[0])
    replay.finish()
    return rules, dict(replay.store.items())


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "export", "--rules", str(ROOT / "rules"), *args],
                          capture_output=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("cluster", [False, True], ids=["single-node", "cluster"])
def test_export_writes_every_state_as_the_rules_read_it(cluster, request, tmp_path):
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    if not cluster:
        request.getfixturevalue("redis_client")   # a flushed db
    rules, states = backtest_states()
    prefix = f"te-export-{uuid.uuid4().hex[:8]}"
    store = RedisStore(url, prefix, cluster=cluster)
    store.save_many(states)
    store.save_many({}, {"events-0": 7})   # other keys of the prefix are not states
    try:
        flags = ["--redis-url", url, "--prefix", prefix, "--at", AT] + (["--cluster"] if cluster else [])
        res = export(*flags, "--out", str(tmp_path / "out.jsonl"))
        assert res.returncode == 0, res.stderr
        assert f"{len(states)} customer(s)".encode() in res.stderr
        lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
        got = {p["customer_id"]: p for p in map(orjson.loads, lines)}
        assert len(lines) == len(got) == len(states)
        for cid, state in states.items():
            expected = orjson.loads(encode_profile(customer_profile(rules, cid, state, parse_ts(AT))))
            assert got[cid] == expected
        one = export(*flags, "--customer", next(iter(states)))
        assert one.returncode == 0 and len(one.stdout.splitlines()) == 1   # stdout by default
        missing = export(*flags, "--customer", "nobody")
        assert missing.returncode == 1 and b"no state for customer 'nobody'" in missing.stderr
    finally:
        for cid in states:
            store.client.delete(store.state_key(cid))
        store.client.delete(store.offset_key("events-0"))
        store.close()


def test_export_streams_in_batches(redis_url, redis_client):
    """SCAN + one MGET per batch: a batch never holds more than asked, and every state comes once."""
    _, states = backtest_states()
    store = RedisStore(redis_url, "te-export-batches")
    store.save_many(states)
    batches = list(store.scan_states(batch=50))
    assert max(len(b) for b in batches) <= 50 and len(batches) >= len(states) // 50
    assert sorted(cid for b in batches for cid, _ in b) == sorted(states)
    store.close()


def test_export_with_config_reads_the_state_the_engine_wrote(kafka_bootstrap, tmp_path):
    """`export --config` with the settings file `triggers run` ran with: the password is in
    redis.password, not in the URL, so only the settings give export the way in."""
    password = "Exp0rt-pw-4d1"
    own = OwnRedis(tmp_path, password=password).start()
    try:
        topic = create_topic(kafka_bootstrap, unique("export-events"))
        produce(kafka_bootstrap, topic, SAMPLE.read_bytes().splitlines())
        config = write_config(tmp_path / "c.toml", topic=topic, redis_url=own.url, prefix="exp",
                              sink_topic=unique("export-triggers"), dead_topic=unique("export-dead"),
                              extra_redis=f'password = "{password}"')
        run_engine(config)
        res = export("--config", str(config), "--at", AT)
        assert res.returncode == 0, res.stderr
        got = {p["customer_id"]: p for p in map(orjson.loads, res.stdout.splitlines())}
        rules, backtest = backtest_states()
        assert set(got) == set(backtest)   # every customer the engine saw
        store = RedisStore(own.url, "exp", connection={"password": password})
        written = {cid: decode_state(image) for batch in store.scan_states() for cid, image in batch}
        store.close()
        assert got == {cid: orjson.loads(encode_profile(customer_profile(rules, cid, st, parse_ts(AT))))
                       for cid, st in written.items()}
        assert password.encode() not in res.stderr

        without = export("--redis-url", own.url, "--prefix", "exp")   # the flags alone: no password
        assert without.returncode == 2 and b"AuthenticationError" in without.stderr, without.stderr
    finally:
        own.close()
