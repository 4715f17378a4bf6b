"""The state store protocol: load a batch of customers, save a batch atomically with offsets.

A store is the only place customer state lives between batches. Saving the states of a
batch together with the source offsets that produced them is what makes state effects
exactly-once: after a crash the source resumes from the saved offsets, and the saved states
already contain exactly the events before them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from engine.errors import EngineError
from engine.state.customer import CustomerState


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


class StateStore(Protocol):
    def load_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        """The stored states of these customers; customers without state are absent."""
        ...

    def save_many(self, states: Mapping[str, CustomerState], offsets: Mapping[str, int] | None = None) -> None:
        """Write these states and source offsets (partition -> next offset) as one atomic step."""
        ...

    def load_offsets(self) -> dict[str, int]:
        """The source offsets saved with the latest `save_many` (partition -> next offset)."""
        ...
