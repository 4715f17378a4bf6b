"""SPEC §3b, issue 14: the population's best hour live is the backtest's, whatever the partitions
do. Each partition sees only its own customers; their responses go to the store with its commits,
and a partition waits for the days every partition has passed (`engine.operators.population`).

The partitions are stepped as Bytewax steps them (poll -> evaluate -> epoch end), interleaved,
at different paces, on the in-memory log and store; once with a crash."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson
import pytest

from bench.planted_hours import RULES  # one email channel, a restock rule with `send_time: best`
from engine.actions.trigger import Trigger
from engine.core.session import Session
from engine.core.times import format_ts, parse_ts
from engine.events.decode import EventDecoder
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.operators.source import EngineSource
from engine.rules.compiler import CompiledRules, load_and_compile
from engine.rules.reload import LiveRules
from engine.state.outbox import decode_item
from engine.testing import InMemoryStore, MemoryLog

DAY = 86_400_000
BERLIN = "Europe/Berlin"



@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> tuple[Path, CompiledRules]:
    path = tmp_path_factory.mktemp("population")
    (path / "rules.yaml").write_text(RULES)
    return path, load_and_compile(path)


def line(event_id: str, type_: str, customer: str, ts: str, **props) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": type_, "customer_id": customer, "ts": ts,
                         "properties": props})


def crowd_and_newcomers(days: int = 12) -> tuple[list[bytes], list[bytes]]:
    """Partition 0: a crowd who open mail at 19:xx Berlin time, every day. Partition 1: customers
    who never responded, each told of a restock on a later day (the population's hour is theirs)."""
    crowd = [line(f"id-p{i}", "identify", f"p{i}", "2026-01-01T00:00:00Z", timezone=BERLIN) for i in range(6)]
    crowd += [line(f"o-p{i}-{d}", "email_opened", f"p{i}", f"2026-01-{2 + d:02d}T18:{10 + i:02d}:00Z")
              for d in range(days) for i in range(6)]
    crowd.sort(key=lambda raw: orjson.loads(raw)["ts"])
    newcomers = [line(f"id-n{d}", "identify", f"n{d}", "2026-01-01T00:00:00Z", timezone=BERLIN)
                 for d in range(days)]
    newcomers += [line(f"s-n{d}", "back_in_stock", f"n{d}", f"2026-01-{2 + d:02d}T09:00:00Z") for d in range(days)]
    newcomers.sort(key=lambda raw: orjson.loads(raw)["ts"])
    return crowd, newcomers


def backtest(compiled: CompiledRules, lines: list[bytes]) -> list[Trigger]:
    out: list[Trigger] = []
    replay = Replay(compiled, out.extend, drain=True)
    events, dead = EventDecoder().decode_batch((raw, "t") for raw in sorted(lines, key=lambda r: orjson.loads(r)["ts"]))
    assert not dead
    replay.feed(events)
    replay.finish()
    return out


def live(path: Path, compiled: CompiledRules, parts: dict[str, list[bytes]], sizes: dict[str, int],
         crash_at: int | None = None, seed: int = 0, pick: Callable[[int, list[str]], str] | None = None,
         crashed: str = "p-0", clocks: list | None = None) -> tuple[list[Trigger], InMemoryStore]:
    """Every partition polled in a random interleaving (or as `pick(poll, running)` says), each
    with its own batch size; `crash_at`: after that many polls the `crashed` partition's worker
    is dropped uncommitted and rebuilt (a kill -9). `clocks` gets its committed clock after
    each poll."""
    store = InMemoryStore()
    source = EngineSource(sorted(parts), lambda name, start: MemoryLog(name, parts[name], start), lambda: store,
                          LiveRules(path, compiled, watch=False), exit_at_end=True)
    running = {name: source.build_part("events", name, None) for name in sorted(parts)}
    rng = random.Random(seed)
    for polls in itertools.count(1):
        if not running:
            break
        assert polls < 200_000, "the partitions never finished"
        name = pick(polls, sorted(running)) if pick is not None else rng.choice(sorted(running))
        part = running[name]
        part.batch_size = sizes[name]
        try:
            batches = part.next_batch()
        except StopIteration:
            del running[name]
            continue
        for b in batches:
            b.worker.process(b)
        part.snapshot()
        if clocks is not None:
            clocks.append(store._clocks.get(crashed))
        if polls == crash_at and crashed in running:
            running[crashed] = source.build_part("events", crashed, None)
    triggers = [item for name in parts for entry in store.read_outbox(name, 0, 10**9)[0]
                if isinstance(item := decode_item(entry), Trigger)]
    return triggers, store


def fired(triggers: list[Trigger]) -> dict[str, str]:
    return {t.customer_id: t.fired_at for t in triggers}


def test_the_backtest_sends_newcomers_at_the_crowds_hour(rules):
    path, compiled = rules
    crowd, newcomers = crowd_and_newcomers()
    out = fired(backtest(compiled, crowd + newcomers))
    # the crowd's 19:00 Berlin (18:00 UTC) from the third day on (days up to D-2 count), at once before
    assert out["n0"] == "2026-01-02T09:00:00.000Z" and out["n1"] == "2026-01-03T09:00:00.000Z"
    assert all(out[f"n{d}"] == f"2026-01-{2 + d:02d}T18:00:00.000Z" for d in range(2, 12))


@pytest.mark.parametrize("sizes", [{"p-0": 1000, "p-1": 1}, {"p-0": 1, "p-1": 1000}, {"p-0": 7, "p-1": 3}])
def test_live_partitions_give_the_backtests_hours_whatever_their_pace(rules, sizes):
    """Fails on the code before the shared population: partition 1 has no responders of its own,
    so it sent every newcomer at once (09:00)."""
    path, compiled = rules
    crowd, newcomers = crowd_and_newcomers()
    expected = backtest(compiled, crowd + newcomers)
    for seed in range(3):
        triggers, _ = live(path, compiled, {"p-0": crowd, "p-1": newcomers}, sizes, seed=seed)
        assert sorted(map(msgspec.json.encode, triggers)) == sorted(map(msgspec.json.encode, expected))


def test_a_crash_changes_neither_the_hours_nor_the_counts(rules):
    path, compiled = rules
    crowd, newcomers = crowd_and_newcomers()
    expected = backtest(compiled, crowd + newcomers)
    clean, clean_store = live(path, compiled, {"p-0": crowd, "p-1": newcomers}, {"p-0": 5, "p-1": 2})
    crashed, store = live(path, compiled, {"p-0": crowd, "p-1": newcomers}, {"p-0": 5, "p-1": 2}, crash_at=9)
    key = msgspec.json.encode
    assert sorted(map(key, clean)) == sorted(map(key, expected))
    assert sorted(set(map(key, crashed))) == sorted(map(key, expected))
    days = list(range(parse_ts("2026-01-01T00:00:00Z") // DAY, parse_ts("2026-01-15T00:00:00Z") // DAY))
    counts = store.load_population(["p-0", "p-1"], days)
    assert counts == clean_store.load_population(["p-0", "p-1"], days)   # counted once, crash or not
    assert sum(map(sum, counts.values())) == 6 * 12


def test_an_empty_partition_does_not_hold_the_others_back(rules):
    path, compiled = rules
    crowd, newcomers = crowd_and_newcomers()
    expected = backtest(compiled, crowd + newcomers)
    triggers, _ = live(path, compiled, {"p-0": crowd, "p-1": newcomers, "p-2": []},
                       {"p-0": 10, "p-1": 10, "p-2": 10})
    assert fired(triggers) == fired(expected)


# -- the session's ceiling -------------------------------------------------------------------------

def ev(n: int, ts: int) -> Event:
    return Event(f"e{n}", "email_opened", f"c{n}", ts, {})


def test_the_ceiling_holds_events_in_order_and_the_committed_clock_is_what_was_applied(rules):
    _, compiled = rules
    session = Session(compiled, "t")
    session.cap = 10 * DAY
    out: list[Trigger] = []
    session.apply([ev(1, 9 * DAY), ev(3, 12 * DAY), ev(2, 11 * DAY)], out)
    assert set(session.states) == {"c1"}                        # 11 (late: D = 0) and 12 wait for the ceiling
    assert session.frontier == 12 * DAY and session.applied_through == 11 * DAY - 1
    session.apply([ev(4, 8 * DAY)], out)                        # late and before the ceiling: applied at once
    assert session.late == 2 and set(session.states) == {"c1", "c4"}
    session.set_cap(20 * DAY, out)
    assert set(session.states) == {"c1", "c2", "c3", "c4"} and session.applied_through == 12 * DAY
    assert format_ts(session.applied_through) == "1970-01-13T00:00:00.000Z"



def p1_ahead(poll: int, running: list[str]) -> str:
    """p-1 polled nine times for each poll of p-0, so its events wait for p-0's days behind the ceiling."""
    return "p-0" if "p-0" in running and (poll % 10 == 0 or "p-1" not in running) else "p-1"


@pytest.mark.parametrize("crash_at", [None, 1, 2, 3, 5, 8])
def test_events_the_ceiling_holds_are_re_read_after_a_crash(rules, crash_at):
    """Found in review: with `send_time: best` and no lateness, the events the population's
    ceiling held were decoded without their offsets (only a lateness asked for them), so the
    committed clock's `replay_from` was -1: a crash then re-read from -1 (the in-memory log: the
    last record; Kafka: the oldest retained one) and lost the held events: 0 triggers of 12."""
    path, compiled = rules
    crowd, newcomers = crowd_and_newcomers()
    expected = backtest(compiled, crowd + newcomers)
    clocks: list = []
    triggers, _ = live(path, compiled, {"p-0": crowd, "p-1": newcomers}, {"p-0": 3, "p-1": 3}, crash_at,
                       pick=p1_ahead, crashed="p-1", clocks=clocks)
    assert all(c.replay_from is None or c.replay_from >= 0 for c in clocks if c is not None)
    key = msgspec.json.encode
    assert sorted(set(map(key, triggers))) == sorted(map(key, expected))
