"""`triggers run` as a real process: Kafka in, Redis state, Kafka and webhook out.

The reference is the backtest of the same events and rules: the live engine must produce the
same triggers with the same ids (recurring dates up to the run's end: the backtest gets the
wall clock as `--until`, since a live run's clock reaches it once the input is read).
"""

from __future__ import annotations

import subprocess

import pytest
from harness import (
    ROOT,
    Receiver,
    create_topic,
    engine_cmd,
    produce,
    read_topic,
    run_engine,
    trigger_key,
    unique,
    write_config,
)

from engine.core.times import now_ms
from engine.events.decode import EventDecoder, read_jsonl
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile
from engine.state.customer import encode_state
from engine.state.redis import RedisStore

SAMPLE = ROOT / "examples" / "sample-events.jsonl"


def backtest(lines: list[bytes], until: int) -> tuple[list[dict], dict]:
    import msgspec
    out: list = []
    replay = Replay(load_and_compile(ROOT / "rules"), out.extend, until=until)
    events, _ = EventDecoder().decode_batch((raw, "x") for raw in lines)
    replay.feed(events)
    replay.finish()
    return [msgspec.to_builtins(t) for t in out], replay.store.states


@pytest.fixture(scope="module")
def sample_lines() -> list[bytes]:
    return [raw for raw, _ in read_jsonl(SAMPLE)]


def test_kafka_in_kafka_and_webhook_out_equal_backtest(kafka_bootstrap, redis_url, redis_client, tmp_path,
                                                        sample_lines):
    topic = create_topic(kafka_bootstrap, unique("events"))
    produce(kafka_bootstrap, topic, sample_lines + [b"this is not json"])
    receiver = Receiver()
    prefix, sink, dead = unique("e2e"), unique("triggers"), unique("dead")
    config = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix,
                          sink_topic=sink, dead_topic=dead, webhook=receiver.url)
    try:
        run_engine(config)
    finally:
        receiver.close()
    expected, states = backtest(sample_lines, until=now_ms())

    got = read_topic(kafka_bootstrap, sink)
    assert sorted(map(trigger_key, got)) == sorted(map(trigger_key, expected))
    assert sorted(key for key, _ in receiver.requests) == sorted(t["trigger_id"] for t in expected)
    assert all(key == body["trigger_id"] for key, body in receiver.requests)
    (letter,) = read_topic(kafka_bootstrap, dead)
    assert letter["raw"] == "this is not json" and letter["source"].startswith(f"kafka {topic}/")

    store = RedisStore(redis_url, prefix)
    live = store.load_many(list(states))
    assert {c: encode_state(s) for c, s in live.items()} == {c: encode_state(s) for c, s in states.items()}

    # A second run resumes from the committed offsets: nothing is applied or sent again.
    run_engine(config)
    assert len(read_topic(kafka_bootstrap, sink)) == len(got)


def test_two_processes_give_the_same_triggers_as_one(kafka_bootstrap, redis_url, redis_client, tmp_path,
                                                     sample_lines):
    topic = create_topic(kafka_bootstrap, unique("events"))
    produce(kafka_bootstrap, topic, sample_lines)
    sink1 = unique("t1")
    one = write_config(tmp_path / "one.toml", topic=topic, redis_url=redis_url, prefix=unique("one"),
                       sink_topic=sink1, dead_topic=unique("d1"))
    run_engine(one)
    sink2 = unique("t2")
    two = write_config(tmp_path / "two.toml", topic=topic, redis_url=redis_url, prefix=unique("two"),
                       sink_topic=sink2, dead_topic=unique("d2"))
    addresses = "127.0.0.1:2171;127.0.0.1:2172"
    procs = [subprocess.Popen(engine_cmd(two, "--process-id", str(i), "--addresses", addresses),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    read_by = []
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        read_by.append({line.split("partition ")[1].split(":")[0] for line in err.splitlines()
                        if "starting at offset" in line})
    assert read_by[0] and read_by[1] and not read_by[0] & read_by[1]      # the partitions were split
    assert len(read_by[0] | read_by[1]) == 4
    ids_one = sorted(t["trigger_id"] for t in read_topic(kafka_bootstrap, sink1))
    ids_two = sorted(t["trigger_id"] for t in read_topic(kafka_bootstrap, sink2))
    assert ids_one == ids_two and len(ids_one) > 500


def test_processes_flag_runs_one_cluster_of_processes_and_stops_them_together(kafka_bootstrap, redis_url,
                                                                              redis_client, tmp_path, sample_lines):
    """Issue 15: `--processes 2` starts the cluster itself (threads do not add speed); its
    triggers are one process's, its processes split the partitions, and a SIGTERM to it stops
    them all with exit 0."""
    import signal
    import time

    topic = create_topic(kafka_bootstrap, unique("events"))
    produce(kafka_bootstrap, topic, sample_lines)
    expected, _ = backtest(sample_lines, until=now_ms())
    sink = unique("t")
    config = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=unique("procs"),
                          sink_topic=sink, dead_topic=unique("d"))
    res = run_engine(config, "--processes", "2")
    assert "started 2 engine processes" in res.stderr
    starts = [line for line in res.stderr.splitlines() if "starting at offset" in line]
    by_process = {line.split("[process ")[1][0] for line in starts}
    assert len(starts) == 4 and by_process == {"0", "1"}   # the partitions were split between them
    assert sorted(map(trigger_key, read_topic(kafka_bootstrap, sink))) == sorted(map(trigger_key, expected))

    # unbounded: SIGTERM to the supervisor stops both processes, which commit and exit 0
    endless = write_config(tmp_path / "e.toml", topic=topic, redis_url=redis_url, prefix=unique("procs"),
                           sink_topic=unique("t"), dead_topic=unique("d"))
    endless.write_text(endless.read_text().replace("exit_at_end = true", "exit_at_end = false"))
    proc = subprocess.Popen(engine_cmd(endless, "--processes", "2"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stderr is not None
    while sum("starting at offset" in line for line in lines) < 4:
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)[-3000:]
        lines.append(proc.stderr.readline())
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest[-3000:]
    assert rest.count("committed and closed") == 2
