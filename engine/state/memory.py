"""The in-memory state store: the backtest's store, the quick start's, and the live path's in tests.

It keeps the `CustomerState` objects themselves, with no encoding, because a backtest
replays a whole event file through it and must run at the speed of the core. As a
`PartitionStore` it behaves like the Redis store (encoded states in and out, the conditional
commit, the deadline index), so the live dataflow runs on it without Redis. Nothing
survives the process; exactly-once across crashes is the Redis store's job.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import ItemsView, Iterable, Mapping, Sequence

import msgspec

from engine.state.customer import CustomerState, decode_state, encode_state
from engine.state.outbox import OutboxEntry, OutboxTail
from engine.state.store import PartitionClock, PopulationCounts, StateLost


class InMemoryStore:
    """A `StateStore` and a `PartitionStore` in dicts: customer id -> `CustomerState`, the
    source offsets, and each partition's deadline index.

    Contract, beyond `StateStore`:
    - `load_many` returns the stored objects, not copies; `save_many` stores references.
      A caller that mutates a loaded state changes the stored one even before it saves it,
      so a batch that must be discarded has to be evaluated on copies. The engine's hot
      path loads, mutates and saves every state it touches, so this costs it nothing.
    - `save_many` is atomic in the only sense that matters in one thread: no reader can run
      between writing the states and writing the offsets.
    - The `PartitionStore` calls copy, as the Redis store does: `commit` stores the decoded
      images (never an object the worker still holds), `load_many_encoded` encodes.
    - One store may serve several workers of one process (Bytewax workers are threads): each
      `PartitionStore` call touches only its own partition's entries and its customers, and
      Kafka keys every customer to one partition. The `StateStore` calls are single-threaded.
    - It is an `OutboxStore` too: the outbox and the cursors are shared with the relays' threads,
      under one lock (a commit's entries appear to a relay all at once, as Redis's script makes them).
    """

    atomic = True   # one lock around each commit

    __slots__ = ("states", "_offsets", "_index", "_clocks", "_outbox", "_last_seq", "_cursors", "_lock", "_population")

    def __init__(self) -> None:
        # Public so the backtest's per-event loop reads and writes it without a call per event.
        self.states: dict[str, CustomerState] = {}
        self._offsets: dict[str, int] = {}
        self._index: dict[str, dict[str, int]] = {}   # partition -> customer id -> earliest deadline (ms)
        self._clocks: dict[str, PartitionClock] = {}
        self._outbox: dict[str, deque[OutboxEntry]] = {}
        self._last_seq: dict[str, int] = {}
        self._cursors: dict[str, dict[str, int]] = {}   # partition -> sink -> seq passed
        self._population: dict[str, PopulationCounts] = {}   # partition -> its (channel, day) counts
        self._lock = threading.Lock()

    def load_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        """The stored states of these customers; customers without state are absent."""
        get = self.states.get
        return {cid: state for cid in customer_ids if (state := get(cid)) is not None}

    def save_many(self, states: Mapping[str, CustomerState], offsets: Mapping[str, int] | None = None) -> None:
        """Store these states (by reference) and source offsets (partition -> next offset)."""
        self.states.update(states)
        if offsets:
            self._offsets.update(offsets)

    def load_offsets(self) -> dict[str, int]:
        """The saved source offsets (partition -> next offset), as a copy."""
        return dict(self._offsets)

    # -- PartitionStore ------------------------------------------------------------------------

    def load_offset(self, partition: str) -> int | None:
        """The partition's committed next offset; None when nothing was committed for it."""
        return self._offsets.get(partition)

    def load_clock(self, partition: str) -> PartitionClock | None:
        return self._clocks.get(partition)

    def load_clocks(self, partitions: Sequence[str]) -> dict[str, PartitionClock]:
        with self._lock:
            return {p: c for p in partitions if (c := self._clocks.get(p)) is not None}

    def load_population(self, partitions: Sequence[str], days: Sequence[int]) -> PopulationCounts:
        counts: PopulationCounts = {}
        wanted = set(days)
        with self._lock:
            for partition in partitions:
                for (channel, day), hours in self._population.get(partition, {}).items():
                    if day in wanted:
                        into = counts.setdefault((channel, day), [0] * 24)
                        for h, n in enumerate(hours):
                            into[h] += n
        return counts

    def load_many_encoded(self, customer_ids: Iterable[str]) -> dict[str, bytes]:
        """The states of these customers as `encode_state` bytes; customers without state are absent."""
        get = self.states.get
        return {cid: encode_state(state) for cid in customer_ids if (state := get(cid)) is not None}

    def due_customers(self, partition: str, until_ms: int, limit: int = 1000) -> list[str]:
        """Customers of the partition's index due at or before `until_ms`, earliest first (ties
        by id, as Redis orders a sorted set)."""
        index = self._index.get(partition)
        if not index:
            return []
        due = sorted((when, cid) for cid, when in index.items() if when <= until_ms)
        return [cid for _, cid in due[:limit]]

    def commit(self, partition: str, images: Mapping[str, bytes], offset: int | None,
               next_due: Mapping[str, int | None], unindex: list[str] | None = None,
               expected_offset: int | None = None, outbox: Sequence[OutboxEntry] = (),
               clock: PartitionClock | None = None, population: PopulationCounts | None = None,
               commit_id: str = "") -> OutboxTail | None:
        """The Redis store's commit (`engine.state.store.PartitionStore.commit`), in memory: no
        reply is lost here, so `commit_id` is not needed."""
        with self._lock:
            return self._commit(partition, images, offset, next_due, unindex, expected_offset, outbox, clock,
                                population)

    def _commit(self, partition: str, images: Mapping[str, bytes], offset: int | None,
                next_due: Mapping[str, int | None], unindex: list[str] | None,
                expected_offset: int | None, outbox: Sequence[OutboxEntry],
                clock: PartitionClock | None, population: PopulationCounts | None) -> OutboxTail | None:
        stored = self._offsets.get(partition)
        if stored != expected_offset:
            raise StateLost(partition, expected_offset, stored)
        decoded = {cid: decode_state(image) for cid, image in images.items()}   # all or nothing
        self.states.update(decoded)
        index = self._index.setdefault(partition, {})
        for cid in unindex or ():
            index.pop(cid, None)
        for cid in images:
            when = next_due.get(cid)
            if when is None:
                index.pop(cid, None)
            else:
                index[cid] = when
        if offset is not None:
            self._offsets[partition] = offset
        if clock is not None:
            self._clocks[partition] = clock
        for key, hours in (population or {}).items():
            into = self._population.setdefault(partition, {}).setdefault(key, [0] * 24)
            for h, n in enumerate(hours):
                into[h] += n
        if not outbox:
            return None
        log = self._outbox.setdefault(partition, deque())
        seq = self._last_seq.get(partition, 0)
        replace = msgspec.structs.replace
        for entry in outbox:
            seq += 1
            log.append(replace(entry, seq=seq))
        self._last_seq[partition] = seq
        return OutboxTail(seq, len(log))

    def outbox_tail(self, partition: str) -> OutboxTail:
        with self._lock:
            return OutboxTail(self._last_seq.get(partition, 0), len(self._outbox.get(partition, ())))

    # -- OutboxStore -----------------------------------------------------------------------------

    def read_outbox(self, partition: str, after: int, count: int) -> tuple[list[OutboxEntry], OutboxTail]:
        with self._lock:
            log = self._outbox.get(partition, deque())
            tail = OutboxTail(self._last_seq.get(partition, 0), len(log))
            if not log or after >= tail.last_seq:
                return [], tail
            skip = max(0, after - log[0].seq + 1)   # seqs are consecutive within the log
            return [log[i] for i in range(skip, min(len(log), skip + count))], tail

    def load_cursors(self, partition: str) -> dict[str, int]:
        with self._lock:
            return dict(self._cursors.get(partition, {}))

    def advance(self, partition: str, sink: str, seq: int, sinks: Sequence[str],
                count: int) -> tuple[list[OutboxEntry], OutboxTail]:
        self.save_cursor(partition, sink, seq, sinks)
        return self.read_outbox(partition, seq, count)

    def save_cursor(self, partition: str, sink: str, seq: int, sinks: Sequence[str]) -> None:
        with self._lock:
            cursors = self._cursors.setdefault(partition, {})
            cursors[sink] = seq
            low = min((cursors.get(s, 0) for s in sinks), default=0)
            log = self._outbox.get(partition)
            while log and log[0].seq <= low:
                log.popleft()

    # -- reading back --------------------------------------------------------------------------

    def get(self, customer_id: str) -> CustomerState | None:
        """The stored state of one customer, None when it has none."""
        return self.states.get(customer_id)

    def items(self) -> ItemsView[str, CustomerState]:
        """A live view of (customer id, state) pairs, e.g. to dump a backtest's final states."""
        return self.states.items()

    def __len__(self) -> int:
        """The number of customers with a state."""
        return len(self.states)

    def __repr__(self) -> str:
        return f"InMemoryStore({len(self.states)} customers, {len(self._offsets)} offsets)"
