"""Start and stop like a well-behaved service (issue "Hardening", items 7 and 9): SIGTERM and
Ctrl-C finish, commit and exit 0; Kafka down at start is waited out quietly; a wrong password
fails fast; no credential reaches the log; bad settings and a full disk are one line, exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import orjson
import pytest
from harness import (
    ROOT,
    LateProxy,
    OwnRedis,
    create_topic,
    engine_cmd,
    free_port,
    produce,
    read_topic,
    run_engine,
    unique,
    write_config,
)
from test_run import backtest

from bench.workload import generate
from engine.core.times import now_ms
from engine.events.decode import read_jsonl
from engine.state.redis import RedisStore

SAMPLE = ROOT / "examples" / "sample-events.jsonl"


def start(cfg, *args: str) -> subprocess.Popen:
    return subprocess.Popen(engine_cmd(cfg, *args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def assert_clean(err: str) -> None:
    assert "Traceback" not in err and "panicked" not in err and "RUST_BACKTRACE" not in err, err[-3000:]


@pytest.mark.parametrize("sig,workers", [(signal.SIGTERM, 1), (signal.SIGINT, 2)])
def test_a_signal_finishes_the_batch_commits_and_exits_0(kafka_bootstrap, redis_url, redis_client, tmp_path, sig,
                                                         workers):
    lines = [orjson.dumps(e) for e in generate(events=80_000, customers=8_000, days=30, seed=11, start="2026-01-01")]
    topic = create_topic(kafka_bootstrap, unique("stop-events"))
    produce(kafka_bootstrap, topic, lines)
    ref_sink = unique("ref")
    run_engine(write_config(tmp_path / "ref.toml", topic=topic, redis_url=redis_url, prefix=unique("ref"),
                            sink_topic=ref_sink, dead_topic=unique("d")))
    expected = sorted(t["trigger_id"] for t in read_topic(kafka_bootstrap, ref_sink))

    sink, prefix = unique("stop-triggers"), unique("stop")
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                       dead_topic=unique("d"), extra=f"workers = {workers}")
    store = RedisStore(redis_url, prefix)
    proc = start(cfg)
    deadline = time.monotonic() + 120
    while proc.poll() is None and sum(store.load_offsets().values()) < 10_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(sig)
    sent_at = time.monotonic()
    err = proc.communicate(timeout=60)[1]
    stopped_in = time.monotonic() - sent_at
    assert proc.returncode == 0, err[-3000:]
    assert stopped_in < 10
    assert_clean(err)
    last = err.strip().splitlines()[-1]
    assert f"stopped by {sig.name}: committed and closed; offsets" in last, last
    offsets = store.load_offsets()
    assert sum(offsets.values()) < len(lines)                 # it stopped mid-way ...
    for name, offset in offsets.items():
        assert f"{name} {offset}" in last                     # ... at the offsets it says it committed

    run_engine(cfg)                                           # the rest, after the clean stop
    got = sorted(t["trigger_id"] for t in read_topic(kafka_bootstrap, sink))
    assert got == expected                                    # nothing lost, nothing sent twice
    print(f"{sig.name} with {workers} worker(s): exit 0 {stopped_in:.1f} s after the signal, at "
          f"{sum(offsets.values())} of {len(lines)} events; after the restart {len(got)} triggers, 0 sent twice")


def healthz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:   # 503 while not healthy; the body says why
        return json.loads(e.read())


def test_kafka_down_at_start_is_waited_out_quietly(kafka_bootstrap, redis_url, redis_client, tmp_path):
    topic = create_topic(kafka_bootstrap, unique("late-events"))
    produce(kafka_bootstrap, topic, [raw for raw, _ in read_jsonl(SAMPLE)])
    proxy = LateProxy(kafka_bootstrap)
    metrics_port = free_port()
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=unique("late"),
                       sink_topic=unique("t"), dead_topic=unique("d"), extra=f"metrics_port = {metrics_port}")
    proc = start(cfg, "--brokers", f"127.0.0.1:{proxy.port}")
    try:
        time.sleep(12)                                         # Kafka "down" for 12 s
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        health = healthz(metrics_port)                         # and /healthz says what it waits for
        assert health["status"] == "starting" and list(health["waiting_for"]) == ["kafka"], health
        assert health["waiting_for"]["kafka"]["for_s"] > 5
        proxy.open()
        err = proc.communicate(timeout=120)[1]
    finally:
        proxy.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert_clean(err)
    before = err.split("done: every partition ended")[0]
    waiting = [line for line in before.splitlines() if "waiting for Kafka" in line or " kafka: " in line
               or "rdkafka" in line]
    assert 1 <= len(waiting) <= 8, "\n".join(waiting)         # a few lines in 12 s, not hundreds
    assert len(err.splitlines()) < 40, err
    assert "done: every partition ended" in err
    print(f"Kafka down 12 s at start: {len(waiting)} log lines about it, {len(err.splitlines())} lines in all")


def test_sigterm_while_kafka_is_unreachable_at_start_is_a_few_clear_lines_and_exit_0(redis_url, tmp_path):
    """Issue 16: no broker at all (nothing listens on the port) for 10 s, then SIGTERM: the start-up
    waits with a handful of lines that name the broker, then stops at once, exit 0, no traceback
    (the test above covers a broker that comes back)."""
    port = free_port()                                         # nothing listens there
    cfg = write_config(tmp_path / "c.toml", topic="customer-events", redis_url=redis_url, prefix=unique("nokafka"),
                       sink_topic=unique("t"), dead_topic=unique("d"), extra="metrics_port = 0")
    proc = start(cfg, "--brokers", f"127.0.0.1:{port}")
    try:
        time.sleep(10)
        assert proc.poll() is None, proc.stderr.read()[-3000:]  # it waits; it does not crash-loop
        proc.send_signal(signal.SIGTERM)
        sent_at = time.monotonic()
        err = proc.communicate(timeout=30)[1]
        stopped_in = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert_clean(err)
    assert stopped_in < 5
    lines = err.strip().splitlines()
    assert 2 <= len(lines) <= 6, err                            # a handful in 10 s, not a flood
    assert lines[-1].endswith("engine: stopped by SIGTERM while starting up"), lines
    assert all(f"127.0.0.1:{port}" in line for line in lines[:-1]), lines   # each names the broker
    assert any(f"waiting for Kafka at 127.0.0.1:{port}" in line for line in lines), lines
    print(f"Kafka unreachable 10 s, then SIGTERM: exit 0 {stopped_in:.1f} s after it, {len(lines)} lines in all")


def test_no_credential_in_any_log_line_and_a_wrong_password_fails_fast(kafka_bootstrap, tmp_path):
    password = "S3cr3t-pw-9f2"
    own = OwnRedis(tmp_path, password=password).start()
    try:
        topic = create_topic(kafka_bootstrap, unique("cred-events"))
        produce(kafka_bootstrap, topic, [raw for raw, _ in read_jsonl(SAMPLE)][:2000] + [b'{"not": "an event"}'])
        url = f"redis://default:{password}@127.0.0.1:{own.port}/0"
        cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=url, prefix="cred", sink_topic=unique("t"),
                           dead_topic=unique("d"), extra="log_level = \"DEBUG\"")
        ok = run_engine(cfg)
        assert password not in ok.stderr and f"redis://default:***@127.0.0.1:{own.port}/0" in ok.stderr

        env_cfg = write_config(tmp_path / "env.toml", topic=topic, redis_url=f"redis://127.0.0.1:{own.port}/0",
                               prefix="cred2", sink_topic=unique("t"), dead_topic=unique("d"))
        via_env = subprocess.run(engine_cmd(env_cfg), cwd=ROOT, capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "TRIGGERS_REDIS__PASSWORD": password})
        assert via_env.returncode == 0, via_env.stderr[-2000:]
        assert password not in via_env.stderr

        started = time.monotonic()
        wrong = subprocess.run(engine_cmd(env_cfg), cwd=ROOT, capture_output=True, text=True, timeout=60,
                               env={**os.environ, "TRIGGERS_REDIS__PASSWORD": "not-the-password"})
        refused_after = time.monotonic() - started
        assert wrong.returncode == 2 and refused_after < 15
        print(f"wrong Redis password: exit 2 after {refused_after:.1f} s (interpreter start included)")
        assert_clean(wrong.stderr)
        last = wrong.stderr.strip().splitlines()[-1]
        assert "refused the credentials" in last and "redis.password" in last, last
        assert "not-the-password" not in wrong.stderr
    finally:
        own.close()


@pytest.mark.parametrize("setting,message", [
    ('[redis]\nurl = "localhost:6379"', "redis.url 'localhost:6379' is not a Redis URL"),
    ('[redis]\nurl = "redis://u:hunter22@h:port/0"', "redis.url 'redis://u:***@h:port/0' is not a Redis URL"),
    ('[sinks.file]\npath = "t.jsonl"\nstatuses = ["sent", "opened"]', "Invalid enum value 'opened' - at `$.sinks.file.statuses[1]`"),
    ("wrkers = 2", "Object contains unknown field `wrkers`"),
])
def test_invalid_settings_are_one_line_and_exit_2(tmp_path, setting, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(setting + "\n")
    res = subprocess.run(engine_cmd(cfg), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("triggers run: invalid settings") and message in lines[0], lines
    assert "hunter22" not in res.stderr


def test_a_full_disk_under_a_file_sink_delays_only_its_relay(kafka_bootstrap, redis_url, redis_client, tmp_path):
    """The disk is full (/dev/full): the file sink's relay retries, says why on /healthz and in the
    log, and holds its entries in the outbox, while events are processed and committed; a stop
    is clean (exit 0), and the next start, with room on the disk, writes every trigger."""
    lines = [raw for raw, _ in read_jsonl(SAMPLE)][:500]
    topic = create_topic(kafka_bootstrap, unique("full-events"))
    produce(kafka_bootstrap, topic, lines)
    port, prefix, out = free_port(), unique("full"), tmp_path / "triggers.jsonl"
    cfg = tmp_path / "c.toml"
    settings = (f'rules = "{ROOT / "rules"}"\nmetrics_port = {port}\n{{bounded}}\n[kafka]\ntopic = "{topic}"\n'
                f'[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\n[relay]\nbackoff_max_s = 0.5\n'
                '[sinks.file]\npath = "{path}"\nstatuses = ["sent", "held_out", "suppressed"]\n'
                '[dead_letters]\nfile = "{dead}"\n')
    cfg.write_text(settings.format(path="/dev/full", dead=tmp_path / "dead.jsonl", bounded=""))
    store = RedisStore(redis_url, prefix)
    proc = start(cfg)
    try:
        deadline = time.monotonic() + 60
        health: dict = {}
        while time.monotonic() < deadline and not (
                sum(store.load_offsets().values()) == len(lines)
                and (health := healthz(port)).get("relays", {}).get("file", {}).get("state") == "retrying"):
            time.sleep(0.1)
        assert proc.poll() is None
        assert sum(store.load_offsets().values()) == len(lines)              # every event processed, committed
        file_relay = health["relays"]["file"]
        assert "No space left on device" in file_relay["last_error"] and sum(file_relay["lag"].values()) > 0
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert_clean(err)
    assert "relay file: " in err and "No space left on device" in err
    held = sum(store.client.xlen(store.outbox_key(f"{topic}-{p}")) for p in range(4))
    assert held > 0                                                           # kept in the outbox, not lost

    cfg.write_text(settings.format(path=out, dead=tmp_path / "dead.jsonl", bounded="exit_at_end = true"))
    run_engine(cfg)
    written = [json.loads(line)["trigger_id"] for line in out.read_text().splitlines()]
    expected = {t["trigger_id"] for t in backtest(lines, until=now_ms())[0]}
    assert len(written) == len(set(written)) and set(written) == expected    # every one, once
