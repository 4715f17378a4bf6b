"""Backfill: a history replayed through the rules, its end state laid out per source partition
as the live engine would have committed it, so that a live run starts from it.

The replay is the backtest's (`Replay`), up to the cut: every event at or before `end` is
applied, every deadline due at or before `end` fires there and its trigger is dropped (the past
is not sent); deadlines due later stay pending in the states and in the partitions' deadline
indexes, and fire live, in the order a backtest over history and live events together fires
them. A customer's state goes to the partition Kafka's partitioner puts their key in
(`partition_of`), since that partition's worker is the only one that will ever read it.
"""

from __future__ import annotations

import enum
from pathlib import Path

import msgspec

from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.compiler import CompiledRules
from engine.state.customer import encode_state
from engine.state.store import PopulationCounts


class Partitioner(enum.Enum):
    """How the producers of the topic place a key (librdkafka's names)."""

    CONSISTENT_RANDOM = "consistent_random"   # librdkafka's default: CRC-32 of the key (`triggers produce`)
    MURMUR2_RANDOM = "murmur2_random"         # the Java client's default (and the repartition stage's)


def partition_of(customer_id: str, partitions: int, partitioner: Partitioner) -> int:
    """The partition a message keyed by `customer_id` (UTF-8) lands in, computed by librdkafka's
    own partitioners (confluent_kafka's `murmur2`, Java-compatible: `toPositive(murmur2(key)) %
    partitions`, and `consistent`, CRC-32), so it cannot drift from what the producers do.
    Imported here, not at the top: the offline core loads no Kafka client (tests/unit/test_layering.py)."""
    from confluent_kafka import consistent, murmur2

    place = murmur2 if partitioner is Partitioner.MURMUR2_RANDOM else consistent
    return place(customer_id.encode(), partitions)


class PartitionStart(msgspec.Struct):
    """One partition's starting point: its customers' encoded states and earliest deadlines."""

    images: dict[str, bytes]
    next_due: dict[str, int | None]


class Backfill(msgspec.Struct):
    partitions: list[PartitionStart]
    end: int                        # the clock the live engine starts from (epoch ms)
    events: int                     # events applied
    dead_letters: int               # lines that are not events, and events the core refused
    dropped_triggers: int           # triggers of the past, not sent
    pending: int                    # one-shot deadlines left for the live engine
    population: PopulationCounts    # the population's responses (SPEC §3b), for the best hour


def backfill(rules: CompiledRules, events: str | Path | list[Event], partitions: int, partitioner: Partitioner,
             until: int | None = None) -> Backfill:
    """Replay `events` (a JSONL file, or decoded events) up to `until` (default: the last
    event's time) and lay the end state out over `partitions`."""
    dropped = [0]

    def drop(triggers: list) -> None:
        dropped[0] += len(triggers)

    replay = Replay(rules, drop, until=until)
    dead = 0
    if isinstance(events, (str, Path)):
        dead = replay.feed_file(events)
    else:
        replay.feed(events)
    replay.finish()
    next_due = replay.session.evaluator.next_due
    parts = [PartitionStart({}, {}) for _ in range(partitions)]
    for cid, state in replay.store.items():
        part = parts[partition_of(cid, partitions, partitioner)]
        part.images[cid] = encode_state(state)
        part.next_due[cid] = next_due(state)
    return Backfill(parts, replay.ended_at, replay.evaluator.counters.events, dead + replay.dead_letters, dropped[0],
                    sum(replay.pending.values()), dict(replay.session.population.counts))
