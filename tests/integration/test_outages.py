"""Outages (SPEC §6): Redis stopped for 10 s in the middle of a run while the webhook receiver
fails every other request. The run completes with every trigger delivered, memory bounded,
and the retries visible in the log."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import orjson
import redis
from harness import ROOT, OwnRedis, Receiver, create_topic, engine_cmd, produce, read_topic, unique, write_config
from test_run import backtest

from bench.workload import generate
from engine.core.times import now_ms
from engine.state.redis import RedisStore

EVENTS = 30_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_redis_outage_and_failing_webhook(kafka_bootstrap, redis_url, tmp_path):
    lines = [orjson.dumps(e) for e in generate(events=EVENTS, customers=3_000, days=30, seed=8, start="2026-01-01")]
    topic = create_topic(kafka_bootstrap, unique("outage-events"))
    produce(kafka_bootstrap, topic, lines)
    own_redis = OwnRedis(tmp_path)
    own_redis.start()
    receiver = Receiver(fail_every_other=True)
    sink = unique("outage-triggers")
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=own_redis.url, prefix="o", sink_topic=sink,
                       dead_topic=unique("d"), webhook=receiver.url, extra="timer_poll_ms = 100")
    store = RedisStore(own_redis.url, "o")
    proc = subprocess.Popen(engine_cmd(cfg), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    rss: list[tuple[float, float]] = []
    outage = None
    try:
        while proc.poll() is None:
            rss.append((time.monotonic(), rss_mb(proc.pid)))
            if outage is None:
                try:
                    done = sum(store.load_offset(f"{topic}-{p}") or 0 for p in range(4))
                except redis.ConnectionError:
                    done = 0
                if done > EVENTS * 0.3:
                    own_redis.stop()
                    outage = time.monotonic()
            elif outage > 0 and time.monotonic() - outage >= 10:
                own_redis.start()
                outage = -outage            # over; keep its start time
            time.sleep(0.1)
        assert proc.returncode == 0, "".join(stderr)[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.close()
        if own_redis.proc and own_redis.proc.poll() is None:
            own_redis.proc.terminate()
    assert outage is not None and outage < 0, "the run ended before the outage could happen"

    expected = {t["trigger_id"] for t in backtest(lines, until=now_ms())[0]}
    assert {t["trigger_id"] for t in read_topic(kafka_bootstrap, sink)} == expected      # nothing lost
    assert {key for key, _ in receiver.requests} == expected                           # despite 50% failures
    assert receiver.failed > 100
    log = "".join(stderr)
    assert re.search(r"Redis [a-z ]+ failed \(", log), log[-3000:]                      # the outage, retried
    assert "relay webhook: " in log and "trying again" in log                          # webhook retries
    start = -outage
    during = [mb for t, mb in rss if start <= t <= start + 10]
    before = [mb for t, mb in rss if t < start]
    assert max(during) - max(before) < 50, (max(before), max(during))                  # no pile-up while waiting
    assert max(mb for _, mb in rss) < 600
    print(f"webhook failures {receiver.failed}, Redis retries logged {log.count('Redis ')}, "
          f"RSS before {max(before):.0f} MB, during the outage {max(during):.0f} MB, peak {max(mb for _, mb in rss):.0f} MB")
