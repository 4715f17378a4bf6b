"""`triggers backfill`: seed the live engine's state in Redis from a history of events
(`engine.offline.backfill`), without sending anything for the past."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from engine.cli.common import CommandError, add_redis_options, check_events_file, exit_status, load_rules, read_settings, redis_overrides

if TYPE_CHECKING:
    from engine.operators.settings import KafkaSource

DESCRIPTION = """\
Replay a history of events through the rules (the backtest, up to --until or the history's last
event) and write its end state to Redis as the live engine's starting point: each customer's
state in the partition of --topic that Kafka puts their key in (--partitioner: how the topic's
producers place keys), the pending deadlines in each partition's deadline index, each
partition's clock at the end of the history, and its offset at the topic's current end (0 for a
topic not created yet), so `triggers run` reads only what is produced after the backfill.
Triggers of the past are not sent: a deadline due at or before the end fires in the replay and
is dropped; one due after it stays pending and fires live. Existing live state under --prefix
is never written over, unless --force.
Redis, Kafka and the rules are the live engine's settings, read as `triggers run --config FILE`
reads them (the file, then TRIGGERS_* variables): Redis's URL, prefix, cluster, username,
password and TLS, Kafka's brokers, topic and kafka.extra (security.protocol, sasl.*, ssl.*);
--rules, --redis-url, --prefix, --cluster, --topic and --brokers override them.
"""
EPILOG = """examples:
  triggers backfill --config triggers.toml --events history.jsonl --partitions 4 --until 2026-03-01T00:00:00Z
  triggers backfill --rules rules/ --events history.jsonl --redis-url redis://127.0.0.1:6379/0 \\
      --topic customer-events --partitions 4 --until 2026-03-01T00:00:00Z
"""
EXIT_STATUS = {0: "written", 1: "invalid rules", 2: "bad usage, invalid settings, live state present (without --force), "
               "Redis or Kafka unreachable, a topic with another number of partitions"}
CHUNK = 1000   # states per Redis call


def add_parser(subparsers: Any) -> None:
    from engine.offline.backfill import Partitioner

    p = subparsers.add_parser(
        "backfill", help="seed the live state from a history of events (nothing is sent)",
        description=DESCRIPTION, epilog=EPILOG + "\n" + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="the live engine's settings file (TOML), as for `triggers run`: "
                   "rules, redis.* (credentials, TLS) and kafka.* come from it")
    p.add_argument("--rules", metavar="RULES_DIR", help="the rules the live engine will run; overrides the "
                   "settings' rules (default: rules)")
    p.add_argument("--events", required=True, metavar="HISTORY", help="JSONL events, native or Segment form")
    add_redis_options(p, "the live engine's")
    p.add_argument("--topic", help="the live engine's topic; overrides kafka.topic (default: customer-events)")
    p.add_argument("--partitions", required=True, type=int, metavar="N", help="the topic's partitions")
    p.add_argument("--brokers", metavar="HOST:PORT,...", help="Kafka, for the topic's current end; overrides "
                   "kafka.brokers (default: 127.0.0.1:9092)")
    p.add_argument("--partitioner", choices=[m.value for m in Partitioner], default=Partitioner.CONSISTENT_RANDOM.value,
                   help="how the topic's producers place keys: consistent_random (librdkafka's default, CRC-32: "
                        "`triggers produce` and the Python, Go and C clients), murmur2_random (the Java client's "
                        "default and `triggers repartition`'s)")
    p.add_argument("--until", metavar="TIME", help="the cut (RFC 3339): events after it are not replayed, the "
                   "live engine's clock starts there; default: the history's last event")
    p.add_argument("--force", action="store_true", help="write over the live state present under --prefix")
    p.set_defaults(handler=run_backfill)


def run_backfill(args: argparse.Namespace) -> int:
    import redis

    from engine.cli.common import parse_until
    from engine.core.times import format_ts
    from engine.offline.backfill import Partitioner, backfill
    from engine.state.redis import RedisStore

    if args.partitions < 1:
        raise CommandError("--partitions must be at least 1")
    settings = read_settings(args.config, {
        **redis_overrides(args), "kafka.topic": args.topic, "kafka.brokers": args.brokers.split(",") if args.brokers else None})
    r, topic = settings.redis, settings.kafka.topic
    check_events_file(args.events)
    rules = load_rules(settings.rules, prog="triggers backfill")
    if rules is None:
        return 1
    until = parse_until(args.until)
    names = [f"{topic}-{p}" for p in range(args.partitions)]
    ends = _topic_ends(settings.kafka, args.partitions)
    try:
        store = RedisStore.from_settings(r)
    except ValueError as e:
        raise CommandError(f"Redis at {r.shown()}: {e}") from None
    try:
        stored = {p: o for p in names if (o := store.load_offset(p)) is not None}
        has_states = next(iter(store.scan_states(batch=1)), [])
        if (stored or has_states) and not args.force:
            raise CommandError(f"Redis at {r.shown()} already holds live state under prefix {r.prefix!r} "
                               f"({'offsets of ' + ', '.join(sorted(stored)) if stored else 'customer states'}): "
                               "backfill writes only into an empty prefix; --force writes over it")
        result = backfill(rules, args.events, args.partitions, Partitioner(args.partitioner), until)
        _write(store, names, ends, stored, result)
    except redis.RedisError as e:
        raise CommandError(f"Redis at {r.shown()}: {type(e).__name__}: {e}") from None
    finally:
        store.close()
    customers = sum(len(p.images) for p in result.partitions)
    print(f"triggers backfill: {result.events} events up to {format_ts(result.end)}, {customers} customers over "
          f"{args.partitions} partitions of {topic} (starting at offsets "
          f"{', '.join(str(ends[p]) for p in range(args.partitions))}), {result.pending} deadlines pending for the "
          f"live engine, {result.dropped_triggers} triggers of the past not sent, {result.dead_letters} dead letters",
          file=sys.stderr)
    return 0


def _write(store: Any, names: list[str], ends: list[int], stored: dict[str, int], result: Any) -> None:
    """Per partition: its states and deadline index in chunks, then its offset and clock (last,
    so a backfill cut short leaves no offset: a second one then needs --force)."""
    from engine.state.store import PartitionClock

    for i, name in enumerate(names):
        part = result.partitions[i]
        expected = stored.get(name)
        ids = list(part.images)
        for at in range(0, len(ids), CHUNK):
            chunk = ids[at:at + CHUNK]
            store.commit(name, {c: part.images[c] for c in chunk}, None, {c: part.next_due[c] for c in chunk},
                         expected_offset=expected)
        clock = PartitionClock(result.end, result.end, ends[i])
        population = result.population if i == 0 and result.population else None   # summed over partitions live
        store.commit(name, {}, ends[i], {}, expected_offset=expected, clock=clock, population=population)


def _topic_ends(kafka: KafkaSource, partitions: int) -> list[int]:
    """Each partition's current end offset of `kafka.topic` (with kafka.extra: the engine's
    security settings); 0 for a topic not created yet."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    brokers, topic = ",".join(kafka.brokers), kafka.topic
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "triggers-backfill", "enable.auto.commit": False,
                         **kafka.extra})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return [0] * partitions
        if len(meta.partitions) != partitions:
            raise CommandError(f"topic {topic!r} has {len(meta.partitions)} partitions, not --partitions {partitions}")
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    except KafkaException as e:
        raise CommandError(f"Kafka at {brokers}: {e}") from None
    finally:
        consumer.close()
