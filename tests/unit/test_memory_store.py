"""InMemoryStore: the StateStore contract, and the by-reference storage the backtest relies on."""

from __future__ import annotations

from engine.state.customer import CustomerState, Timer
from engine.state.memory import InMemoryStore
from engine.state.store import StateStore


def _state(n: int) -> CustomerState:
    return CustomerState(
        aggs={"purchases": n, "lifetime_spend": 10.5 * n},
        profile={"timezone": "Europe/Berlin"},
        timers=[Timer(due=1_700_000_000_000 + n, rule="after-sale", step=0, key="", cause=f"e-{n}", cause_ts=n)],
        last_ts=n,
    )


def test_is_a_state_store() -> None:
    store: StateStore = InMemoryStore()  # type-checks against the protocol
    assert store.load_offsets() == {}


def test_empty_store_loads_nothing() -> None:
    store = InMemoryStore()
    assert store.load_many(["c1", "c2"]) == {}
    assert store.load_many([]) == {}
    assert len(store) == 0
    assert store.get("c1") is None


def test_round_trip_keeps_the_objects_and_leaves_unknown_customers_out() -> None:
    store = InMemoryStore()
    states = {f"c{i}": _state(i) for i in range(100)}
    store.save_many(states, {"orders-0": 17, "orders-1": 4})

    loaded = store.load_many(["c0", "c50", "c99", "unknown"])
    assert set(loaded) == {"c0", "c50", "c99"}
    for cid, state in loaded.items():
        assert state is states[cid]  # no encoding, no copy
    assert store.get("c7") is states["c7"]
    assert len(store) == 100
    assert dict(store.items()) == states


def test_load_many_accepts_any_iterable_and_keeps_request_order() -> None:
    store = InMemoryStore()
    store.save_many({"a": _state(1), "b": _state(2), "c": _state(3)})
    assert list(store.load_many(cid for cid in ("c", "x", "a"))) == ["c", "a"]


def test_save_overwrites_and_offsets_merge_per_partition() -> None:
    store = InMemoryStore()
    store.save_many({"c1": _state(1)}, {"p0": 10, "p1": 20})
    newer = _state(2)
    store.save_many({"c1": newer}, {"p0": 11})
    assert store.get("c1") is newer
    assert store.load_offsets() == {"p0": 11, "p1": 20}
    store.save_many({}, None)
    store.save_many({}, {})
    assert store.load_offsets() == {"p0": 11, "p1": 20}


def test_load_offsets_is_a_copy() -> None:
    store = InMemoryStore()
    store.save_many({}, {"p0": 1})
    store.load_offsets()["p0"] = 999
    assert store.load_offsets() == {"p0": 1}


def test_states_are_stored_by_reference() -> None:
    """The hot path mutates loaded states in place and saves them: that must be cheap and visible."""
    store = InMemoryStore()
    store.save_many({"c1": CustomerState()})
    state = store.load_many(["c1"])["c1"]
    state.aggs = {"purchases": 1}
    state.last_ts = 5
    assert store.get("c1") == CustomerState(aggs={"purchases": 1}, last_ts=5)


def test_saving_a_batch_does_not_keep_a_reference_to_the_mapping() -> None:
    store = InMemoryStore()
    batch = {"c1": _state(1)}
    offsets = {"p0": 3}
    store.save_many(batch, offsets)
    batch["c2"] = _state(2)
    offsets["p0"] = 4
    assert len(store) == 1
    assert store.load_offsets() == {"p0": 3}
