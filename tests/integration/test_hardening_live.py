"""Hostile input against the live engine via Kafka (issue "Hardening", items 1, 3, 4): the fuzz
stream never stops it, mis-keyed messages never touch state, and receivers get only `sent`."""

from __future__ import annotations

import json
import re
from collections import Counter

from confluent_kafka import Producer
from harness import (
    ROOT,
    Receiver,
    create_topic,
    produce,
    read_topic,
    run_engine,
    unique,
    write_config,
)
from test_run import backtest

from bench.hostile import hostile_stream
from engine.core.times import now_ms
from engine.events.decode import read_jsonl
from engine.state.customer import decode_state
from engine.state.redis import RedisStore

SAMPLE = ROOT / "examples" / "sample-events.jsonl"
DONE = re.compile(r"partition \S+: done: (\d+) events \(\d+ late\), (\d+) dead letters, (\d+) triggers")


def produce_raw(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None, int | None]]) -> None:
    """Messages exactly as given: (value, key, partition); None key = no key, as careless producers send."""
    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "message.max.bytes": 2_000_000})
    for value, key, partition in messages:
        kwargs = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=value, key=key, on_delivery=lambda err, _m: err and errors.append(err), **kwargs)
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors


def test_the_fuzz_stream_never_stops_the_live_engine(kafka_bootstrap, redis_url, redis_client, tmp_path):
    messages = list(hostile_stream(6000, seed=2))
    topic = create_topic(kafka_bootstrap, unique("fuzz-events"))
    produce_raw(kafka_bootstrap, topic, [(v, k, None) for v, k in messages])
    prefix, dead_topic, sink = unique("fuzz"), unique("fuzz-dead"), unique("fuzz-triggers")
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                       dead_topic=dead_topic)
    res = run_engine(cfg)
    assert "Traceback" not in res.stderr
    done = [tuple(map(int, m.groups())) for m in DONE.finditer(res.stderr)]
    assert len(done) == 4
    applied, dead, fired = (sum(x) for x in zip(*done))
    assert applied + dead == len(messages)                                     # applied + dead-lettered = sent
    letters = read_topic(kafka_bootstrap, dead_topic)
    assert len(letters) == dead and dead > 1500
    stages = Counter(d["stage"] for d in letters)
    assert stages["key"] > 50 and stages["decode"] > 1000, stages
    assert len(read_topic(kafka_bootstrap, sink)) == fired > 300

    store = RedisStore(redis_url, prefix)
    keys = list(redis_client.scan_iter(match=f"{prefix}:s:*", count=1000))
    assert len(keys) > 30
    for raw in redis_client.mget(keys):                                        # every committed state decodes
        decode_state(raw)
    assert sum(store.load_offsets().values()) == len(messages)                 # everything committed

    again = run_engine(cfg)                                                    # and a restart changes nothing
    assert "Traceback" not in again.stderr and len(read_topic(kafka_bootstrap, sink)) == fired
    print(f"{len(messages)} messages: {applied} applied, {dead} dead-lettered ({dict(stages)}), {fired} triggers")


def purchase(eid: str, cid: str, minute: int, amount: float = 100) -> bytes:
    return json.dumps({"event_id": eid, "type": "purchase", "customer_id": cid, "ts": 1_767_225_600_000 + minute
                       * 60_000, "properties": {"amount": amount}}).encode()


def test_mis_keyed_messages_are_dead_lettered_and_touch_no_state(kafka_bootstrap, redis_url, redis_client, tmp_path):
    topic = create_topic(kafka_bootstrap, unique("mis-events"))
    unkeyed = [(purchase(f"u{i}", "c-unkeyed", i), None, i % 4) for i in range(40)]      # no key, spread out
    wrong = [(purchase(f"w{i}", "c-wrong", i), b"order-77", None) for i in range(40)]   # keyed by order id
    right = [(purchase(f"r{i}", "c-right", i), b"c-right", None) for i in range(40)]
    produce_raw(kafka_bootstrap, topic, unkeyed + wrong + right)
    prefix, dead_topic = unique("mis"), unique("mis-dead")
    cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=unique("t"),
                       dead_topic=dead_topic)
    run_engine(cfg)
    letters = read_topic(kafka_bootstrap, dead_topic)
    assert len(letters) == 80 and {d["stage"] for d in letters} == {"key"}
    no_key = [d for d in letters if "c-unkeyed" in d["reason"]]
    assert len(no_key) == 40 and no_key[0]["reason"].startswith("message has no key, but its customer_id is 'c-unkeyed'")
    assert all("message has key 'order-77', but its customer_id is 'c-wrong'" in d["reason"]
               for d in letters if "c-wrong" in d["reason"])
    assert all(re.fullmatch(rf"kafka {topic}/\d@\d+", d["source"]) for d in letters)
    states = RedisStore(redis_url, prefix).load_many(["c-unkeyed", "c-wrong", "c-right"])
    assert set(states) == {"c-right"}                                          # no state touched
    assert states["c-right"].aggs["lifetime_spend"] == 4000 and states["c-right"].aggs["purchases"] == 40


def test_with_default_settings_receivers_get_only_sent_triggers(kafka_bootstrap, redis_url, redis_client, tmp_path):
    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    topic = create_topic(kafka_bootstrap, unique("status-events"))
    produce(kafka_bootstrap, topic, lines)
    receiver = Receiver()
    out_file = tmp_path / "triggers.jsonl"
    sink = unique("status-triggers")
    try:
        cfg = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=unique("status"),
                           sink_topic=sink, dead_topic=unique("d"), webhook=receiver.url, all_statuses=False,
                           extra=f'[sinks.file]\npath = "{out_file}"\n')
        res = run_engine(cfg)
    finally:
        receiver.close()
    expected = backtest(lines, until=now_ms())[0]
    sent = {t["trigger_id"] for t in expected if t["status"] == "sent"}
    assert len(sent) > 100 and len(sent) < len(expected)                       # the sample has every status
    webhook = {body["trigger_id"]: body for _, body in receiver.requests}
    in_file = [json.loads(line) for line in out_file.read_text().splitlines()]
    kafka = read_topic(kafka_bootstrap, sink)
    for got in (list(webhook.values()), in_file, kafka):
        assert {t["status"] for t in got} == {"sent"}
        assert {t["trigger_id"] for t in got} == sent
    for name in ("kafka", "webhook", "file"):
        assert f"sink {name} delivers sent triggers" in res.stderr
    print(f"{len(expected)} triggers in the backtest, {len(sent)} sent: webhook {len(webhook)}, file {len(in_file)}, "
          f"Kafka {len(kafka)}, all with status sent")
