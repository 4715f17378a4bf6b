"""A hot reload between two commits must not lose what the batches before it changed: the
reload checkpoints the session's journal, from which the next commit used to take the customers
to write, so a customer changed before the reload and not after it was never written while the
committed offset moved past their events (found in review: the state effects of those events
were lost for good, exactly-once broken by an ordinary rules edit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.actions.trigger import Trigger
from engine.operators.partition import Batch, PartitionWorker
from engine.rules.compiler import load_and_compile
from engine.rules.reload import LiveRules
from engine.state.customer import encode_state
from engine.state.outbox import decode_item
from engine.testing import InMemoryStore, MemoryLog

T0 = 1_770_000_000_000
LINES = [b'{"event_id": "e%d", "type": "v", "customer_id": "c%d", "ts": %d, "properties": {"amount": %d}}'
         % (i, i % 5, T0 + i * 1000, i) for i in range(12)]
RULES = """
aggregates:
  views: {count: v}
  spend: {sum: amount, on: v}
rules:
  - id: fifth-view
    type: behavioral
    on: v
    if: views == 5
    then: {action: thanks, channel: email}
"""


def run(tmp_path: Path, reload_after: int | None, edit: str = "") -> dict[str, bytes]:
    """The events two by two, a commit only at the end; `reload_after` batches, a reload."""
    folder = tmp_path / f"rules-{reload_after}-{len(edit)}"
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES)
    live = LiveRules(folder, load_and_compile(folder), watch=False)
    store = InMemoryStore()
    worker = PartitionWorker(MemoryLog("p-0", LINES), store, live, 0)
    for n in range(len(LINES) // 2):
        if n == reload_after:
            (folder / "rules.yaml").write_text(RULES + edit)
            live.rules, live.version = load_and_compile(folder), live.version + 1   # what `poll` applies
        worker.process(Batch(worker, worker.event_log.read(2), False, T0, False, backlog=True))
    worker.commit(len(LINES))
    assert store.load_offset("p-0") == len(LINES)
    return {cid: encode_state(state) for cid, state in store.items()}


@pytest.mark.parametrize("reload_after", range(1, 6))
def test_a_reload_between_commits_writes_every_state_the_batches_changed(tmp_path, reload_after):
    expected = run(tmp_path, None)
    assert len(expected) == 5
    same = run(tmp_path, reload_after)   # the same rules, re-read: nothing may change
    assert same == expected   # before: the customers of the batches before the reload were missing or stale
    edited = run(tmp_path, reload_after, "\n  - id: other\n    type: transactional\n    on: never\n"
                                          "    then: {action: t, channel: email}\n")
    assert edited.keys() == expected.keys()


IDLE_V1 = """
aggregates:
  views: {count: v}
rules:
  - id: fifth
    type: behavioral
    on: v
    if: views == 5
    then: {action: t, channel: email}
"""
IDLE_V2 = IDLE_V1 + """  - id: idle-1h
    type: threshold
    inactive: 1h
    then: {action: winback, channel: email}
"""


def idle_fired(tmp_path: Path, cache_size: int) -> list[str]:
    """c0..c4 under rules without deadlines; a reload adds `inactive: 1h`; d0..d4 arrive (the
    cache, `cache_size`, evicts the oldest after that commit); the clock passes every deadline."""
    def ev(i: int, cid: str, ts: int) -> bytes:
        return b'{"event_id": "e%d", "type": "v", "customer_id": "%s", "ts": %d}' % (i, cid.encode(), ts)

    lines = [ev(i, f"c{i}", T0 + i) for i in range(5)] + [ev(10 + i, f"d{i}", T0 + 100 + i) for i in range(5)]
    folder = tmp_path / f"idle-{cache_size}"
    folder.mkdir()
    (folder / "rules.yaml").write_text(IDLE_V1)
    live = LiveRules(folder, load_and_compile(folder), watch=False)
    store = InMemoryStore()
    worker = PartitionWorker(MemoryLog("p-0", lines), store, live, 0, cache_size=cache_size)
    worker.process(Batch(worker, worker.event_log.read(5), False, T0, True))
    worker.commit(5)
    (folder / "rules.yaml").write_text(IDLE_V2)
    live.rules, live.version = load_and_compile(folder), live.version + 1
    worker.process(Batch(worker, worker.event_log.read(5), False, T0, True))
    worker.commit(10)
    worker.process(Batch(worker, [], True, T0 + 4 * 3_600_000, True))   # caught up: the index scan finds the due
    worker.commit(10)
    return sorted(t.customer_id for entry in store.read_outbox("p-0", 0, 100)[0]
                  if isinstance(t := decode_item(entry), Trigger) and t.rule_id == "idle-1h")


def test_a_reload_that_adds_a_deadline_writes_the_cached_customers_it_moves(tmp_path):
    """Found in review: the reload re-indexed the cached customers in memory only; one evicted
    before its next event was then in no deadline index, and its new deadline never fired."""
    everyone = [f"c{i}" for i in range(5)] + [f"d{i}" for i in range(5)]
    assert idle_fired(tmp_path, 1000) == everyone   # nothing evicted
    assert idle_fired(tmp_path, 6) == everyone      # c0..c4 evicted after the reload: before, only d0..d4
