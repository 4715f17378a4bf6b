"""Issue 15: a store whose commit is not atomic (Redis Cluster writes its slots one after the
other) must still apply every event exactly once across a crash. A commit writes the states
before the offset, each state stamped with the offset it holds every event before
(`CustomerState.fence`); after a crash between the two, the re-read events a state holds are
skipped. Here the in-memory store plays such a store: it writes the states of one commit, then
"crashes" before the offset."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson
import pytest

from engine.actions.trigger import Trigger
from engine.core.times import format_ts, parse_ts
from engine.events.decode import EventDecoder
from engine.offline.backtest import Replay
from engine.operators.source import EngineSource
from engine.rules.compiler import load_and_compile
from engine.rules.reload import LiveRules
from engine.state.customer import decode_state, encode_state
from engine.state.outbox import decode_item
from engine.testing import InMemoryStore, MemoryLog

ROOT = Path(__file__).resolve().parents[2]
T0 = parse_ts("2026-03-02T06:00:00Z")


class Crash(Exception):
    """The process died here (a kill -9): nothing after this point was written."""


class SlotBySlot(InMemoryStore):
    """A store whose commit is not atomic: the `crash_at`-th commit writes its states and dies
    before the offset (as a Redis Cluster commit may, between its slots)."""

    atomic = False

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.commits = 0

    def commit(self, partition, images, offset, next_due, unindex=None, expected_offset=None, outbox=(),
               clock=None, population=None, commit_id=""):
        self.commits += 1
        if self.commits == self.crash_at:
            if self.load_offset(partition) != expected_offset:
                return super().commit(partition, images, offset, next_due, unindex, expected_offset, outbox, clock,
                                      population)   # raises StateLost
            self.states.update({cid: decode_state(image) for cid, image in images.items()})
            raise Crash()
        return super().commit(partition, images, offset, next_due, unindex, expected_offset, outbox, clock,
                              population)


def lines() -> list[bytes]:
    """One customer who buys 60 times (more than the 4 recent event ids a state de-duplicates by),
    others around them."""
    out = []
    for i in range(60):
        out.append(orjson.dumps({"event_id": f"p{i}", "type": "purchase", "customer_id": "c1",
                                 "ts": format_ts(T0 + i * 60_000), "properties": {"amount": 10}}))
        out.append(orjson.dumps({"event_id": f"v{i}", "type": "product_view", "customer_id": f"c{2 + i % 5}",
                                 "ts": format_ts(T0 + i * 60_000 + 1), "properties": {"category": "shoes"}}))
    return out


def run(store: InMemoryStore, raw: list[bytes]) -> tuple[list[Trigger], int]:
    rules = load_and_compile(ROOT / "rules")
    source = EngineSource(["p-0"], lambda name, start: MemoryLog(name, raw, start), lambda: store,
                          LiveRules(ROOT / "rules", rules, watch=False), exit_at_end=True)
    part = source.build_part("events", "p-0", None)
    part.batch_size = 25
    crashes = 0
    while True:
        try:
            batches = part.next_batch()
            for b in batches:
                b.worker.process(b)
            part.snapshot()
        except StopIteration:
            break
        except Crash:
            crashes += 1
            part = source.build_part("events", "p-0", None)   # a new process: from the store
            part.batch_size = 25
    triggers = [item for entry in store.read_outbox("p-0", 0, 10**9)[0]
                if isinstance(item := decode_item(entry), Trigger)]
    return triggers, crashes


def unfenced(states: dict) -> dict:
    return {cid: encode_state(msgspec.structs.replace(st, fence=0)) for cid, st in states.items()}


@pytest.mark.parametrize("crash_at", [2, 3, 4])
def test_a_crash_between_the_states_and_the_offset_applies_nothing_twice(crash_at):
    raw = lines()
    store = SlotBySlot(crash_at)
    triggers, crashes = run(store, raw)
    assert crashes == 1
    expected: list = []
    replay = Replay(load_and_compile(ROOT / "rules"), expected.extend, drain=True)
    replay.feed(EventDecoder().decode_batch((r, "t") for r in raw)[0])
    replay.finish()
    live = dict(store.items())
    assert live["c1"].aggs["purchases"] == 60 and live["c1"].fence == len(raw)
    assert unfenced(live) == unfenced(replay.store.states)
    key = msgspec.json.encode
    assert sorted({key(t) for t in triggers}) == sorted(key(t) for t in expected)   # ids kept; a repeat is a re-send
