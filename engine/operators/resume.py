"""Where a live run resumes, checked before the dataflow starts (SPEC §6: state loss is never silent).

Redis holds, per partition, the offset its states were committed with; after each Redis commit
the engine also records that offset in Kafka (the consumer group `kafka.group_id`). Redis can
lose data without the engine noticing by itself: a restart without persistence, a FLUSHDB, keys
deleted by hand, a failover to a stale replica, eviction. Resuming from what Redis has left would
re-apply old events to missing states and send their triggers again. So a start compares the two
records, per partition:

| Redis       | Kafka      | means                                       | the engine          |
| ----------- | ---------- | ------------------------------------------- | ------------------- |
| none        | none       | a first deployment                          | starts at `kafka.start` (earliest or latest), logged loudly |
| offset R    | none or ≤ R| normal (Kafka's record trails by a commit)  | resumes at R        |
| none, or R < K | offset K | Redis lost states committed before K        | refuses: exit 2, unless `--accept-state-loss` (resume at K, the lost states start empty, the lost range is not replayed) |

It also warns loudly when Redis runs without persistence or may evict keys.
"""

from __future__ import annotations

import logging
from functools import partial

import redis
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from connectors.base import retry_forever
from engine.errors import EngineError
from engine.operators.logs import kafka_logger
from engine.operators.settings import Settings
from engine.state.redis import REDIS_ERRORS, REDIS_FATAL, RedisStore
from engine.state.store import PartitionClock, encode_clock

log = logging.getLogger("engine.resume")


class ResumeRefused(EngineError):
    """Starting would hide a loss of state, or cannot work: the message says why and what to do."""


def check_redis(store: RedisStore, shown: str) -> None:
    """Connect (waiting out an outage, failing fast on refused credentials) and warn about
    settings under which Redis can lose the engine's state."""
    try:
        retry_forever(store.client.ping, f"connecting to Redis at {shown}", REDIS_ERRORS, log, fatal=REDIS_FATAL)
    except REDIS_FATAL as e:
        raise ResumeRefused(f"Redis at {shown} refused the credentials ({type(e).__name__}: {e}): check "
                            "redis.username and redis.password (or TRIGGERS_REDIS__PASSWORD)") from None
    if store.cluster:
        return
    try:
        config = {}
        for name in ("appendonly", "save", "maxmemory", "maxmemory-policy"):
            config.update({k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                           for k, v in store.client.config_get(name).items()})
    except redis.RedisError:   # managed Redis often forbids CONFIG
        log.info("cannot read Redis's persistence settings (CONFIG GET not allowed); make sure it persists "
                 "(AOF), or a restart loses every customer state")
        return
    if config.get("appendonly") != "yes" and not config.get("save"):
        log.warning("Redis at %s runs WITHOUT PERSISTENCE (appendonly no, no RDB snapshots): a restart loses every "
                    "customer state and pending deadline. The engine will notice and stop rather than resume "
                    "wrongly, but the states are gone. Turn on AOF: appendonly yes (scripts/services.sh does).", shown)
    elif config.get("appendonly") != "yes":
        log.warning("Redis at %s persists with RDB snapshots only (save %s): a restart loses the changes since the "
                    "last snapshot, and the engine will stop when it notices. AOF (appendonly yes) loses at most "
                    "a second.", shown, config.get("save"))
    policy = config.get("maxmemory-policy", "noeviction")
    if config.get("maxmemory", "0") != "0" and policy.startswith("allkeys"):
        log.warning("Redis at %s may evict keys when full (maxmemory-policy %s): evicted customer states are lost. "
                    "Use maxmemory-policy noeviction.", shown, policy)


class _KafkaRecords:
    """The consumer group's recorded offsets and the partitions' ends, through one consumer."""

    def __init__(self, settings: Settings) -> None:
        k = settings.kafka
        self.topic = k.topic
        self.group = settings.consumer_group
        self.consumer = Consumer({"bootstrap.servers": ",".join(k.brokers), "group.id": self.group,
                                  "enable.auto.commit": "false", "logger": kafka_logger(), **k.extra})

    def committed(self, partitions: list[str]) -> dict[str, int]:
        """Partition -> recorded offset (absent: none recorded)."""
        wanted = [TopicPartition(self.topic, _number(p)) for p in partitions]
        found = retry_forever(lambda: self.consumer.committed(wanted, timeout=10),
                              f"reading consumer group {self.group!r}'s offsets", (KafkaException,), log)
        return {f"{tp.topic}-{tp.partition}": tp.offset for tp in found
                if tp.offset != OFFSET_INVALID and tp.offset >= 0}

    def end(self, partition: str) -> int:
        probe = TopicPartition(self.topic, _number(partition))
        return retry_forever(lambda: self.consumer.get_watermark_offsets(probe, timeout=10),
                             f"{partition}: reading the partition's end", (KafkaException,), log)[1]

    def close(self) -> None:
        self.consumer.close()


def _number(partition: str) -> int:
    return int(partition.rsplit("-", 1)[1])


def plan_resume(settings: Settings, store: RedisStore, partitions: list[str], accept_state_loss: bool) -> None:
    """Check every partition's records; refuse, or fix up Redis's offsets where the operator chose.

    Offsets are only ever written with SET NX or where the operator accepted a loss, so two
    processes starting together cannot move each other's start.
    """
    check_redis(store, settings.redis.shown())
    kafka = _KafkaRecords(settings)
    try:
        _plan(settings, store, partitions, accept_state_loss, kafka)
    finally:
        kafka.close()


def _plan(settings: Settings, store: RedisStore, partitions: list[str], accept_state_loss: bool,
          kafka: _KafkaRecords) -> None:
    records = kafka.committed(partitions)
    lost: list[str] = []
    fresh: list[str] = []
    for p in partitions:
        r = retry_forever(partial(store.load_offset, p), f"partition {p}: Redis offset load", REDIS_ERRORS, log)
        k = records.get(p)
        if r is None and k is None:
            fresh.append(p)
            if settings.kafka.start == "latest":
                store.client.set(store.offset_key(p), kafka.end(p), nx=True)
        elif k is not None and (r is None or r < k):
            lost.append(p)
            have = "no committed offset" if r is None else f"offset {r}"
            if accept_state_loss:
                store.client.set(store.offset_key(p), k)
                # The clock Redis kept is as old as its offset: its `replay_from` would re-read from
                # there the events after its frontier as held for ordering, i.e. replay the lost range
                # (and send its triggers again). Events before the recorded offset are not re-read.
                clock = store.load_clock(p)
                if clock is not None and clock.replay_from < k:
                    store.client.set(store.clock_key(p), encode_clock(PartitionClock(clock.frontier, clock.newest, k)))
                log.warning("partition %s: Redis has %s but %d was committed: --accept-state-loss given, resuming at "
                            "%d; states committed before it that Redis lost start empty; the lost range is not "
                            "replayed (an older copy's states and outbox can still send some of its triggers again, "
                            "with their trigger_ids)", p, have,
                            k, k)
            else:
                log.error("partition %s: Redis has %s, but offset %d was committed (recorded in Kafka's consumer "
                          "group %r)", p, have, k, settings.consumer_group)
    if fresh:
        which = "all partitions" if len(fresh) == len(partitions) else f"partitions {', '.join(fresh)}"
        if settings.kafka.start == "latest":
            log.warning("first start on %s of topic %s (no committed offset in Redis or Kafka): starting at the END "
                        "(kafka.start = \"latest\"); the events already in the topic are not processed", which,
                        settings.kafka.topic)
        else:
            log.warning("first start on %s of topic %s (no committed offset in Redis or Kafka): processing the "
                        "topic's history from the EARLIEST offset (kafka.start = \"earliest\"); its triggers fire as "
                        "they would have. Set kafka.start = \"latest\" to begin at the end instead.", which,
                        settings.kafka.topic)
    if lost and not accept_state_loss:
        raise ResumeRefused(
            f"Redis at {settings.redis.shown()} lost committed state for {len(lost)} partition(s) "
            f"({', '.join(lost[:5])}{', …' if len(lost) > 5 else ''}): it was restarted without persistence, flushed, "
            "or failed over to a stale replica. Resuming would apply those events again to missing states and send "
            "their triggers again, so the engine does not start. Choose: restore Redis from its AOF/RDB or a backup "
            "and start again; or start with --accept-state-loss to resume at the recorded offsets (the lost "
            "customers' states start empty; the lost range is not replayed).")
