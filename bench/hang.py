"""A webhook receiver that hangs (takes the connection and the request, never answers) for a
while in the middle of a live run: what the outbox and its relays (SPEC §6) make of it.

    python -m bench.hang [--hang 300] [--rate 300] [--before 5] [--after 5] [--outbox-max-entries N]

`triggers run` reads a Kafka topic that a producer fills at `--rate` events/s (the workload's
events, stamped with the time they are sent, so that the stream is current), with its states in
Redis and one sink, a webhook on 127.0.0.1 that answers at once, then hangs for `--hang` seconds,
then answers again. Printed: the events processed and committed during the hang, the largest
consumer lag (events produced but not committed), the webhook relay's largest lag (outbox
entries not delivered, from /metrics), what /healthz said during the hang, the triggers
delivered after recovery, and lost / dead-lettered / re-sent against a backtest of the same
events (lost must be 0). Needs the project's Kafka and Redis (`scripts/services.sh start`).
`tests/integration/test_outbox_live.py` runs it with a 20 s hang.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import redis
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from bench.workload import generate
from engine.core.times import format_ts, now_ms
from engine.events.decode import EventDecoder
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile
from engine.state.redis import RedisStore

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
BOOTSTRAP = os.environ.get("BENCH_KAFKA", "127.0.0.1:9092")
PARTITIONS = 4
SAMPLE_S = 0.25


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:   # /healthz answers 503 while unhealthy, with its report
        return e.read()


def relay_lag(port: int, sink: str = "webhook") -> int | None:
    """The sink's relay lag over all partitions, from /metrics; None while it is not served yet."""
    try:
        text = _get(f"http://127.0.0.1:{port}/metrics").decode()
    except OSError:
        return None
    total = None
    for family in text_string_to_metric_families(text):
        if family.name == "triggers_relay_lag":
            for sample in family.samples:
                if sample.labels.get("sink") == sink:
                    total = (total or 0) + int(sample.value)
    return total


def healthz(port: int) -> dict:
    return json.loads(_get(f"http://127.0.0.1:{port}/healthz"))


# Most bundled rules wait (a cart's 30 minutes, a welcome's opt-in): in the scenario's seconds
# they fire little. This one thanks every purchase at once (a few a second), so that every
# partition's relay has triggers to deliver while the receiver hangs.
BUSY_RULE = """rules:
  - id: thanks
    type: transactional
    on: purchase
    then: {action: thank-you, channel: email}
"""


def rules_dir(into: Path) -> Path:
    """The bundled rules and `BUSY_RULE`."""
    d = into / "rules"
    shutil.copytree(ROOT / "rules", d, dirs_exist_ok=True)
    (d / "busy.yaml").write_text(BUSY_RULE)
    return d


def expected_ids(lines: list[bytes], until: int, rules: Path) -> set[str]:
    """The trigger ids a backtest of the same events gives with its clock stopped at `until`,
    as the live engine's was when it stopped: deadlines due later (a cart's 30 minutes) are
    pending in both (not drained)."""
    out: list = []
    replay = Replay(load_and_compile(rules), out.extend, until=until)
    replay.feed(EventDecoder().decode_batch((raw, "hang") for raw in lines)[0])
    replay.finish()
    return {t.trigger_id for t in out}


def measure(hang_s: float = 300.0, rate: float = 300.0, before_s: float = 5.0, after_s: float = 5.0,
            workdir: Path | None = None, redis_url: str = REDIS_URL, bootstrap: str = BOOTSTRAP,
            outbox_max_entries: int | None = None) -> dict:
    """Run the scenario; the figures, with `lost` (backtest triggers the receiver never got).
    `outbox_max_entries`: the relay setting of that name (unset: the default)."""
    sys.path.insert(0, str(ROOT / "tests" / "integration"))   # the tests' receiver, which hangs on request
    from harness import Receiver, create_topic, free_port
    tmp = Path(workdir or tempfile.mkdtemp(prefix="hang-"))
    rules = rules_dir(tmp)
    run = uuid.uuid4().hex[:8]
    topic, prefix = f"hang-events-{run}", f"hang{run}"
    create_topic(bootstrap, topic, PARTITIONS)
    count = int(rate * (before_s + hang_s + after_s))
    raw = list(generate(events=count, customers=max(100, count // 8), days=30, seed=11, start="2026-01-01"))
    receiver = Receiver()
    port = free_port()
    dead_file = tmp / "webhook-dead-letters.jsonl"
    config = tmp / "hang.toml"
    config.write_text(f"""
rules = "{rules}"
commit_interval_ms = 100
metrics_port = {port}
[kafka]
brokers = ["{bootstrap}"]
topic = "{topic}"
[redis]
url = "{redis_url}"
prefix = "{prefix}"
[relay]
{f"outbox_max_entries = {outbox_max_entries}" if outbox_max_entries else ""}
[sinks.webhook]
url = "{receiver.url}"
timeout_s = 1.0
backoff_max_s = 1.0
statuses = ["sent", "held_out", "suppressed"]
dead_letter_path = "{dead_file}"
[dead_letters]
file = "{tmp / 'events-dead-letters.jsonl'}"
""")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr or ()), daemon=True).start()
    store = RedisStore(redis_url, prefix)
    partitions = [f"{topic}-{p}" for p in range(PARTITIONS)]

    def committed() -> int:
        return sum(store.load_offset(p) or 0 for p in partitions)

    def outbox_entries() -> int:   # the fullest partition's
        return max(store.client.xlen(store.outbox_key(p)) for p in partitions)

    lines: list[bytes] = []
    produced = [0]
    try:
        while healthz_or_none(port) is None or len(healthz(port).get("partitions", {})) < PARTITIONS:
            if proc.poll() is not None:
                raise RuntimeError("the engine stopped at start-up:\n" + "".join(stderr)[-3000:])
            time.sleep(0.1)
        t0 = time.time()
        for i, e in enumerate(raw):   # stamped with the time each is sent: a current stream
            e["ts"] = format_ts(int((t0 + i / rate) * 1000))
            lines.append(orjson.dumps(e))

        def send() -> None:
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
            for i, line in enumerate(lines):
                delay = t0 + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                producer.produce(topic, key=orjson.loads(line)["customer_id"].encode(), value=line)
                producer.poll(0)
                produced[0] = i + 1
            producer.flush(30)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        # (time, produced, committed, relay lag, entries in the fullest outbox)
        samples: list[tuple[float, int, int, int | None, int]] = []
        health_during: dict = {}

        def sample() -> None:
            samples.append((time.time(), produced[0], committed(), relay_lag(port), outbox_entries()))

        def wait_until(moment: float) -> None:
            while time.time() < moment:
                sample()
                time.sleep(SAMPLE_S)

        wait_until(t0 + before_s)
        hang_start, got_before = time.time(), len(receiver.requests)
        committed_at_hang = committed()
        receiver.hang()
        wait_until(hang_start + hang_s * 0.8)
        health_during = healthz(port)
        wait_until(hang_start + hang_s)
        committed_after_hang = committed()
        got_at_recovery = len(receiver.requests)
        receiver.answer()
        recovered_at = time.time()
        sender.join()
        deadline = time.time() + max(120.0, hang_s)
        while time.time() < deadline:
            sample()
            if committed() == len(lines) and samples[-1][3] == 0:
                break
            time.sleep(SAMPLE_S)
        caught_up_s = time.time() - recovered_at
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        until = now_ms()
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.close()
    if proc.returncode != 0:
        raise RuntimeError(f"triggers run exited {proc.returncode}:\n" + "".join(stderr)[-3000:])
    expected = expected_ids(lines, until, rules)
    got = [body["trigger_id"] for _, body in receiver.requests]
    lost = expected - set(got)
    lags = [s[3] for s in samples if s[3] is not None]
    during = [s for s in samples if hang_start <= s[0] <= hang_start + hang_s]
    return {
        "hang_s": hang_s, "rate": rate, "events": len(lines),
        "events_processed_during_hang": committed_after_hang - committed_at_hang,
        "max_consumer_lag": max(s[1] - s[2] for s in samples),
        "max_consumer_lag_during_hang": max((s[1] - s[2] for s in during), default=0),
        "max_relay_lag": max(lags, default=0),
        "max_outbox_entries": max(s[4] for s in samples),
        "paused_during_hang": sorted(health_during.get("relays", {}).get("webhook", {}).get("outbox_full", [])),
        "relay_lag_at_end": lags[-1] if lags else None,
        "relay_lag_samples_during_hang": [s[3] for s in during],
        "health_during_hang": health_during.get("relays", {}).get("webhook", {}),
        "waiting_for_during_hang": health_during.get("waiting_for", {}),
        "delivered_before_hang": got_before,
        "delivered_during_hang": got_at_recovery - got_before,
        "delivered_after_recovery": len(got) - got_at_recovery,
        "seconds_to_catch_up": round(caught_up_s, 1),
        "requests_held_by_the_hang": receiver.hung,
        "expected": len(expected), "received_distinct": len(set(got)), "re_sent": len(got) - len(set(got)),
        "lost": len(lost), "unexpected": len(set(got) - expected),
        "dead_lettered": dead_file.read_text().count("\n") if dead_file.exists() else 0,
        "log_tail": "".join(stderr)[-2000:],
    }


def healthz_or_none(port: int) -> dict | None:
    try:
        return healthz(port)
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hang", type=float, default=300.0, help="seconds the receiver hangs (default 300)")
    parser.add_argument("--rate", type=float, default=300.0, help="events per second produced (default 300)")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of normal running before the hang")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of events produced after it")
    parser.add_argument("--outbox-max-entries", type=int, help="relay.outbox_max_entries (default: the engine's)")
    args = parser.parse_args()
    redis.Redis.from_url(REDIS_URL).ping()
    figures = measure(args.hang, args.rate, args.before, args.after, outbox_max_entries=args.outbox_max_entries)
    log_tail = figures.pop("log_tail")
    samples = figures.pop("relay_lag_samples_during_hang")
    for key, value in figures.items():
        print(f"{key:32} {value}")
    print(f"{'relay lag during the hang':32} {samples[:: max(1, len(samples) // 12)]}")
    if figures["lost"]:
        print(log_tail, file=sys.stderr)
        raise SystemExit(f"LOST {figures['lost']} trigger(s)")


if __name__ == "__main__":
    main()
