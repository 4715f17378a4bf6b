"""The repartition stage on the real broker: a raw topic not keyed by customer, re-keyed into
the engine's topic exactly once (one transaction per batch, carrying the consumed offsets).

- killed with SIGKILL at random points (and once stopped with SIGTERM) and restarted until
  done, it leaves every raw message exactly once in the keyed topic (read_committed), under
  its customer_id, on the partition Java's default partitioner would pick, in raw order per
  customer; undecodable messages pass unkeyed;
- a second instance joining the group mid-run (a rebalance), an abortable commit error and a
  retriable one lose and duplicate nothing;
- the engine evaluating the re-keyed topic fires exactly the triggers (and dead letters) of
  keyed input, although most customers sit on another partition.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from harness import ROOT, create_topic, produce, read_topic, run_engine, trigger_key, unique, write_config

from engine.operators.repartition import RepartitionConfig, Repartitioner

SAMPLE = ROOT / "examples" / "sample-events.jsonl"

# Messages the engine cannot decode (forwarded unkeyed), and one Segment message (keyed by userId).
UNDECODABLE = [b"not json {", b'{"type": "purchase", "customer_id": "c-x"}', b"[1, 2, 3]", b""]
SEGMENT = (b'{"type": "track", "event": "Order Completed", "userId": "seg-7", "messageId": "m-7", '
           b'"timestamp": "2026-01-01T10:00:00Z", "properties": {"revenue": 12.5}}')


def _lines(path: Path, limit: int | None = None) -> list[bytes]:
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    return lines[:limit] if limit is not None else lines


def _produce_unkeyed(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    """No key, round robin over the partitions, as a shop whose tracking pipeline does not key
    by customer; header `n` = the message's index in `values`."""
    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for n, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, partition=n % partitions, headers=[("n", str(n).encode())],
                                 on_delivery=lambda err, _m: err and errors.append(err))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0 and not errors, errors


def _read(bootstrap: str, topic: str, isolation: str = "read_committed") -> list[tuple[int, int, bytes | None, bytes,
                                                                                         dict[str, bytes]]]:
    """Every message of a topic as (partition, offset, key, value, headers)."""
    return read_topic(bootstrap, topic, lambda m: (m.partition(), m.offset(), m.key(), m.value(), dict(m.headers() or [])),
                      isolation)


def _murmur2(data: bytes) -> int:
    """Kafka's Java `Utils.murmur2` (the default partitioner's hash), as an unsigned 32-bit int."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, rest = data[length - length % 4:], length % 4
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def _java_partition(key: bytes, partitions: int) -> int:
    return (_murmur2(key) & 0x7FFFFFFF) % partitions


def _committed(monitor: Consumer, topic: str, partitions: int) -> int:
    """Messages the monitor's group has committed (sum of committed offsets); the monitor
    never joins the group. read_uncommitted: do not wait for pending transactional commits."""
    tps = monitor.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return sum(max(0, tp.offset) for tp in tps)


def test_murmur2_matches_java() -> None:
    # values of Kafka's UtilsTest.testMurmur2, as unsigned ints
    assert _murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert _murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert _murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert _murmur2(b"abc") == 479470107


def test_config_defaults_and_refusals() -> None:
    c = RepartitionConfig(brokers=["b:9092"], from_topic="raw", to_topic="keyed")
    assert (c.group_id, c.transactional_id, c.batch_size) == ("trigger-engine-repartition",
                                                              "trigger-engine-repartition-0", 5000)
    assert RepartitionConfig(brokers=["b:9092"], from_topic="raw", to_topic="keyed",
                             group_id="shop").transactional_id == "shop-0"
    with pytest.raises(ValueError, match="re-read its own output"):
        RepartitionConfig(brokers=["b:9092"], from_topic="t", to_topic="t")
    with pytest.raises(ValueError, match="isolation.level"):
        RepartitionConfig(brokers=["b:9092"], from_topic="raw", to_topic="keyed",
                          extra={"isolation.level": "read_uncommitted"})


def test_kill_9_rekeys_every_message_exactly_once(kafka_bootstrap: str, shared_data: Path, tmp_path: Path) -> None:
    rng = random.Random(20261201)
    values = (_lines(shared_data / "online-retail-orders.jsonl", 15_000)
              + _lines(shared_data / "rees46-clickstream-sample.jsonl"))
    rng.shuffle(values)     # customers of both files interleave in the raw partitions
    for special in [*UNDECODABLE, SEGMENT]:
        values.insert(rng.randrange(len(values)), special)
    expected_key = {n: orjson.loads(v)["customer_id"].encode() for n, v in enumerate(values)
                    if v not in UNDECODABLE and v != SEGMENT}
    expected_key[values.index(SEGMENT)] = b"seg-7"
    raw = create_topic(kafka_bootstrap, unique("raw-events"), partitions=3)
    keyed = create_topic(kafka_bootstrap, unique("keyed-events"), partitions=4)
    group = unique("repartition")
    _produce_unkeyed(kafka_bootstrap, raw, values, 3)
    total = len(values)

    cmd = [sys.executable, "-m", "engine.operators.repartition", "--brokers", kafka_bootstrap, "--from", raw,
           "--to", keyed, "--group", group, "--batch-size", "200", "--exit-at-end"]
    # Each run but the last is stopped once the group's committed progress has grown by a random
    # 1,500-3,500 messages in that run, after a further 0-100 ms, so that the stop lands anywhere
    # in the consume/produce/commit cycle of a working stage (not in its start-up): three times
    # with SIGKILL, then once with SIGTERM (a clean stop: exit 0).
    monitor = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "isolation.level": "read_uncommitted"})
    kills_mid_run, runs = 0, 0
    for stop in (signal.SIGKILL, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, None):
        runs += 1
        base = _committed(monitor, raw, 3)
        log_path = tmp_path / f"run-{runs}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            sent = False
            try:
                if stop is not None:
                    step = rng.randint(1_500, 3_500)
                    while proc.poll() is None and _committed(monitor, raw, 3) < base + step:
                        time.sleep(0.01)
                    time.sleep(rng.uniform(0, 0.1))
                    if proc.poll() is None:
                        proc.send_signal(stop)
                        sent = True
                proc.wait(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
        if sent and stop == signal.SIGKILL:
            kills_mid_run += _committed(monitor, raw, 3) < total
            continue
        assert proc.returncode == 0, log_path.read_text()[-3000:]
        if sent:     # SIGTERM: a clean stop, said in one line
            assert "SIGTERM received" in log_path.read_text(), log_path.read_text()[-3000:]
        if _committed(monitor, raw, 3) >= total:
            break
    monitor.close()
    assert kills_mid_run >= 2, f"only {kills_mid_run} kills landed mid-run: the test tested nothing"

    raw_msgs = {int(h["n"]): (p, off) for p, off, _k, _v, h in _read(kafka_bootstrap, raw)}
    got = _read(kafka_bootstrap, keyed)
    seen = Counter(int(h["n"]) for _p, _o, _k, _v, h in got)
    duplicated = [n for n, c in seen.items() if c > 1]
    missing = set(range(total)) - set(seen)
    assert not duplicated and not missing, f"{len(duplicated)} duplicated, {len(missing)} missing of {total}"
    partition_of: dict[bytes, int] = {}
    order: dict[tuple[bytes, int], list[int]] = defaultdict(list)   # (customer, raw partition) -> raw offsets
    for p, _off, key, value, headers in got:
        n = int(headers["n"])
        assert value == values[n]
        assert key == expected_key.get(n), (n, key, value)     # None for the undecodable ones
        if key is None:
            continue
        assert partition_of.setdefault(key, p) == p, f"customer {key!r} in partitions {partition_of[key]} and {p}"
        assert p == _java_partition(key, 4), f"customer {key!r}: partition {p}, Java's partitioner says otherwise"
        raw_p, raw_off = raw_msgs[n]
        order[(key, raw_p)].append(raw_off)
    assert all(offsets == sorted(offsets) for offsets in order.values()), "a customer's raw order changed"
    assert sum(1 for _p, _o, key, _v, _h in got if key is None) == len(UNDECODABLE)
    aborted_copies = len(_read(kafka_bootstrap, keyed, "read_uncommitted")) - total
    print(f"{total} messages, {runs} runs, {kills_mid_run} SIGKILLs mid-run, {aborted_copies} aborted copies "
          f"invisible to read_committed, 0 duplicates, {len(partition_of)} customers")


def test_rebalance_to_a_second_instance_neither_loses_nor_duplicates(kafka_bootstrap: str, shared_data: Path) -> None:
    # twice over (told apart by header `n`): a reads one partition after the other, so each must
    # last longer than the rebalance takes for the partition b gets to have messages left
    values = 2 * (_lines(shared_data / "online-retail-orders.jsonl")
                  + _lines(shared_data / "rees46-clickstream-sample.jsonl"))
    raw = create_topic(kafka_bootstrap, unique("raw-events"), partitions=3)
    keyed = create_topic(kafka_bootstrap, unique("keyed-events"), partitions=4)
    _produce_unkeyed(kafka_bootstrap, raw, values, 3)
    group = unique("repartition")
    stats: dict[str, object] = {}

    def instance(name: str) -> None:
        config = RepartitionConfig(brokers=[kafka_bootstrap], from_topic=raw, to_topic=keyed, group_id=group,
                                   transactional_id=f"{group}-{name}", batch_size=50,
                                   # a hears of the rebalance within 0.1 s, not the default 3 s
                                   extra={"session.timeout.ms": "6000", "heartbeat.interval.ms": "100"})
        stats[name] = Repartitioner(config).run(exit_at_end=True)

    first = threading.Thread(target=instance, args=("a",))
    first.start()
    # b joins once a, alone with all three partitions, has committed a twentieth of them
    monitor = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "isolation.level": "read_uncommitted"})
    while first.is_alive() and _committed(monitor, raw, 3) < len(values) // 20:
        time.sleep(0.01)
    monitor.close()
    second = threading.Thread(target=instance, args=("b",))
    second.start()
    first.join(120)
    second.join(120)
    got = Counter(int(h["n"]) for _p, _o, _k, _v, h in _read(kafka_bootstrap, keyed))
    assert got == Counter(range(len(values)))
    a, b = stats["a"], stats["b"]
    assert a.messages + b.messages == len(values)
    assert b.messages > 0 and a.messages > 0, "the second instance re-keyed nothing: the test tested no rebalance"
    print(f"{len(values)} messages: {a.messages} by the first instance, {b.messages} by the second, 0 duplicates")


class _FlakyTransactions:
    """The stage's real producer, with injected failures: the 3rd commit fails as abortable after
    its batch was written to the broker, the 5th times out once (retriable)."""

    def __init__(self, real: Producer) -> None:
        self._real = real
        self.commits = 0

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def commit_transaction(self, timeout: float) -> None:
        self.commits += 1
        if self.commits == 3:
            self._real.flush(timeout)
            raise KafkaException(KafkaError(KafkaError._STATE, "injected abortable error", txn_requires_abort=True))
        if self.commits == 5:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected timeout", retriable=True))
        self._real.commit_transaction(timeout)


def test_abortable_and_retriable_errors_neither_lose_nor_duplicate(kafka_bootstrap: str, shared_data: Path) -> None:
    values = _lines(shared_data / "rees46-clickstream-sample.jsonl", 3000)
    raw = create_topic(kafka_bootstrap, unique("raw-events"), partitions=2)
    keyed = create_topic(kafka_bootstrap, unique("keyed-events"), partitions=4)
    _produce_unkeyed(kafka_bootstrap, raw, values, 2)
    stage = Repartitioner(RepartitionConfig(brokers=[kafka_bootstrap], from_topic=raw, to_topic=keyed,
                                            group_id=unique("repartition"), batch_size=300))
    stage._producer = flaky = _FlakyTransactions(stage._producer)    # type: ignore[assignment]
    stats = stage.run(exit_at_end=True)
    assert flaky.commits > 5 and stats.aborted == 1
    assert (stats.rekeyed, stats.unkeyed) == (len(values), 0)   # the aborted batch is counted once
    got = Counter(int(h["n"]) for _p, _o, _k, _v, h in _read(kafka_bootstrap, keyed))
    assert got == Counter(range(len(values)))
    written = len(_read(kafka_bootstrap, keyed, "read_uncommitted"))
    assert written > len(values), "the aborted batch never reached the broker: the test tested nothing"


def test_rekeyed_topic_gives_the_triggers_of_keyed_input(kafka_bootstrap: str, redis_url: str, redis_client,
                                                         shared_data: Path, tmp_path: Path) -> None:
    # Time-sorted as a whole (2010-11 orders, 2019 clicks, the 2026 sample with consents), so
    # every partition of either topic sees its events in time order; plus undecodable messages.
    lines = (_lines(shared_data / "online-retail-orders.jsonl", 4000)
             + _lines(shared_data / "rees46-clickstream-sample.jsonl") + _lines(SAMPLE))
    for i, bad in enumerate(UNDECODABLE):
        lines.insert(1000 + 3000 * i, bad)
    keyed = create_topic(kafka_bootstrap, unique("keyed-events"), partitions=4)
    raw = create_topic(kafka_bootstrap, unique("raw-events"), partitions=1)
    rekeyed = create_topic(kafka_bootstrap, unique("rekeyed-events"), partitions=4)
    produce(kafka_bootstrap, keyed, lines)      # keyed by customer_id, librdkafka's consistent_random
    _produce_unkeyed(kafka_bootstrap, raw, lines, 1)
    stats = Repartitioner(RepartitionConfig(brokers=[kafka_bootstrap], from_topic=raw, to_topic=rekeyed,
                                            group_id=unique("repartition"))).run(exit_at_end=True)
    assert (stats.rekeyed, stats.unkeyed) == (len(lines) - len(UNDECODABLE), len(UNDECODABLE))

    in_engine = create_topic(kafka_bootstrap, unique("in-engine-events"), partitions=4)
    triggers, dead = {}, {}
    for name, topic in (("keyed", keyed), ("rekeyed", rekeyed), ("in-engine", in_engine)):
        sink, dead_topic = unique(f"{name}-triggers"), unique(f"{name}-dead")
        config = write_config(tmp_path / f"{name}.toml", topic=topic, redis_url=redis_url, prefix=unique(name),
                              sink_topic=sink, dead_topic=dead_topic)
        if name == "in-engine":   # `triggers run` with the stage on: raw topic in, the keyed input's triggers out
            config.write_text(config.read_text().replace(f'[kafka]\ntopic = "{topic}"\n',
                                                         f'[kafka]\ntopic = "{topic}"\nrepartition_from = "{raw}"\n'))
        try:
            run_engine(config, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the engine did not end its bounded run on the {name} topic within 120 s (a topic written "
                        "in transactions ends with a commit marker, which a bounded run must count as read)")
        triggers[name] = read_topic(kafka_bootstrap, sink)
        dead[name] = Counter((d["reason"], d["raw"]) for d in read_topic(kafka_bootstrap, dead_topic))
    expected = Counter(trigger_key(t) for t in triggers["keyed"])
    assert len(expected) >= 500, f"only {len(expected)} triggers: the comparison shows little"
    for name in ("rekeyed", "in-engine"):
        got = Counter(trigger_key(t) for t in triggers[name])
        assert got == expected, (f"{name}: {len(got - expected)} triggers only from the re-keyed topic, "
                                 f"{len(expected - got)} only from the keyed one")
        # undecodable messages: forwarded unkeyed, dead-lettered by the engine with the decode reason
        assert dead[name] == dead["keyed"] and sum(dead["keyed"].values()) == len(UNDECODABLE), dead

    def partitions(topic: str) -> dict[bytes, int]:
        return {key: p for p, _o, key, _v, _h in _read(kafka_bootstrap, topic) if key is not None}

    placed, replaced = partitions(keyed), partitions(rekeyed)
    moved = sum(1 for key, p in replaced.items() if placed.get(key) != p)
    assert moved, "every customer is on the same partition in both topics: the test shows nothing"
    print(f"{len(lines)} messages, {len(expected)} triggers and {len(UNDECODABLE)} dead letters identical from "
          f"keyed and re-keyed input, {moved} of {len(replaced)} customers on another partition")
