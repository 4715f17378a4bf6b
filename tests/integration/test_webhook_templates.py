"""examples/webhooks/*.toml in a live run (issue 16): `triggers run` with each example's settings,
against the real Kafka and Redis, posts the backtest's `sent` triggers to a local receiver in the
receiver's own format: Customer.io one event per request at the customer's URL, Braze events
wrapped in `{"events": [...]}` up to batch_size per request; each request signed over the body
as it arrived."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote, urlsplit

from harness import ROOT, Receiver, create_topic, produce, unique
from test_produce import backtest

from engine.core.times import now_ms, parse_ts

EXAMPLES = ROOT / "examples" / "webhooks"
SAMPLE = ROOT / "examples" / "sample-events.jsonl"
SECRET = "test-secret-for-the-signature"


def run_example(name: str, path: str, kafka_bootstrap: str, redis_url: str, tmp_path: Path,
                lines: list[bytes], **env: str) -> Receiver:
    """Runs the example to the end of a fresh topic; the receiver it posted to."""
    topic = create_topic(kafka_bootstrap, unique(f"{name}-events"))
    produce(kafka_bootstrap, topic, lines)
    receiver = Receiver()
    base = urlsplit(receiver.url)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRIGGERS_SINKS__WEBHOOK__URL": f"http://{base.netloc}{path}",
           "TRIGGERS_SINKS__WEBHOOK__SECRET": SECRET, "TRIGGERS_REDIS__PREFIX": unique(name),
           "TRIGGERS_METRICS_PORT": "0", "TRIGGERS_KAFKA__BROKERS": json.dumps([kafka_bootstrap]),
           "TRIGGERS_DEAD_LETTERS__FILE": str(tmp_path / "event-dead-letters.jsonl"), **env}
    try:
        res = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--config", str(EXAMPLES / f"{name}.toml"),
                              "--rules", str(ROOT / "rules"), "--topic", topic, "--redis-url", redis_url,
                              "--exit-at-end"], cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    finally:
        receiver.close()
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and SECRET not in res.stderr
    assert not (tmp_path / f"{name}-dead-letters.jsonl").exists()
    for _, headers, body in receiver.received:   # the signature is over the body as it arrived
        ts = headers["x-trigger-timestamp"]
        expected = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-trigger-signature"], f"sha256={expected}")
    return receiver


def sent(lines: list[bytes]) -> list[dict]:
    return [t for t in backtest(ROOT / "rules", lines, until=now_ms()) if t["status"] == "sent"]


def test_customerio_example_posts_one_event_per_request_to_the_customers_url(kafka_bootstrap, redis_url,
                                                                             redis_client, tmp_path):
    lines = SAMPLE.read_bytes().splitlines()[:1500]
    expected = {t["trigger_id"]: t for t in sent(lines)}
    receiver = run_example("customerio", "/api/v1/customers/{customer_id}/events", kafka_bootstrap, redis_url,
                           tmp_path, lines)
    assert len(expected) > 50 and sorted(k for k, _ in receiver.requests) == sorted(expected)
    for (key, body), (path, headers, _) in zip(receiver.requests, receiver.received, strict=True):
        t = expected[key]
        assert path == f"/api/v1/customers/{quote(t['customer_id'], safe='')}/events"
        assert headers["authorization"].startswith("Basic ")
        assert body == {"name": t["action"], "timestamp": parse_ts(t["fired_at"]) // 1000,
                        "data": {"trigger_id": key, "rule_id": t["rule_id"], "channel": t["channel"],
                                 "payload": t["payload"]}}


def test_braze_example_posts_events_arrays_up_to_batch_size(kafka_bootstrap, redis_url, redis_client, tmp_path):
    lines = SAMPLE.read_bytes().splitlines()[:1500]
    expected = sent(lines)
    # a relay batch of 40 and requests of at most 15: several requests per batch, some full
    receiver = run_example("braze", "/users/track", kafka_bootstrap, redis_url, tmp_path, lines,
                           TRIGGERS_SINKS__WEBHOOK__BATCH_SIZE="15", TRIGGERS_RELAY__BATCH_SIZE="40")
    bodies = [body for _, body in receiver.requests]
    assert all(list(b) == ["events"] and 1 <= len(b["events"]) <= 15 for b in bodies)
    assert max(len(b["events"]) for b in bodies) == 15 and len(bodies) < len(expected)
    assert all(path == "/users/track" for path, _, _ in receiver.received)
    got = Counter(json.dumps(e, sort_keys=True) for b in bodies for e in b["events"])
    want = Counter(json.dumps({"external_id": t["customer_id"], "name": t["action"], "time": t["fired_at"],
                               "properties": t["payload"]}, sort_keys=True) for t in expected)
    assert got == want
