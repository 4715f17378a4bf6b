"""`triggers produce` (issue 16): a file of real shop data, native and Segment lines and a few that
are not events, produced into a new topic and run live, gives the backtest's triggers; every
message is keyed by its customer id; an unreachable broker is one line, exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from harness import ROOT, create_topic, read_topic, run_engine, unique, write_config

from engine.cli.version import engine_version
from engine.core.times import format_ts, now_ms
from engine.rules.digest import rules_digest

RETAIL = ROOT.parent / "shared" / "data" / "online-retail-orders.jsonl"
SEGMENT_NAMES = {"purchase": "Order Completed", "refund": "Order Refunded"}


def as_segment(line: bytes) -> bytes:
    """A native event as a Segment `track` message (what many shops emit): the decoder maps it back."""
    e = orjson.loads(line)
    props = dict(e["properties"])
    if e["type"] == "purchase":
        props["revenue"] = props.pop("amount")           # Segment's name for it
    ts = e["ts"] if isinstance(e["ts"], str) else format_ts(e["ts"])
    return orjson.dumps({"type": "track", "event": SEGMENT_NAMES[e["type"]], "userId": e["customer_id"],
                         "messageId": e["event_id"], "timestamp": ts, "properties": props})


def shop_rules(tmp_path: Path) -> Path:
    """The bundled rules with `consent: optional`: the retail data has no consent events, and under
    `required` every trigger would be suppressed; so the caps, quiet hours and the control group decide."""
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    policy = rules / "policy.yaml"
    assert "consent: required" in policy.read_text()
    policy.write_text(policy.read_text().replace("consent: required", "consent: optional"))
    return rules


def backtest(rules: Path, lines: list[bytes], until: int) -> list[dict]:
    import msgspec

    from engine.events.decode import EventDecoder
    from engine.offline.backtest import Replay
    from engine.rules.compiler import load_and_compile

    out: list = []
    replay = Replay(load_and_compile(rules), out.extend, until=until)
    replay.feed(EventDecoder().decode_batch((raw, "x") for raw in lines)[0])
    replay.finish()
    return [msgspec.to_builtins(t) for t in out]


def produce_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "produce", *args]


def keys_and_customers(bootstrap: str, topic: str) -> list[tuple[bytes, str]]:
    def key_and_customer(m):
        value = json.loads(m.value())
        return m.key(), value.get("customer_id", value.get("userId"))

    return read_topic(bootstrap, topic, key_and_customer)


@pytest.mark.skipif(not RETAIL.is_file(), reason="the shared real data is not here")
def test_produce_then_run_gives_the_backtests_triggers(kafka_bootstrap, redis_url, redis_client, tmp_path):
    native = RETAIL.read_bytes().splitlines()
    lines = [as_segment(line) if i % 7 == 3 else line for i, line in enumerate(native)]
    bad = {100: b"this is not json", 5000: b'{"type": "purchase", "customer_id": "c1"}',
           9000: b'{"type": "track", "event": "Order Completed", "messageId": "m-1", "timestamp": "2011-01-01T00:00:00Z"}'}
    for at, line in sorted(bad.items()):            # ascending: each lands on line at + 1
        lines.insert(at, line)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    topic = create_topic(kafka_bootstrap, unique("produce-events"))

    res = subprocess.run(produce_cmd("--events", str(events_file), "--topic", topic, "--brokers", kafka_bootstrap),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr                # every event sent; some lines were not events
    assert "Traceback" not in res.stderr
    reported = res.stderr.splitlines()
    assert [line.split(": not JSON: ")[0] for line in reported] == [
        f"{events_file}:101: not an event, not sent",
        f"{events_file}:5001: not an event, not sent: missing fields 'event_id', 'ts'",
        f"{events_file}:9001: not an event, not sent: segment message has no userId and no anonymousId",
    ]
    n = len(native)
    assert res.stdout.startswith(f"{events_file}: {n:,} events sent to {topic} (4 partitions) on {kafka_bootstrap}, "
                                 "keyed by customer_id, in ")
    assert res.stdout.rstrip().endswith(f"; {n + 3:,} lines read, 3 not events (not sent)")

    keyed = keys_and_customers(kafka_bootstrap, topic)
    assert len(keyed) == n and all(key == customer.encode() for key, customer in keyed)

    sink, prefix, rules = unique("produce-triggers"), unique("produce"), shop_rules(tmp_path)
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                       dead_topic=unique("d"), rules=rules)
    started = run_engine(cfg).stderr
    # the start-up line names the build and the rules' content hash, as `triggers validate` prints it
    assert f"running: triggers {engine_version()}, 9 rules from {rules} ({rules_digest(rules)})" in started
    got = read_topic(kafka_bootstrap, sink)
    expected = backtest(rules, lines, until=now_ms())
    key = lambda t: (t["trigger_id"], t["status"], t["fired_at"])   # noqa: E731
    assert len(expected) > 1000
    assert sorted(map(key, got)) == sorted(map(key, expected))
    assert sorted(got, key=key) == sorted(expected, key=key)      # payloads too
    statuses = {s: sum(t["status"] == s for t in got) for s in ("sent", "held_out", "suppressed")}
    assert all(statuses.values())
    print(f"produce: {n:,} events ({sum(1 for i in range(n) if i % 7 == 3):,} as Segment), 3 not events; "
          f"live {len(got):,} triggers = backtest {len(expected):,} ({statuses})")


def test_produce_from_stdin_and_an_unreachable_broker(kafka_bootstrap, tmp_path):
    topic = create_topic(kafka_bootstrap, unique("produce-stdin"), partitions=2)
    sample = (ROOT / "examples" / "sample-events.jsonl").read_bytes()
    res = subprocess.run(produce_cmd("--events", "-", "--topic", topic, "--brokers", kafka_bootstrap), cwd=ROOT,
                         input=sample, capture_output=True, timeout=120)
    assert res.returncode == 0 and res.stderr == b"", res.stderr.decode()
    assert res.stdout.decode().startswith(f"<stdin>: 5,000 events sent to {topic} (2 partitions)")
    assert len(read_topic(kafka_bootstrap, topic)) == 5000

    started = time.monotonic()
    down = subprocess.run(produce_cmd("--events", "-", "--topic", topic, "--brokers", "127.0.0.1:1", "--timeout", "3"),
                          cwd=ROOT, input=sample.decode(), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert down.returncode == 2 and time.monotonic() - started < 15
    lines = down.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 5 and "Traceback" not in down.stderr, down.stderr
    assert lines[-1].startswith("triggers produce: cannot reach Kafka at 127.0.0.1:1 within 3 s: "), lines
    assert down.stdout == ""
