"""The state store protocol: load a batch of customers, save a batch atomically with offsets.

A store is the only place customer state lives between batches. Saving the states of a
batch together with the source offsets that produced them is what makes state effects
exactly-once: after a crash the source resumes from the saved offsets, and the saved states
already contain exactly the events before them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from engine.state.customer import CustomerState


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
