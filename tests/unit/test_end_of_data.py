"""The end of data in a backtest (SPEC §5): the clock stops at the last event (or `--until`);
deadlines due later are pending, counted per rule, not fired; `--drain` fires the one-shot
ones, recurring dates never fire after the end."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import msgspec
import pytest

from engine.actions.trigger import Trigger
from engine.cli import main
from engine.core.times import format_ts, parse_ts
from engine.events.decode import EventDecoder, read_jsonl
from engine.events.model import Event
from engine.offline.backtest import Replay, backtest_file
from engine.rules.compiler import CompiledRules, load_and_compile

ROOT = Path(__file__).resolve().parents[2]
REES46 = "rees46-clickstream-sample.jsonl"
MIN = 60_000
HOUR = 60 * MIN
DAY = 86_400_000
T0 = parse_ts("2026-03-02T06:00:00Z")

WINBACK = """\
rules:
  - id: winback-60d
    type: threshold
    inactive: 60d
    then: {action: winback, channel: email}
"""

CART = """\
rules:
  - id: cart
    type: transactional
    on: add_to_cart
    unless: {event: [purchase], within: 30m}
    then: {action: cart-reminder, channel: email}
"""

BIRTHDAY = """\
rules:
  - id: birthday
    type: recurring
    every: year
    date: profile.birthday
    at: "09:00"
    then: {action: birthday-coupon, channel: email}
  - id: thanks
    type: transactional
    on: purchase
    delay: 1d
    then: {action: thanks, channel: email}
"""


def rules_dir(tmp: Path, text: str, lateness: str | None = None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    body = textwrap.dedent(text)
    if lateness is not None:
        body = f"time: {{lateness: {lateness}}}\n" + body
    (tmp / "rules.yaml").write_text(body)
    return tmp


def run(rules: CompiledRules, events: list[Event], until: int | None = None, drain: bool = False
        ) -> tuple[list[Trigger], Replay]:
    out: list[Trigger] = []
    replay = Replay(rules, out.extend, until=until, drain=drain)
    replay.feed(events)
    replay.finish()
    return out, replay


def old_end_of_file(rules: CompiledRules, events: list[Event]) -> list[Trigger]:
    """The end of file before the clock stopped there: every one-shot deadline fired."""
    out: list[Trigger] = []
    replay = Replay(rules, out.extend)
    replay.feed(events)
    replay.session.advance(None, out, recurring_until=replay.session.clock)
    return out


def decoded(path: Path) -> list[Event]:
    events, dead = EventDecoder().decode_batch(read_jsonl(path))
    assert not dead
    return events


def ev(eid: str, type_: str, cid: str, at: int, **props) -> Event:
    return Event(eid, type_, cid, at, props)


def enc(triggers: list[Trigger]) -> list[bytes]:
    return [msgspec.json.encode(t) for t in triggers]


# -- the reproduction: REES46 with a 60-day win-back --------------------------------------


def test_rees46_win_backs_after_the_end_of_data_are_pending_not_fired(tmp_path, shared_data):
    """2.5 hours of clickstream, a 60-day win-back: no customer can have been inactive 60 days
    inside the data, so nothing fires; every customer's win-back is pending. Drained, they
    fire as the old end of file fired them."""
    path = shared_data / REES46
    rules = load_and_compile(rules_dir(tmp_path / "rules", WINBACK))
    events = decoded(path)
    end = max(e.ts for e in events)
    last_seen: dict[str, int] = {}
    for e in events:
        last_seen[e.customer_id] = max(last_seen.get(e.customer_id, e.ts), e.ts)
    waiting = sum(1 for ts in last_seen.values() if ts + 60 * DAY > end)

    out: list[Trigger] = []
    summary = backtest_file(rules, path, out.extend, lambda dead: None, progress=False)
    assert [t for t in out if parse_ts(t.fired_at) > end] == []
    assert summary.ended_at == end and not summary.drained
    assert summary.pending == {"winback-60d": waiting} and summary.pending_total == waiting
    assert waiting == len(last_seen) > 1000

    drained: list[Trigger] = []
    summary = backtest_file(rules, path, drained.extend, lambda dead: None, progress=False, drain=True)
    assert enc(drained) == enc(old_end_of_file(rules, events))
    assert len([t for t in drained if parse_ts(t.fired_at) > end]) == waiting
    assert summary.drained and summary.pending == {"winback-60d": waiting} and summary.triggers == len(drained)


# -- the boundary, lateness, --until -------------------------------------------------------------


@pytest.mark.parametrize("lateness", [None, "10m"])
def test_a_deadline_due_at_the_last_event_fires_one_after_it_is_pending(tmp_path, lateness):
    """As in the replay (deadlines due strictly before an event fire before it, those at its
    instant after it) and `Session.advance`: the end includes its own instant."""
    rules = load_and_compile(rules_dir(tmp_path, CART, lateness))
    cart = ev("c", "add_to_cart", "c-1", T0)
    at_end, _ = run(rules, [cart, ev("v", "product_view", "c-2", T0 + 30 * MIN)])
    assert [(t.rule_id, t.fired_at) for t in at_end] == [("cart", format_ts(T0 + 30 * MIN))]
    before, replay = run(rules, [cart, ev("v", "product_view", "c-2", T0 + 30 * MIN - 1)])
    assert before == [] and replay.pending == {"cart": 1} and replay.ended_at == T0 + 30 * MIN - 1


def test_held_events_are_all_applied_at_the_end_and_their_deadlines_fire(tmp_path):
    """With a lateness the last events are still held when the data ends: they are applied,
    and the deadlines up to the end fire, as in the same file sorted with no lateness."""
    late = load_and_compile(rules_dir(tmp_path / "late", CART, "45m"))
    plain = load_and_compile(rules_dir(tmp_path / "plain", CART))
    events = [ev("a", "add_to_cart", "c-1", T0), ev("b", "add_to_cart", "c-2", T0 + 20 * MIN),
              ev("p", "purchase", "c-2", T0 + 10 * MIN), ev("v", "product_view", "c-3", T0 + 40 * MIN)]
    got, replay = run(late, events)
    want, sorted_replay = run(plain, sorted(events, key=lambda e: e.ts))
    assert [t.customer_id for t in got] == ["c-1"] and enc(got) == enc(want)
    assert replay.pending == sorted_replay.pending == {"cart": 1}   # c-2's 20-minute cart, due at 06:50


def test_until_stops_the_clock(tmp_path):
    """`until` after the last event: the clock runs on to it, no further; before a later
    event: that event is not replayed."""
    rules = load_and_compile(rules_dir(tmp_path, CART))
    cart = ev("c", "add_to_cart", "c-1", T0)
    fired, replay = run(rules, [cart], until=T0 + HOUR)
    assert [t.fired_at for t in fired] == [format_ts(T0 + 30 * MIN)] and replay.pending == {}
    assert replay.ended_at == T0 + HOUR
    early, replay = run(rules, [cart, ev("v", "product_view", "c-2", T0 + 2 * HOUR)], until=T0 + 10 * MIN)
    assert early == [] and replay.pending == {"cart": 1} and replay.ended_at == T0 + 10 * MIN
    assert replay.summary(0, 1.0).events == 1
    drained, _ = run(rules, [cart], until=T0 + 10 * MIN, drain=True)
    assert [t.fired_at for t in drained] == [format_ts(T0 + 30 * MIN)]




@pytest.mark.parametrize("drain", [False, True])
def test_recurring_dates_never_fire_after_the_end(tmp_path, drain):
    """A birthday after the end neither fires nor counts as pending (it recurs for ever and no
    drain fires it); the one-shot thank-you does with --drain. Inside `until`, it fires."""
    rules = load_and_compile(rules_dir(tmp_path, BIRTHDAY))
    events = [ev("i", "identify", "c-1", T0, birthday="1990-03-10", timezone="UTC"),
              ev("p", "purchase", "c-1", T0 + MIN, amount=5)]
    out, replay = run(rules, events, drain=drain)
    assert [t.rule_id for t in out] == (["thanks"] if drain else [])
    assert replay.pending == {"thanks": 1}
    out, replay = run(rules, events, until=T0 + 30 * DAY, drain=drain)
    assert sorted((t.rule_id, t.fired_at) for t in out) == [
        ("birthday", "2026-03-10T09:00:00.000Z"), ("thanks", format_ts(T0 + MIN + DAY))]
    assert replay.pending == {}


def test_drained_triggers_extend_the_stopped_ones_with_those_after_the_end():
    """The bundled rules over the sample events: stopped at the end, the triggers are the
    drained run's up to the end; the drained run's others all come after it, from rules
    with pending deadlines, and equal the old end of file's."""
    rules = load_and_compile(ROOT / "rules")
    events = decoded(ROOT / "examples" / "sample-events.jsonl")
    stopped, replay = run(rules, events)
    drained, _ = run(rules, events, drain=True)
    end = replay.ended_at
    assert end == max(e.ts for e in events)
    assert enc(drained[:len(stopped)]) == enc(stopped)
    after = drained[len(stopped):]
    assert after and all(parse_ts(t.fired_at) > end for t in after)
    assert all(parse_ts(t.fired_at) <= end for t in stopped)
    assert {t.rule_id for t in after} <= set(replay.pending)
    assert enc(drained) == enc(old_end_of_file(rules, events))


# -- the command line ------------------------------------------------------------------------------


def test_the_cli_notes_the_pending_deadlines_and_drain_fires_them(tmp_path, capsys, shared_data):
    rules = rules_dir(tmp_path / "rules", WINBACK)
    events = shared_data / REES46
    out, summary = tmp_path / "t.jsonl", tmp_path / "s.json"
    assert main(["backtest", "--rules", str(rules), "--events", str(events), "--out", str(out),
                 "--summary", str(summary), "--no-progress"]) == 0
    s = json.loads(summary.read_text())
    n, end = s["pending"]["winback-60d"], format_ts(s["ended_at"])
    err = capsys.readouterr().err
    assert out.read_text() == "" and n > 0
    assert f"note: {n:,} deadlines pending at the end of data ({end}) were not fired; --drain fires them" in err
    header, row = err.splitlines()[:2]
    assert header.split()[-2:] == ["pending", "reasons"] and row.split()[-1] == f"{n:,}"
    assert main(["backtest", "--rules", str(rules), "--events", str(events), "--out", str(out),
                 "--summary", str(summary), "--no-progress", "--drain"]) == 0
    assert f"({end}) were fired after it (--drain)" in capsys.readouterr().err
    fired = [msgspec.json.decode(line, type=Trigger) for line in out.read_text().splitlines()]
    old = old_end_of_file(load_and_compile(rules), decoded(events))
    assert enc(fired) == enc(old) and len(fired) == n
    assert json.loads(summary.read_text())["drained"] is True


def test_the_cli_help_states_the_end_of_data(capsys):
    with pytest.raises(SystemExit):
        main(["backtest", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "The clock stops at the last event (or at --until)" in text and "--drain" in text


def test_the_summary_counts_event_types_replayed_and_names_each_rules_events(tmp_path):
    """What the report needs to say why a rule never fired, up to `until`."""
    rules = load_and_compile(rules_dir(tmp_path, CART + WINBACK.replace("rules:\n", "")))
    events = [ev("e1", "add_to_cart", "c1", T0), ev("e2", "view", "c1", T0 + MIN),
              ev("e3", "add_to_cart", "c2", T0 + 2 * MIN), ev("e4", "view", "c2", T0 + HOUR)]
    _, replay = run(rules, events, until=T0 + 30 * MIN)
    summary = replay.summary(0, 1.0)
    assert summary.event_types == {"add_to_cart": 2, "view": 1}
    assert summary.rule_events == {"cart": ["add_to_cart"], "winback-60d": []}


def test_with_a_lateness_the_event_types_replayed_include_late_ones_before_until(tmp_path):
    """With `time: {lateness: D}` the session orders events by time: an event at or before
    `until` that arrives after one past it is still replayed, so it is counted too."""
    rules = load_and_compile(rules_dir(tmp_path, "time: {lateness: 1h}\n" + CART))
    events = [ev("e1", "add_to_cart", "c1", T0), ev("e2", "view", "c1", T0 + 40 * MIN),
              ev("e3", "purchase", "c2", T0 + 10 * MIN)]   # late, before until
    _, replay = run(rules, events, until=T0 + 30 * MIN)
    assert replay.summary(0, 1.0).event_types == {"add_to_cart": 1, "purchase": 1}
    assert replay.session.evaluator.counters.events == 2
