"""The state store protocols: what the live worker calls (`PartitionStore`), what the relays call
(`OutboxStore`), and customer states by id for tools (`StateStore`); `StateLost`, what a commit
raises on a store that lost data.

A store is the only place customer state lives between batches. Saving the states of a
batch together with the source offsets that produced them is what makes state effects
exactly-once: after a crash the source resumes from the saved offsets, and the saved states
already contain exactly the events before them.

Both the Redis store (`engine.state.redis`) and the in-memory store (`engine.state.memory`)
implement both protocols, so the live path (source, partition worker, commits) runs on either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from engine.errors import EngineError
from engine.state.customer import CustomerState
from engine.state.outbox import OutboxEntry, OutboxTail


class StateLost(EngineError):
    """The store no longer holds what this engine committed (SPEC §6: state loss is never silent).

    Raised by a commit that finds the partition's stored offset different from the one it
    committed last (Redis restarted without persistence, flushed, failed over to a stale
    replica): writing on top would hide the loss, so nothing is written.
    """

    def __init__(self, partition: str, expected: int | None, found: int | None) -> None:
        self.partition = partition
        self.expected = expected
        self.found = found
        had = "no offset" if found is None else f"offset {found}"
        want = "none" if expected is None else str(expected)
        super().__init__(
            f"partition {partition}: the state store has {had} where this engine committed {want}: "
            "it lost data since (restart without persistence, flush, failover to a stale replica)")

    def __reduce__(self) -> tuple:
        return (type(self), (self.partition, self.expected, self.found))


class PartitionClock(msgspec.Struct, array_like=True, frozen=True):
    """A partition's event-time clock, committed with its offset (`engine.core.session`): the
    frontier (events at or before it are in the committed states), the newest event time seen,
    and the offset to re-read from after a restart (the oldest event held back for ordering,
    which no committed state holds yet; the committed offset when none is held)."""

    frontier: int
    newest: int
    replay_from: int


PopulationCounts = dict[tuple[str, int], list[int]]
"""The population's responses (SPEC §3b): (channel, UTC day) -> 24 counts by local hour."""

_clock_json = msgspec.json.Encoder()
_clock_decoder = msgspec.json.Decoder(PartitionClock)


def encode_clock(clock: PartitionClock) -> bytes:
    return _clock_json.encode(clock)


def decode_clock(raw: bytes | str) -> PartitionClock:
    return _clock_decoder.decode(raw)


class PartitionStore(Protocol):
    """Exactly what the live dataflow calls, per source partition (`engine.operators.{source,partition}`).

    States cross it encoded (`engine.state.customer.encode_state` bytes): the worker keeps
    its own decoded cache and checkpoints each state once per commit (`engine.core.isolation`),
    so a store never holds an object the worker still mutates. Every call is one round trip
    and fails with the store's own transient errors (Redis: `engine.state.redis.REDIS_ERRORS`),
    which the caller retries; the store does not retry.

    `reads` (optional): stores with equal `reads` read the same states, so one of them may read
    for several partitions at once (`engine.operators.flow.prefetch`; `RedisStore`: its URL,
    prefix and mode). Without it a store reads only for the partitions it was opened for.

    `atomic`: whether a commit is one atomic step. When it is not (Redis Cluster: the slots are
    written one after the other), the states are written before the offset, each stamped with
    the offset it was committed at (`CustomerState.fence`), and the worker skips a re-read event
    that a state already holds: a crash in the middle of a commit applies nothing twice.
    """

    atomic: bool

    def load_offset(self, partition: str) -> int | None:
        """The partition's committed next offset; None when nothing was committed for it."""
        ...

    def load_clock(self, partition: str) -> PartitionClock | None:
        """The partition's clock as last committed; None when none was."""
        ...

    def load_many_encoded(self, customer_ids: list[str]) -> dict[str, bytes]:
        """The encoded states of these (distinct) customers; customers without state are absent."""
        ...

    def due_customers(self, partition: str, until_ms: int, limit: int = 1000) -> list[str]:
        """Up to `limit` customers of the partition's deadline index whose earliest deadline
        is at or before `until_ms`, earliest first."""
        ...

    def commit(self, partition: str, images: Mapping[str, bytes], offset: int | None,
               next_due: Mapping[str, int | None], unindex: list[str] | None = None,
               expected_offset: int | None = None, outbox: Sequence[OutboxEntry] = (),
               clock: PartitionClock | None = None, population: PopulationCounts | None = None,
               commit_id: str = "") -> OutboxTail | None:
        """Write the batch's encoded states, the partition's next `offset` (None: leave it), its
        `clock` (None: leave it), its deadline index, its `outbox` entries and the `population`
        counts its customers added (summed into the stored ones) at once: each customer of `images` is indexed at
        its `next_due` (None: taken out), `unindex` are taken out, the entries are appended in
        order and numbered after the outbox's last. Conditional: when the partition's stored
        offset is not `expected_offset` (None: no offset), raise `StateLost` and write nothing.
        Returns the outbox's tail after the commit when it wrote entries, else None.
        `commit_id` is unique to the commit and the same on its retries: a store whose reply
        can be lost after it applied a commit (over a network) finds it applied, returns the
        same and writes nothing again, rather than refusing it as state loss."""
        ...

    def outbox_tail(self, partition: str) -> OutboxTail:
        """Where the partition's outbox stands (its last `seq`, its length)."""
        ...

    def load_clocks(self, partitions: Sequence[str]) -> dict[str, PartitionClock]:
        """The committed clocks of these partitions (all of the input's, not only this worker's);
        partitions without one are absent."""
        ...

    def load_population(self, partitions: Sequence[str], days: Sequence[int]) -> PopulationCounts:
        """The population counts these partitions committed for these days, summed."""
        ...


class OutboxStore(Protocol):
    """What a sink's relay calls (`engine.operators.outbox`): a partition's outbox entries after
    its cursor, and its cursor saved. One round trip per call, the store's transient errors let
    through, as `PartitionStore`'s. Safe to call from a relay's thread while the partition's
    worker commits (the Redis store: a connection per call; the in-memory store: a lock)."""

    def read_outbox(self, partition: str, after: int, count: int) -> tuple[list[OutboxEntry], OutboxTail]:
        """Up to `count` entries with `seq` > `after`, in order, and the outbox's tail."""
        ...

    def load_cursors(self, partition: str) -> dict[str, int]:
        """Sink name -> the `seq` of the last entry that sink passed (absent: none yet)."""
        ...

    def save_cursor(self, partition: str, sink: str, seq: int, sinks: Sequence[str]) -> None:
        """Record that `sink` passed every entry up to `seq`, then trim the entries every sink of
        `sinks` (the configured ones; a sink without a cursor has passed none) has passed."""
        ...

    def advance(self, partition: str, sink: str, seq: int, sinks: Sequence[str],
                count: int) -> tuple[list[OutboxEntry], OutboxTail]:
        """`save_cursor`, then `read_outbox(partition, seq, count)`, in one round trip (a relay
        that shares its process with the engine waits for the interpreter after each one)."""
        ...


class StateStore(Protocol):
    """Customer states by id, decoded: for tools that read or seed states outside a live run
    (explain's live state, tests, a backtest's final states)."""

    def load_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        """The stored states of these customers; customers without state are absent."""
        ...

    def save_many(self, states: Mapping[str, CustomerState], offsets: Mapping[str, int] | None = None) -> None:
        """Write these states and source offsets (partition -> next offset) as one atomic step."""
        ...

    def load_offsets(self) -> dict[str, int]:
        """The source offsets saved with the latest `save_many` (partition -> next offset)."""
        ...
