"""examples/triggers.toml runs as it is (issue 16): against the real Kafka and Redis, its webhook
gets the `sent` triggers, its audit file every decision, its dead-letter file the bad event; the
deployment-specific values come from flags and TRIGGERS_* variables, as the file says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness import ROOT, Receiver, create_topic, produce, unique
from test_produce import backtest

from engine.core.times import now_ms

EXAMPLE = ROOT / "examples" / "triggers.toml"
SAMPLE = ROOT / "examples" / "sample-events.jsonl"


def test_the_example_settings_run_as_they_are(kafka_bootstrap, redis_url, redis_client, tmp_path):
    lines = SAMPLE.read_bytes().splitlines()[:2000] + [b'{"event_id": "x", "type": "purchase"}']
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    topic = create_topic(kafka_bootstrap, unique("example-events"))
    # the bad line is sent unkeyed by hand: `produce` would not send it
    produced = subprocess.run([sys.executable, "-m", "engine.cli", "produce", "--events", str(events), "--topic",
                               topic, "--config", str(EXAMPLE)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    assert produced.returncode == 1 and "2,000 events sent" in produced.stdout, produced.stderr
    produce(kafka_bootstrap, topic, [lines[-1]])

    receiver = Receiver()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRIGGERS_SINKS__WEBHOOK__URL": receiver.url,
           "TRIGGERS_REDIS__PREFIX": unique("example"), "TRIGGERS_METRICS_PORT": "0"}
    try:
        res = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--config", str(EXAMPLE), "--rules",
                              str(ROOT / "rules"), "--topic", topic, "--redis-url", redis_url, "--exit-at-end"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    finally:
        receiver.close()
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "change-me-to-a-long-random-string" not in res.stderr and "Bearer change-me" not in res.stderr

    expected = backtest(ROOT / "rules", lines, until=now_ms())
    audit = [json.loads(line) for line in (tmp_path / "triggers-audit.jsonl").read_text().splitlines()]
    key = lambda t: (t["trigger_id"], t["status"], t["fired_at"])   # noqa: E731
    assert sorted(map(key, audit)) == sorted(map(key, expected))
    sent = sorted(t["trigger_id"] for t in expected if t["status"] == "sent")
    assert sent and sorted(body["trigger_id"] for _, body in receiver.requests) == sent
    assert all(k == body["trigger_id"] for k, body in receiver.requests)            # Idempotency-Key
    dead = [json.loads(line) for line in (tmp_path / "event-dead-letters.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and dead[0]["stage"] == "decode" and "missing field" in dead[0]["reason"], dead
    print(f"examples/triggers.toml: {len(audit)} decisions in the audit file, {len(sent)} sent to the webhook, "
          f"{len(dead)} event dead letter")
