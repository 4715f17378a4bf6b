"""The in-memory state store: the backtest's store, and the quick start's.

It keeps the `CustomerState` objects themselves, with no encoding, because a backtest
replays a whole event file through it and must run at the speed of the core. Nothing
survives the process; exactly-once across crashes is the Redis store's job.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Mapping

from engine.state.customer import CustomerState


class InMemoryStore:
    """A `StateStore` in a dict: customer id -> `CustomerState`, plus the source offsets.

    Contract, beyond `StateStore`:
    - `load_many` returns the stored objects, not copies; `save_many` stores references.
      A caller that mutates a loaded state changes the stored one even before it saves it,
      so a batch that must be discarded has to be evaluated on copies. The engine's hot
      path loads, mutates and saves every state it touches, so this costs it nothing.
    - `save_many` is atomic in the only sense that matters in one thread: no reader can run
      between writing the states and writing the offsets.
    - Not thread-safe; one store per worker.
    """

    __slots__ = ("states", "_offsets")

    def __init__(self) -> None:
        # Public so the backtest's per-event loop reads and writes it without a call per event.
        self.states: dict[str, CustomerState] = {}
        self._offsets: dict[str, int] = {}

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
