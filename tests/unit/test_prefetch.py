"""The states that several partitions' batches need are read in one round trip
(`engine.operators.flow.prefetch`), with the same outcome as each partition reading its own:
stored customers continue from their states, new ones start fresh and are not asked for twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.operators.flow import _evaluate
from engine.operators.partition import Batch, PartitionWorker
from engine.rules.compiler import load_and_compile
from engine.rules.reload import LiveRules
from engine.state.memory import InMemoryStore
from engine.testing import MemoryLog

SECOND_PURCHASE = """  - id: second-purchase
    type: threshold
    on: purchase
    if: purchases == 2
    then: {action: again, channel: email}
"""


@pytest.fixture
def rules(first_purchase_rules: Path) -> Path:
    """The first-purchase rules, and a rule for the second purchase."""
    first_purchase_rules.write_text(first_purchase_rules.read_text() + SECOND_PURCHASE)
    return first_purchase_rules


class CountingStore(InMemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []

    def load_many_encoded(self, customer_ids):
        ids = list(customer_ids)
        self.asked.append(ids)
        return super().load_many_encoded(ids)


def purchase(event_id: str, customer: str, ts: int) -> bytes:
    return (f'{{"event_id": "{event_id}", "type": "purchase", "customer_id": "{customer}", "ts": {ts}, '
            f'"properties": {{}}}}').encode()


def run(tmp_path: Path, store: CountingStore | dict[str, CountingStore], lines: dict[str, list[bytes]],
        together: bool) -> list:
    """One batch per partition, evaluated in one call (`together`) or one call each; committed.
    `store`: shared, or one per partition name."""
    live = LiveRules(tmp_path, load_and_compile(tmp_path), watch=False)
    workers = [PartitionWorker(MemoryLog(name, values), store[name] if isinstance(store, dict) else store, live, 0)
               for name, values in lines.items()]
    out: list = []
    for w in workers:   # a batch that read everything commits at once, handing its triggers over
        w.on_outbox = lambda _name, _last, _first, _kinds, handed: out.extend(
            (item.rule_id, item.customer_id) for _, item in handed)
    batches = [Batch(w, w.event_log.read(100), True, 100_000, False) for w in workers]
    if together:
        _evaluate(batches)
    else:
        for b in batches:
            _evaluate([b])
    return sorted(out)


def test_one_read_for_the_batches_of_several_partitions_same_triggers(tmp_path: Path, rules: Path) -> None:
    first = {"p-0": [purchase("a1", "c1", 10_000)], "p-1": [purchase("b1", "c2", 10_000)], "p-2": []}
    second = {"q-0": [purchase("a2", "c1", 20_000), purchase("a3", "c3", 20_000)],   # other partitions'
              "q-1": [purchase("b2", "c2", 20_000), purchase("b3", "c4", 20_000)],   # names: no offsets yet
              "q-2": [purchase("c5", "c5", 20_000)]}
    outcomes = []
    for together in (False, True):
        store = CountingStore()
        run(tmp_path, store, first, together=False)
        store.asked.clear()
        outcomes.append(run(tmp_path, store, second, together))   # new workers: nothing cached
        if together:
            # one read for all three partitions' customers; the new ones (c3-c5) are not asked again
            assert len(store.asked) == 1 and sorted(store.asked[0]) == ["c1", "c2", "c3", "c4", "c5"]
        else:
            assert len(store.asked) == 3
    assert outcomes[0] == outcomes[1] == sorted([("second-purchase", "c1"), ("second-purchase", "c2"),
                                                 ("first-purchase", "c3"), ("first-purchase", "c4"),
                                                 ("first-purchase", "c5")])


def test_a_single_partition_reads_in_its_own_pass(tmp_path: Path, rules: Path) -> None:
    store = CountingStore()
    lines = {"p-0": [purchase("a1", "c1", 10_000)], "p-1": [purchase("b1", "c2", 10_000)]}
    assert run(tmp_path, store, {"p-0": lines["p-0"], "p-1": []}, together=True) == [("first-purchase", "c1")]
    assert store.asked == [["c1"]]


def test_partitions_with_stores_of_their_own_read_each_their_own(tmp_path: Path, rules: Path) -> None:
    """A store factory may open a store per partition that holds only that partition's states
    (`StoreFactory`): one partition's store must not be asked for another's customers, who would
    then look new (a first purchase again)."""
    a, b = CountingStore(), CountingStore()
    run(tmp_path, {"p-0": a, "p-1": b}, {"p-0": [purchase("a1", "c1", 10_000)],
                                          "p-1": [purchase("b1", "c2", 10_000)]}, together=True)
    assert run(tmp_path, {"q-0": a, "q-1": b}, {"q-0": [purchase("a2", "c1", 20_000)],
                                                 "q-1": [purchase("b2", "c2", 20_000)]},
               together=True) == [("second-purchase", "c1"), ("second-purchase", "c2")]


def test_a_partitions_second_batch_in_the_same_call_follows_its_first(tmp_path: Path, rules: Path) -> None:
    """Two batches of one partition in one call (beside another partition's): the second is not
    read ahead (the first changes the states it reads) and sees what the first applied."""
    store = CountingStore()
    run(tmp_path, store, {"p-0": [purchase("a1", "c1", 10_000)], "p-1": []}, together=True)   # c1 stored
    live = LiveRules(tmp_path, load_and_compile(tmp_path), watch=False)
    w0 = PartitionWorker(MemoryLog("q-0", [purchase("a2", "c1", 20_000), purchase("a3", "c3", 20_000)]),
                         store, live, 0)
    w1 = PartitionWorker(MemoryLog("q-1", [purchase("b1", "c2", 20_000)]), store, live, 0)
    out: list = []
    for w in (w0, w1):
        w.on_outbox = lambda _name, _last, _first, _kinds, handed: out.extend(
            (item.rule_id, item.customer_id) for _, item in handed)
    first, second, other = Batch(w0, w0.event_log.read(1), False, 100_000, False), \
        Batch(w0, w0.event_log.read(1), True, 100_000, False), Batch(w1, w1.event_log.read(10), True, 100_000, False)
    store.asked.clear()
    _evaluate([first, other, second])
    assert second.decoded is None
    assert sorted(out) == [("first-purchase", "c2"), ("first-purchase", "c3"), ("second-purchase", "c1")]
