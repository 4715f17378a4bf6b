"""The transactional outbox against the real broker, server and receivers (SPEC §6): a receiver
that hangs delays only its own relay; one that refuses some triggers for good gets the rest,
the refused ones go to its dead-letter file per trigger and `triggers resend` delivers them
later; a relay that cannot deliver fills its outbox up to the bound, where processing pauses
until the relay catches up, with nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys

from harness import ROOT, Receiver, create_topic, produce, read_topic, run_engine, unique, write_config
from test_run import backtest

from bench.hang import measure
from engine.core.times import now_ms
from engine.events.decode import read_jsonl

SAMPLE = ROOT / "examples" / "sample-events.jsonl"
RATE = 300.0   # events/s produced while the engine runs


def test_a_hanging_receiver_delays_only_its_own_relay(kafka_bootstrap, redis_url, redis_client, tmp_path):
    hang_s = 20.0
    f = measure(hang_s=hang_s, rate=RATE, before_s=3.0, after_s=3.0, workdir=tmp_path, redis_url=redis_url,
                bootstrap=kafka_bootstrap)
    assert f["lost"] == 0 and f["unexpected"] == 0 and f["dead_lettered"] == 0, f        # the backtest's triggers
    assert f["received_distinct"] == f["expected"] > 50, f
    assert f["events_processed_during_hang"] >= 0.9 * RATE * hang_s, f                    # processing went on
    assert f["max_consumer_lag_during_hang"] <= RATE, f                                   # under a second behind
    assert f["delivered_during_hang"] <= 4 and f["requests_held_by_the_hang"] >= 3, f      # it hung (4 were in flight)
    lags = f["relay_lag_samples_during_hang"]
    assert lags[-1] >= 20 and lags[-1] > lags[len(lags) // 4], f                         # the relay's lag grew
    assert f["relay_lag_at_end"] == 0, f                                                  # and came back to 0
    health = f["health_during_hang"]
    assert health["state"] == "retrying" and "timed out" in health["last_error"], health
    assert "sink:webhook" in f["waiting_for_during_hang"], f
    print({k: v for k, v in f.items() if k not in ("log_tail", "relay_lag_samples_during_hang")})


def test_a_full_outbox_pauses_processing_until_the_relay_catches_up(kafka_bootstrap, redis_url, redis_client,
                                                                   tmp_path):
    bound = 5
    f = measure(hang_s=12.0, rate=RATE, before_s=3.0, after_s=3.0, workdir=tmp_path, redis_url=redis_url,
                bootstrap=kafka_bootstrap, outbox_max_entries=bound)
    assert f["lost"] == 0 and f["unexpected"] == 0 and f["dead_lettered"] == 0, f        # nothing lost
    assert f["max_outbox_entries"] <= bound + 5, f                                        # bounded (+ one epoch)
    assert len(f["paused_during_hang"]) == 4, f                                           # every partition paused
    assert "outbox" in f["waiting_for_during_hang"], f
    assert f["events_processed_during_hang"] < 0.5 * RATE * 12.0, f                       # processing stopped
    assert f["max_consumer_lag_during_hang"] > RATE * 3, f                                # the input waited in Kafka
    assert f["relay_lag_at_end"] == 0, f
    print({k: v for k, v in f.items() if k not in ("log_tail", "relay_lag_samples_during_hang")})


def resend(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "resend", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_refused_triggers_are_dead_lettered_per_trigger_and_resent_later(kafka_bootstrap, redis_url, redis_client,
                                                                        tmp_path):
    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    topic = create_topic(kafka_bootstrap, unique("refuse-events"))
    produce(kafka_bootstrap, topic, lines)
    expected = {t["trigger_id"] for t in backtest(lines, until=now_ms())[0]}
    refused = set(sorted(expected)[::9])             # the receiver answers 400 for these
    receiver = Receiver(refuse=set(refused))
    sink = unique("refuse-triggers")
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=unique("refuse"),
                       sink_topic=sink, dead_topic=unique("d"), webhook=receiver.url)
    dead_file = tmp_path / "webhook-dead-letters.jsonl"
    try:
        res = run_engine(cfg)                        # the bounded run ends: refusals do not hold it up
        got = {key for key, _ in receiver.requests}
        assert got == expected - refused and receiver.refused == len(refused)
        assert {t["trigger_id"] for t in read_topic(kafka_bootstrap, sink)} == expected   # other sinks unaffected
        letters = [json.loads(line) for line in dead_file.read_text().splitlines()]
        assert sorted(d["item"]["trigger_id"] for d in letters) == sorted(refused)       # one line per trigger
        assert {(d["sink"], d["kind"], d["reason"]) for d in letters} == {("webhook", "trigger", "HTTP 400 Bad Request")}
        assert "refused for good, written to" in res.stderr

        dry = resend(str(dead_file), "--sink", "webhook", "--config", str(cfg), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would deliver {len(refused)} triggers through sink webhook" in dry.stdout
        assert receiver.refused == len(refused) and len(receiver.requests) == len(got)   # nothing sent

        again = resend(str(dead_file), "--sink", "webhook", "--config", str(cfg), "--retry-for", "2")
        assert again.returncode == 1 and f"{len(refused)} refused again" in again.stdout    # still refused
        receiver.refuse.clear()                      # the receiver was fixed
        done = resend(str(dead_file), "--sink", "webhook", "--config", str(cfg))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{len(refused)} of {len(refused)} triggers delivered through sink webhook" in done.stdout
        assert {key for key, _ in receiver.requests} == expected
    finally:
        receiver.close()
    unknown = resend(str(dead_file), "--sink", "nope", "--config", str(cfg))
    assert unknown.returncode == 2 and "no sink 'nope'" in unknown.stderr and "webhook" in unknown.stderr
    print(f"{len(expected)} triggers, {len(refused)} refused and dead-lettered, then resent")
