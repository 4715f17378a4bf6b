"""Edge cases found in review: bad profile data, reloads that change a rule's shape, recurring
dates at their boundaries, bounded state, ids that must not collide."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

from engine.core.evaluate import Evaluator
from engine.core.times import parse_ts
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile

BIRTHDAY = """
rules:
  - id: bday
    type: recurring
    every: year
    date: profile.birthday
    at: "09:00"
    then: {action: b, channel: email}
"""


def rules(tmp_path: Path, text: str, name: str = "r"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "rules.yaml").write_text(textwrap.dedent(text))
    return load_and_compile(d)


def ev(eid: str, typ: str, at: str | int, cid: str = "c1", **props) -> Event:
    return Event(eid, typ, cid, parse_ts(at) if isinstance(at, str) else at, props)


def replay(compiled, events, until=None):
    """Drained: deadlines after the last event fire (these tests are about what they do)."""
    out: list = []
    r = Replay(compiled, out.extend, until=until, drain=True)
    r.feed(events)
    r.finish()
    return out, r


def test_bad_time_zone_values_mean_utc_not_a_crash(tmp_path):
    compiled = rules(tmp_path, BIRTHDAY + """
  - {id: thanks, type: transactional, on: purchase, then: {action: t, channel: email}}
policy: {quiet_hours: {from: "21:00", to: "08:00"}}
""")
    events = [ev("i", "identify", "2026-01-01T00:00:00Z", birthday="1990-03-01", timezone=["Europe/Berlin"]),
              ev("p", "purchase", "2026-01-02T12:00:00Z", amount=5),
              ev("j", "identify", "2026-01-03T00:00:00Z", timezone={"name": "Europe/Berlin"})]
    out, _ = replay(compiled, events, until=parse_ts("2026-12-31T00:00:00Z"))
    assert [t.rule_id for t in out] == ["thanks", "bday"]
    assert out[1].fired_at == "2026-03-01T09:00:00.000Z"          # UTC


def test_birthday_far_in_the_future_is_ignored(tmp_path):
    out, _ = replay(rules(tmp_path, BIRTHDAY), [ev("i", "identify", "2026-01-01T00:00:00Z", birthday="2090-05-05")])
    assert out == []


def test_a_zone_change_on_the_day_does_not_fire_the_birthday_twice(tmp_path):
    events = [ev("i1", "identify", "2026-01-01T00:00:00Z", birthday="1990-03-01"),
              ev("i2", "identify", "2026-03-01T10:00:00Z", timezone="America/Los_Angeles"),
              ev("x", "page_view", "2026-03-03T00:00:00Z")]
    out, _ = replay(rules(tmp_path, BIRTHDAY), events)
    assert [t.fired_at for t in out if t.rule_id == "bday"] == ["2026-03-01T09:00:00.000Z"]


def test_a_profile_update_exactly_at_the_occurrence_keeps_it(tmp_path):
    events = [ev("i1", "identify", "2026-01-01T00:00:00Z", birthday="1990-03-01"),
              ev("i2", "identify", "2026-03-01T09:00:00Z", first_name="Ann"),
              ev("x", "page_view", "2026-03-02T00:00:00Z")]
    compiled = rules(tmp_path, BIRTHDAY.replace("then:", "if: profile.first_name != \"\"\n    then:"))
    out, _ = replay(compiled, events)
    assert [t.fired_at for t in out] == ["2026-03-01T09:00:00.000Z"]


def test_recurring_if_is_evaluated(tmp_path):
    compiled = rules(tmp_path, """
aggregates:
  purchases: {count: purchase}
""" + BIRTHDAY.replace("then:", "if: purchases >= 1\n    then:"))
    quiet = [ev("i", "identify", "2026-01-01T00:00:00Z", birthday="1990-03-01"), ev("x", "page_view", "2026-03-05T00:00:00Z")]
    assert replay(compiled, quiet)[0] == []
    buyer = quiet + [ev("p", "purchase", "2026-02-01T00:00:00Z", amount=1)]
    assert [t.rule_id for t in replay(compiled, sorted(buyer, key=lambda e: e.ts))[0]] == ["bday"]


def test_a_reload_that_removes_series_steps_lets_their_deadlines_lapse(tmp_path):
    three = rules(tmp_path, """
rules:
  - id: ws
    type: behavioral
    on: signup
    steps:
      - then: {action: w1, channel: email}
      - after: 1d
        then: {action: w2, channel: email}
      - after: 1d
        unless: {event: email_clicked}
        then: {action: w3, channel: email}
""", "three")
    two = rules(tmp_path, """
rules:
  - id: ws
    type: behavioral
    on: signup
    steps:
      - then: {action: w1, channel: email}
      - after: 1d
        then: {action: w2, channel: email}
""", "two")
    out: list = []
    state = Evaluator(three).on_event(None, ev("s", "signup", "2026-03-01T10:00:00Z"), out)
    Evaluator(three).on_time(state, "c1", parse_ts("2026-03-02T10:00:00Z"), out)
    assert [(t.rule, t.step) for t in state.timers] == [("ws", 2)]
    reloaded = Evaluator(two)
    reloaded.on_event(state, ev("k", "email_clicked", "2026-03-02T12:00:00Z"), out)
    reloaded.on_time(state, "c1", parse_ts("2026-03-05T00:00:00Z"), out)
    assert state.timers == [] and [t.action for t in out] == ["w1", "w2"]


def test_pending_waits_per_rule_are_capped(tmp_path):
    compiled = rules(tmp_path, """
rules:
  - {id: after-sale, type: transactional, on: purchase, delay: 3d, then: {action: tips, channel: email}}
""")
    r = Replay(compiled, lambda out: None)
    r.feed([ev(f"p{i}", "purchase", 1_000_000 + i * 1000) for i in range(50)])
    assert Counter(t.rule for t in r.store.states["c1"].timers) == {"after-sale": 8}
    assert r.evaluator.counters.timers_dropped == 42


def test_deadline_rules_see_the_cause_event_type(tmp_path):
    compiled = rules(tmp_path, """
rules:
  - {id: after, type: transactional, on: purchase, delay: 1d, then: {action: a, channel: email, payload: {kind: "{event.type}"}}}
""")
    out, _ = replay(compiled, [ev("p", "purchase", "2026-03-01T10:00:00Z")])
    assert out[0].payload == {"kind": "purchase"}


def test_different_event_ids_are_not_taken_for_duplicates(tmp_path):
    compiled = rules(tmp_path, "aggregates:\n  purchases: {count: purchase}\n")
    evaluator, state = Evaluator(compiled), None
    for eid in ("plumless", "buckeroo"):      # the same CRC32
        state = evaluator.on_event(state, ev(eid, "purchase", "2026-03-01T10:00:00Z"), [])
    assert state.aggs["purchases"] == 2


def test_inactivity_does_not_fire_twice_for_one_stretch(tmp_path):
    compiled = rules(tmp_path, "rules:\n  - {id: winback, type: threshold, inactive: 30d, then: {action: w, channel: email}}\n")
    events = [ev("a", "page_view", "2026-01-01T00:00:00Z"), ev("b", "page_view", "2026-03-01T00:00:00Z", cid="c2"),
              ev("c", "page_view", "2026-01-01T00:00:00Z")]     # late, at the same time as the last one
    out, _ = replay(compiled, events)
    assert sorted(t.customer_id for t in out) == ["c1", "c2"]


def test_matched_waits_get_distinct_ids(tmp_path):
    compiled = rules(tmp_path, """
rules:
  - id: coupon
    type: behavioral
    on: coupon_issued
    unless: {event: coupon_redeemed, within: 7d, match: {coupon: "{event.coupon}"}}
    then: {action: r, channel: email}
""")
    out, _ = replay(compiled, [ev("e:1", "coupon_issued", "2026-03-01T10:00:00Z", coupon="X"),
                               ev("e", "coupon_issued", "2026-03-01T11:00:00Z", coupon="1:X")])
    assert len({t.trigger_id for t in out}) == 2


def test_a_late_event_before_the_cause_does_not_cancel_it_and_nan_is_ignored(tmp_path):
    compiled = rules(tmp_path, """
aggregates:
  spend: {sum: amount, on: purchase}
rules:
  - {id: cart, type: transactional, on: add_to_cart, unless: {event: purchase, within: 30m}, then: {action: c, channel: email}}
  - {id: vip, type: threshold, on: purchase, if: spend >= 100, then: {action: v, channel: email}}
""")
    events = [ev("a", "add_to_cart", "2026-03-01T10:00:00Z"), ev("p", "purchase", "2026-03-01T09:00:00Z", amount="NaN"),
              ev("q", "purchase", "2026-03-01T11:00:00Z", amount=150)]
    out, r = replay(compiled, events)
    assert sorted(t.rule_id for t in out) == ["cart", "vip"]
    assert r.store.states["c1"].aggs["spend"] == 150
