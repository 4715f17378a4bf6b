"""The contact policy, element by element, through the same replay the backtest uses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.actions.trigger import Trigger
from engine.core.evaluate import Evaluator
from engine.core.times import format_ts, parse_ts
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.policy.contact import in_control_group
from engine.rules.compiler import load_and_compile
from engine.state.customer import LEGACY_DEFER_KEY, CustomerState, Timer, decode_state, encode_state

DAY = 86_400_000
HOUR = 3_600_000


def compile_yaml(tmp_path: Path, text: str):
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(text))
    return load_and_compile(tmp_path)


def replay(rules, events: list[Event], until: int | None = None) -> list[Trigger]:
    """Drained: deadlines and deferred sends after the last event fire (what the policy does to them)."""
    out: list[Trigger] = []
    r = Replay(rules, out.extend, until=until, drain=True)
    r.feed(sorted(events, key=lambda e: e.ts))
    r.finish()
    return out


def ev(i: int | str, type_: str, at: str | int, cid: str = "c1", **props) -> Event:
    ts = parse_ts(at) if isinstance(at, str) else at
    return Event(f"e{i}", type_, cid, ts, props)


PURCHASE_RULE = """
rules:
  - id: thanks
    type: transactional
    on: purchase
    then: {action: thank-you, channel: email}
"""


def test_frequency_cap_three_per_seven_days_with_five_triggers(tmp_path):
    rules = compile_yaml(tmp_path, PURCHASE_RULE + """
policy:
  frequency_caps:
    - {channel: email, max: 3, per: 7d}
""")
    t0 = parse_ts("2026-03-02T10:00:00Z")
    events = [ev(i, "purchase", t0 + i * DAY) for i in range(5)]          # days 0..4
    events.append(ev(9, "purchase", t0 + 7 * DAY + HOUR))                  # day 7: day 0's send left the window
    out = replay(rules, events)
    assert [(t.status, t.reason) for t in out] == [
        ("sent", None), ("sent", None), ("sent", None),
        ("suppressed", "frequency_cap"), ("suppressed", "frequency_cap"), ("sent", None)]


def test_cross_channel_cap(tmp_path):
    rules = compile_yaml(tmp_path, """
rules:
  - {id: a, type: transactional, on: purchase, then: {action: a, channel: email}}
  - {id: b, type: transactional, on: add_to_cart, then: {action: b, channel: push}}
policy:
  frequency_caps:
    - {channel: "*", max: 2, per: 1d}
""")
    t0 = parse_ts("2026-03-02T10:00:00Z")
    out = replay(rules, [ev(1, "purchase", t0), ev(2, "add_to_cart", t0 + HOUR), ev(3, "purchase", t0 + 2 * HOUR)])
    assert [t.status for t in out] == ["sent", "sent", "suppressed"]


def test_opt_out_between_two_triggers(tmp_path):
    rules = compile_yaml(tmp_path, PURCHASE_RULE + "policy: {consent: required}\n")
    t0 = parse_ts("2026-03-02T10:00:00Z")
    out = replay(rules, [
        ev(0, "purchase", t0 - HOUR),                                      # before any opt-in
        ev(1, "consent", t0, channel="email", granted=True),
        ev(2, "purchase", t0 + HOUR),
        ev(3, "consent", t0 + 2 * HOUR, channel="email", granted=False),
        ev(4, "purchase", t0 + 3 * HOUR),
    ])
    assert [(t.status, t.reason) for t in out] == [
        ("suppressed", "no_consent"), ("sent", None), ("suppressed", "no_consent")]


def test_consent_from_identify_traits_and_optional_mode(tmp_path):
    required = compile_yaml(tmp_path, PURCHASE_RULE + "policy: {consent: required}\n")
    t0 = parse_ts("2026-03-02T10:00:00Z")
    traits = ev(1, "identify", t0, consent={"email": True})
    assert [t.status for t in replay(required, [traits, ev(2, "purchase", t0 + HOUR)])] == ["sent"]
    optional = compile_yaml(tmp_path, PURCHASE_RULE + "policy: {consent: optional}\n")
    assert [t.status for t in replay(optional, [ev(2, "purchase", t0 + HOUR)])] == ["sent"]
    opted_out = ev(1, "consent", t0, channel="email", granted=False)
    assert [t.reason for t in replay(optional, [opted_out, ev(2, "purchase", t0 + HOUR)])] == ["no_consent"]


QUIET = PURCHASE_RULE + """
policy:
  quiet_hours: {from: "21:00", to: "08:00", mode: MODE}
"""


@pytest.mark.parametrize(("local_fire", "expected"), [
    ("2026-03-10T22:30:00Z", "2026-03-11T07:00:00.000Z"),   # 23:30 CET -> 08:00 CET next morning (across midnight)
    ("2026-03-10T23:30:00Z", "2026-03-11T07:00:00.000Z"),   # 00:30 CET, after midnight -> 08:00 the same day
    ("2026-03-28T21:30:00Z", "2026-03-29T06:00:00.000Z"),   # 22:30 CET on Saturday -> 08:00 CEST (DST began)
    ("2026-10-24T20:30:00Z", "2026-10-25T07:00:00.000Z"),   # 22:30 CEST -> 08:00 CET (DST ended)
])
def test_quiet_hours_defer_across_midnight_and_dst(tmp_path, local_fire, expected):
    rules = compile_yaml(tmp_path, QUIET.replace("MODE", "defer"))
    at = parse_ts(local_fire)
    out = replay(rules, [ev(1, "identify", at - DAY, timezone="Europe/Berlin"), ev(2, "purchase", at)])
    (t,) = out
    assert (t.status, t.fired_at) == ("sent", expected)
    assert t.cause_event_id == "e2"


def test_quiet_hours_drop_and_outside_hours(tmp_path):
    rules = compile_yaml(tmp_path, QUIET.replace("MODE", "drop"))
    night, day = parse_ts("2026-03-10T23:00:00Z"), parse_ts("2026-03-10T12:00:00Z")
    assert [(t.status, t.reason) for t in replay(rules, [ev(1, "purchase", night)])] == [
        ("suppressed", "quiet_hours_dropped")]
    assert [(t.status, t.fired_at) for t in replay(rules, [ev(1, "purchase", day)])] == [
        ("sent", format_ts(day))]


def test_deferred_trigger_is_checked_again_when_quiet_hours_end(tmp_path):
    rules = compile_yaml(tmp_path, QUIET.replace("MODE", "defer") + "  consent: required\n")
    night = parse_ts("2026-03-10T23:00:00Z")
    out = replay(rules, [
        ev(1, "consent", night - DAY, channel="email", granted=True),
        ev(2, "purchase", night),
        ev(3, "consent", night + HOUR, channel="email", granted=False),    # opts out during the night
    ])
    assert [(t.status, t.reason, t.fired_at) for t in out] == [
        ("suppressed", "no_consent", "2026-03-11T08:00:00.000Z")]


def test_rule_level_quiet_hours_mode_overrides_policy(tmp_path):
    rules = compile_yaml(tmp_path, QUIET.replace("MODE", "defer").replace(
        "then: {action: thank-you, channel: email}", "then: {action: thank-you, channel: email}\n    quiet_hours: drop"))
    assert [t.reason for t in replay(rules, [ev(1, "purchase", "2026-03-10T23:00:00Z")])] == ["quiet_hours_dropped"]


def test_holdout_share_is_ten_percent_and_stable():
    customers = [f"c{i}" for i in range(100_000)]
    held = {c for c in customers if in_control_group(c, "", "salt", 0.10)}
    assert 9_000 <= len(held) <= 11_000                 # 10% within 1 point
    again = {c for c in customers if in_control_group(c, "", "salt", 0.10)}
    assert again == held                                 # stable across runs
    other_rule = {c for c in customers if in_control_group(c, "rule-b", "salt", 0.10)}
    assert len(other_rule & held) < 2_000                # per-rule scopes draw different customers


def test_held_out_triggers_are_recorded_not_sent(tmp_path):
    rules = compile_yaml(tmp_path, PURCHASE_RULE + "policy: {control_group: 50%}\n")
    t0 = parse_ts("2026-03-02T10:00:00Z")
    events = [ev(i, "purchase", t0 + i, cid=f"c{i}") for i in range(200)]
    out = replay(rules, events)
    by_status = {s: [t for t in out if t.status == s] for s in ("sent", "held_out")}
    assert len(out) == 200 and 70 < len(by_status["held_out"]) < 130
    assert {t.customer_id for t in by_status["held_out"]} == {
        c for c in (f"c{i}" for i in range(200)) if in_control_group(c, "", "", 0.5)}


@pytest.mark.parametrize("order", [("low", "high"), ("high", "low")])
def test_priority_higher_wins_regardless_of_file_order(tmp_path, order):
    rule = {
        "high": "  - {id: zz-high, type: transactional, on: purchase, priority: 10, then: {action: h, channel: email}}\n",
        "low": "  - {id: aa-low, type: transactional, on: purchase, priority: 1, then: {action: l, channel: sms}}\n",
    }
    rules = compile_yaml(tmp_path, "rules:\n" + rule[order[0]] + rule[order[1]] + "policy: {consent: optional}\n")
    out = {t.rule_id: (t.status, t.reason) for t in replay(rules, [ev(1, "purchase", "2026-03-02T10:00:00Z")])}
    assert out == {"zz-high": ("sent", None), "aa-low": ("suppressed", "priority")}


@pytest.mark.parametrize("order", [("b", "a"), ("a", "b")])
def test_priority_ties_resolved_by_rule_id(tmp_path, order):
    rule = {name: f"  - {{id: rule-{name}, type: transactional, on: purchase, then: {{action: {name}, channel: email}}}}\n"
            for name in "ab"}
    rules = compile_yaml(tmp_path, "rules:\n" + rule[order[0]] + rule[order[1]] + "policy: {consent: optional}\n")
    out = {t.rule_id: (t.status, t.reason) for t in replay(rules, [ev(1, "purchase", "2026-03-02T10:00:00Z")])}
    assert out == {"rule-a": ("sent", None), "rule-b": ("suppressed", "priority")}


def test_attribution_within_window_for_sent_and_held_out(tmp_path):
    rules = compile_yaml(tmp_path, """
rules:
  - id: nudge
    type: transactional
    on: add_to_cart
    attribution_window: 2d
    then: {action: nudge, channel: email}
policy:
  control_group: 50%
""")
    t0 = parse_ts("2026-03-02T10:00:00Z")
    sent_c = next(f"c{i}" for i in range(100) if not in_control_group(f"c{i}", "", "", 0.5))
    held_c = next(f"c{i}" for i in range(100) if in_control_group(f"c{i}", "", "", 0.5))
    events = []
    for cid in (sent_c, held_c):
        events += [ev(f"{cid}-1", "add_to_cart", t0, cid=cid),
                   ev(f"{cid}-2", "email_opened", t0 + HOUR, cid=cid),
                   ev(f"{cid}-3", "purchase", t0 + DAY, cid=cid, amount=50.0),
                   ev(f"{cid}-4", "purchase", t0 + DAY + HOUR, cid=cid, amount=25.0),
                   ev(f"{cid}-5", "purchase", t0 + 3 * DAY, cid=cid, amount=999.0)]   # outside the 2d window
    r = Replay(rules, lambda out: None)
    r.feed(sorted(events, key=lambda e: e.ts))
    r.finish()
    o = r.evaluator.outcomes["nudge"]
    assert (o.sent, o.responded, o.converted, o.revenue) == (1, 1, 1, 75.0)
    assert (o.held_out, o.held_out_responded, o.held_out_converted, o.held_out_revenue) == (1, 1, 1, 75.0)


def test_a_deferred_send_has_its_own_place_in_the_state(tmp_path):
    rules = compile_yaml(tmp_path, QUIET.replace("MODE", "defer"))
    night, morning = parse_ts("2026-03-10T23:00:00Z"), parse_ts("2026-03-11T08:00:00Z")
    evaluator, out = Evaluator(rules), []
    state = evaluator.on_event(None, ev(1, "purchase", night), out)
    assert out == [] and state.timers == []
    (d,) = state.deferred
    assert (d.rule, d.due, d.cause, d.cause_event_id, d.deferred_at) == ("thanks", morning, "e1", "e1", night)
    assert evaluator.next_due(state) == state.next_due() == morning
    evaluator.on_time(state, "c1", morning - 1, out)
    assert out == [] and state.deferred == [d]
    evaluator.on_time(state, "c1", morning, out)
    assert [(t.status, t.fired_at) for t in out] == [("sent", "2026-03-11T08:00:00.000Z")]
    assert state.deferred == [] and evaluator.next_due(state) is None


def test_a_send_deferred_by_an_older_engine_still_goes_out(tmp_path):
    """Before `CustomerState.deferred`, a deferred send was a timer under a magic key: decoding lifts it."""
    rules = compile_yaml(tmp_path, QUIET.replace("MODE", "defer"))
    night, morning = parse_ts("2026-03-10T23:00:00Z"), parse_ts("2026-03-11T08:00:00Z")
    evaluator, expected = Evaluator(rules), []
    evaluator.on_time(evaluator.on_event(None, ev(1, "purchase", night), expected), "c1", morning, expected)
    legacy = Timer(morning, "thanks", 0, LEGACY_DEFER_KEY, "e1", night,
                   {"payload": {}, "cause_event_id": "e1", "deferred_at": night})
    state = decode_state(encode_state(CustomerState(last_ts=night, timers=[legacy])))
    assert state.timers == [] and [d.due for d in state.deferred] == [morning]
    out: list[Trigger] = []
    Evaluator(rules).on_time(state, "c1", morning, out)
    assert out == expected and len(out) == 1
