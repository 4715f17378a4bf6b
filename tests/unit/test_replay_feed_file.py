"""`Replay.feed_file`: the one loop that feeds a JSONL file into a replay (backtest, backfill,
explain's population): the file's dead letters, progress, the stop at `until`."""

from __future__ import annotations

from pathlib import Path

import msgspec

from engine.core.times import format_ts
from engine.events.decode import EventDecoder
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile
from engine.state.customer import encode_state

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl"
BAD = [b"not json", b'{"type": "purchase"}']


class _Progress:
    def __init__(self) -> None:
        self.updates: list[tuple[int, int]] = []

    def update(self, done_bytes: int, events: int) -> None:
        self.updates.append((done_bytes, events))


def _states(replay: Replay) -> dict[str, bytes]:
    return {cid: encode_state(st) for cid, st in replay.store.items()}


def _file(tmp_path: Path) -> tuple[Path, list]:
    lines = SAMPLE.read_bytes().splitlines()
    with_bad = lines[:10] + [BAD[0]] + lines[10:3000] + [BAD[1]] + lines[3000:]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(with_bad) + b"\n")
    return path, EventDecoder().decode_batch((raw, "s") for raw in lines)[0]


def test_feed_file_is_feeding_the_decoded_events_with_the_dead_letters_passed_on(tmp_path):
    path, events = _file(tmp_path)
    rules = load_and_compile(ROOT / "rules")
    triggers: list = []
    dead: list = []
    replay = Replay(rules, triggers.extend, dead_letter=dead.extend)
    progress = _Progress()
    assert replay.feed_file(path, progress) == 2
    replay.finish()
    assert [(d.raw, d.source) for d in dead] == [(BAD[0].decode(), f"{path}:11"), (BAD[1].decode(), f"{path}:3002")]
    assert progress.updates[-1] == (path.stat().st_size, len(events))
    assert [done for done, _ in progress.updates] == sorted(done for done, _ in progress.updates)

    direct: list = []
    expected = Replay(rules, direct.extend)
    expected.feed(events)
    expected.finish()
    assert msgspec.json.encode(triggers) == msgspec.json.encode(direct)
    assert _states(replay) == _states(expected)


def test_feed_file_stops_at_until_and_counts_without_a_dead_letter_output(tmp_path):
    path, events = _file(tmp_path)
    rules = load_and_compile(ROOT / "rules")
    until = events[len(events) // 2].ts
    replay = Replay(rules, lambda _t: None, until=until)
    assert replay.feed_file(str(path)) == 2 and replay.stopped
    replay.finish()
    expected = Replay(rules, lambda _t: None, until=until)
    expected.feed(events)
    expected.finish()
    assert replay.evaluator.counters.events == expected.evaluator.counters.events < len(events)
    assert _states(replay) == _states(expected), format_ts(until)
