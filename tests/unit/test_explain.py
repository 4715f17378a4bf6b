"""`triggers explain`: one customer's state, timers, conditions and why each rule fired or not."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import msgspec
import pytest

from engine.cli.explain import add_parser
from engine.core.times import format_ts, parse_ts
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.offline.explain import (
    ExplainError,
    Explanation,
    UnknownCustomer,
    check_condition,
    explain_customer,
    print_explanation,
)
from engine.offline.explain import condition_env as expr_env
from engine.rules.compiler import load_and_compile
from engine.state.customer import CustomerState

T0 = parse_ts("2026-03-02T10:00:00Z")
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

RULES = """\
aggregates:
  lifetime_spend: {sum: amount, on: purchase}
  purchases:      {count: purchase}
rules:
  - id: vip-5000
    type: threshold
    on: purchase
    if: lifetime_spend >= 5000
    then: {action: vip-welcome, channel: email}
  - id: shoe-fan
    type: transactional
    on: purchase
    if: purchases >= 2 and event.category == "shoes"
    then: {action: shoe-picks, channel: email}
  - id: cart-abandoned
    type: transactional
    on: add_to_cart
    unless: {event: [purchase], within: 30m}
    then: {action: cart-reminder, channel: email, payload: {sku: "{event.sku}"}}
    cooldown: 24h
  - id: welcome
    type: behavioral
    on: signup
    steps:
      - then: {action: welcome-1, channel: email}
policy:
  consent: required
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    (d / "rules.yaml").write_text(RULES)
    return load_and_compile(d)


class Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, type_: str, at: int, cid: str = "c1", **props) -> Event:
        ev = Event(f"e{len(self.events) + 1}", type_, cid, at, props)
        self.events.append(ev)
        return ev

    def opt_in(self, cid: str = "c1", at: int = T0 - DAY) -> None:
        self.add("consent", at, cid, channel="email", granted=True)

    def write(self, path: Path) -> Path:
        path.write_text("".join(
            json.dumps({"event_id": e.event_id, "type": e.type, "customer_id": e.customer_id, "ts": format_ts(e.ts),
                        "properties": e.properties}) + "\n" for e in self.events))
        return path


def text_of(e: Explanation) -> str:
    buf = io.StringIO()
    print_explanation(e, buf)
    return buf.getvalue()


def rule(e: Explanation, rule_id: str):
    return next(r for r in e.rules if r.rule_id == rule_id)


def test_cart_abandoned_is_sent_and_explained(rules):
    s = Events()
    s.opt_in()
    s.add("add_to_cart", T0, sku="A-1")
    s.add("product_view", T0 + HOUR)
    e = explain_customer(rules, "c1", events=s.events)
    assert e.source == "backtest" and e.at == format_ts(T0 + HOUR) and e.at_basis == "last event"
    cart = rule(e, "cart-abandoned")
    assert cart.kind == "absence"
    assert [(t.status, t.fired_at, t.payload) for t in cart.triggers] == [("sent", format_ts(T0 + 30 * MIN), {"sku": "A-1"})]
    assert cart.summary == "sent"
    assert e.state.consent[0].channel == "email" and e.state.consent[0].granted is True
    assert e.state.last_contact == {"cart-abandoned": format_ts(T0 + 30 * MIN)}
    assert "cart-reminder (email)  sent" in text_of(e)


def test_cancelled_wait_is_a_note(rules):
    s = Events()
    s.opt_in()
    s.add("add_to_cart", T0, sku="A-1")
    s.add("purchase", T0 + 10 * MIN, amount=20)
    e = explain_customer(rules, "c1", events=s.events, rule_id="cart-abandoned")
    cart = e.rules[0]
    assert not cart.triggers and not cart.timers
    assert cart.summary.startswith("cancelled: purchase e3")
    assert len(e.rules) == 1


def test_vip_threshold_false_then_true_with_values(rules):
    s = Events()
    s.opt_in()
    s.add("purchase", T0, amount=4200)
    e = explain_customer(rules, "c1", events=s.events, rule_id="vip-5000")
    vip = e.rules[0]
    assert vip.condition.holds is False
    part = vip.condition.parts[0]
    assert part.text == "lifetime_spend >= 5000" and part.holds is False
    assert [(o.text, o.value) for o in part.operands] == [("lifetime_spend", 4200)]
    assert "lifetime_spend = 4200 → false" in text_of(e)
    assert vip.summary.startswith("condition false at its last evaluation (purchase e2")

    s.add("purchase", T0 + DAY, amount=900)
    e = explain_customer(rules, "c1", events=s.events, rule_id="vip-5000")
    vip = e.rules[0]
    assert vip.condition.holds is True
    assert "lifetime_spend = 5100 → true" in text_of(e)
    assert [(t.status, t.fired_at) for t in vip.triggers] == [("sent", format_ts(T0 + DAY))]
    assert e.state.armed == ["vip-5000"]
    # the state view reads aggregates as the rules do
    aggs = {a.name: a.value for a in e.state.aggregates}
    assert aggs == {"lifetime_spend": 5100, "purchases": 2}


def test_and_parts_are_evaluated_separately_with_the_last_event(rules):
    s = Events()
    s.opt_in()
    s.add("purchase", T0, amount=10, category="bags")
    s.add("purchase", T0 + HOUR, amount=10, category="bags")
    e = explain_customer(rules, "c1", events=s.events, rule_id="shoe-fan")
    c = e.rules[0].condition
    assert c.joiner == "and" and c.event_id == "e3" and c.holds is False
    assert [(p.text, p.holds) for p in c.parts] == [("purchases >= 2", True), ('event.category == "shoes"', False)]
    assert [(o.text, o.value) for o in c.parts[1].operands] == [("event.category", "bags")]
    text = text_of(e)
    assert "purchases = 2 → true" in text and 'event.category = "bags" → false' in text


def test_condition_robust_on_unusual_expressions(rules):
    env = expr_env(rules)
    st = CustomerState(aggs={"purchases": 3})
    chained = check_condition("1 < purchases < 5", env, st, None, T0)
    assert chained.holds is True and [(o.text, o.value) for o in chained.parts[0].operands] == [("purchases", 3)]
    negated = check_condition("not (purchases > 2 or purchases < 0)", env, st, None, T0)
    assert negated.holds is False and len(negated.parts) == 1
    missing = check_condition("event.amount > 10 or coalesce(lifetime_spend, 0) >= 0", env, st, None, T0)
    # the engine evaluates the expression as one: `None > 10` voids it all, whatever the other part says
    assert missing.joiner == "or" and missing.holds is False
    assert [x.holds for x in missing.parts] == [False, True]
    assert missing.parts[0].operands[0].value is None
    assert "the whole `if:` as false" in missing.note


def test_suppressed_triggers_show_their_reason(rules):
    s = Events()
    s.opt_in()
    s.add("add_to_cart", T0, sku="A")
    s.add("add_to_cart", T0 + 2 * HOUR, sku="B")
    s.add("product_view", T0 + 5 * HOUR)
    s.add("signup", T0 + 6 * HOUR, cid="c2")          # c2 never opted in: consent is required
    e = explain_customer(rules, "c1", events=s.events, rule_id="cart-abandoned")
    cart = e.rules[0]
    assert [(t.status, t.reason) for t in cart.triggers] == [("sent", None), ("suppressed", "cooldown")]
    assert "within 1d of the rule's last contact" in cart.triggers[1].why
    assert format_ts(T0 + 30 * MIN) in cart.triggers[1].why
    assert cart.summary == "sent, suppressed (cooldown)"
    assert "suppressed (cooldown)" in text_of(e)

    e2 = explain_customer(rules, "c2", events=s.events, rule_id="welcome")
    assert [(t.status, t.reason) for t in e2.rules[0].triggers] == [("suppressed", "no_consent")]
    assert "no opt-in for email" in e2.rules[0].triggers[0].why
    assert e2.state.consent[0].effect.startswith("suppressed (no_consent")


def test_pending_timer_is_shown_as_waiting(rules):
    s = Events()
    s.opt_in()
    s.add("add_to_cart", T0, sku="A")
    e = explain_customer(rules, "c1", events=s.events)
    due = format_ts(T0 + 30 * MIN)
    assert [(t.rule_id, t.due, t.cause) for t in e.timers] == [("cart-abandoned", due, "e2")]
    cart = rule(e, "cart-abandoned")
    assert cart.summary == f"waiting: due {due}" and not cart.triggers
    text = text_of(e)
    assert f"waiting: due {due}" in text and "pending timers" in text
    assert "a `triggers backtest` ending here leaves these pending, not fired" in text
    # explained later (--at), the deadline has fired
    later = explain_customer(rules, "c1", events=s.events, at=format_ts(T0 + HOUR))
    assert not later.timers and rule(later, "cart-abandoned").triggers[0].status == "sent"


def test_never_started(rules):
    s = Events()
    s.opt_in()
    s.add("purchase", T0, amount=10)
    e = explain_customer(rules, "c1", events=s.events, rule_id="welcome")
    assert e.rules[0].summary == "never started: no `signup` event"


def test_unknown_customer_and_rule(rules, tmp_path):
    s = Events()
    s.opt_in()
    path = s.write(tmp_path / "events.jsonl")
    with pytest.raises(UnknownCustomer, match="customer 'c9' has no events in .*events.jsonl"):
        explain_customer(rules, "c9", events=path)
    with pytest.raises(ExplainError, match="no rule 'vip-500' .*did you mean 'vip-5000'"):
        explain_customer(rules, "c1", events=path, rule_id="vip-500")


def test_only_this_customers_events_are_replayed_and_agree_with_a_backtest(rules, tmp_path):
    s = Events()
    for cid in ("c1", "c2", "c3"):
        s.opt_in(cid)
    for i in range(12):
        cid = ("c1", "c2", "c3")[i % 3]
        s.add("add_to_cart", T0 + i * 20 * MIN, cid, sku=f"S{i}")
        if i % 4 == 0:
            s.add("purchase", T0 + i * 20 * MIN + 5 * MIN, cid, amount=2000)
    s.add("product_view", T0 + 3 * DAY, "c2")
    out: list = []
    replay = Replay(rules, out.extend)
    replay.feed(s.events)      # no finish(): the explanation stops at the customer's last event too
    path = s.write(tmp_path / "events.jsonl")
    e = explain_customer(rules, "c2", events=path)
    mine = sorted((t.trigger_id, t.status, t.reason, t.fired_at) for r in e.rules for t in r.triggers)
    theirs = sorted((t.trigger_id, t.status, t.reason, t.fired_at) for t in out if t.customer_id == "c2")
    assert mine == theirs and mine
    assert e.events == sum(1 for ev in s.events if ev.customer_id == "c2")


# -- the command line, through add_parser ---------------------------------------------------------

def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="triggers")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def setup(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "rules.yaml").write_text(RULES)
    s = Events()
    s.opt_in()
    s.add("purchase", T0, amount=4200)
    s.add("add_to_cart", T0 + HOUR, sku="A")
    return d, s.write(tmp_path / "events.jsonl")


def test_cli_text_and_json(setup, capsys):
    rules_path, events_path = setup
    assert cli(["explain", "--rules", str(rules_path), "--events", str(events_path), "--customer", "c1"]) == 0
    text = capsys.readouterr().out
    assert "customer c1: backtest of" in text
    assert "lifetime_spend = 4200 → false" in text
    assert f"waiting: due {format_ts(T0 + HOUR + 30 * MIN)}" in text
    assert cli(["explain", "--rules", str(rules_path), "--events", str(events_path), "--customer", "c1",
                "--rule", "vip-5000", "--json"]) == 0
    e = msgspec.json.decode(capsys.readouterr().out, type=Explanation)
    assert [r.rule_id for r in e.rules] == ["vip-5000"]
    assert e.rules[0].condition.parts[0].operands[0].value == 4200


def test_cli_errors(setup, tmp_path, capsys):
    rules_path, events_path = setup
    base = ["explain", "--rules", str(rules_path), "--events", str(events_path)]
    assert cli([*base, "--customer", "nobody"]) == 1
    assert "customer 'nobody' has no events" in capsys.readouterr().err
    assert cli([*base, "--customer", "c1", "--rule", "vip"]) == 2
    assert "no rule 'vip'" in capsys.readouterr().err
    assert cli([*base, "--customer", "c1", "--at", "tomorrow"]) == 2
    assert "--at" in capsys.readouterr().err
    assert cli(["explain", "--rules", str(rules_path), "--events", str(tmp_path / "nope.jsonl"), "--customer", "c1"]) == 2
    assert "no such events file" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text(RULES.replace("lifetime_spend >= 5000", "lifetime_spnd >= 5000"))
    assert cli(["explain", "--rules", str(broken), "--events", str(events_path), "--customer", "c1"]) == 1
    assert "lifetime_spnd" in capsys.readouterr().err
    assert cli(["explain", "--rules", str(rules_path), "--redis-url", "redis://127.0.0.1:1/0", "--customer", "c1",
                "--until", "2026-01-01T00:00:00Z"]) == 2
    assert "--until" in capsys.readouterr().err


def test_cli_one_source_of_state(setup, capsys):
    """A backtest (--events) or the live state (--config and/or --redis-url): exactly one, and the
    live-only flags refused with --events (they would be ignored in silence)."""
    rules_path, events_path = setup
    assert cli(["explain", "--rules", str(rules_path), "--customer", "c1"]) == 2
    assert "give --events FILE (a backtest) or --config / --redis-url (live)" in capsys.readouterr().err
    assert cli(["explain", "--rules", str(rules_path), "--events", str(events_path), "--redis-url",
                "redis://127.0.0.1:1/0", "--customer", "c1"]) == 2
    assert "one of them" in capsys.readouterr().err
    assert cli(["explain", "--rules", str(rules_path), "--events", str(events_path), "--prefix", "x",
                "--customer", "c1"]) == 2
    assert "--prefix and --cluster read the live state" in capsys.readouterr().err
    assert cli(["explain", "--events", str(events_path), "--customer", "c1"]) == 2
    assert "--rules is required with --events" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli(["explain", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--redis-url" in text and "--customer c-31" in text
    assert "triggers explain --config triggers.toml --customer c-31" in text


# -- told by the policy, not rebuilt from the trigger list ----------------------------------------

POLICY_RULES = """\
rules:
  - id: big
    type: transactional
    on: purchase
    if: event.amount >= 100
    priority: 10
    then: {action: big-thanks, channel: email}
  - id: thanks
    type: transactional
    on: purchase
    then: {action: thanks, channel: email}
policy:
  frequency_caps:
    - {channel: "*", max: 5, per: 1d}
    - {channel: email, max: 2, per: 7d}
"""


def test_policy_detail_is_the_one_that_decided(tmp_path):
    """More exact than rebuilt: the cap named is the one reached (not every cap of the channel),
    the priority winner is the candidate that won the moment, an opt-out says when."""
    d = tmp_path / "rules"
    d.mkdir()
    (d / "rules.yaml").write_text(POLICY_RULES)
    compiled = load_and_compile(d)
    s = Events()
    s.add("purchase", T0, amount=150)              # big sent, thanks loses on priority
    s.add("purchase", T0 + HOUR, amount=5)         # thanks sent (2 emails in 7d)
    s.add("purchase", T0 + 2 * HOUR, amount=5)     # thanks capped by the 7d email cap, not the 1d one
    s.add("consent", T0 + 3 * HOUR, channel="email", granted=False)
    s.add("purchase", T0 + 4 * HOUR, amount=5)     # opted out
    e = explain_customer(compiled, "c1", events=s.events, rule_id="thanks")
    whys = [t.why for t in e.rules[0].triggers]
    assert whys[0] == "suppressed (priority): another trigger of higher priority: big won the same moment"
    assert whys[1] == "sent"
    assert whys[2] == "suppressed (frequency_cap): at most 2 email per 1w"
    assert whys[3] == f"suppressed (no_consent): opted out of email at {format_ts(T0 + 3 * HOUR)}"


def test_a_deferral_sent_in_the_same_clock_step_is_still_told(tmp_path):
    """More exact than diffing timers: a delay due inside quiet hours is deferred and sent within
    one clock step (the next event comes after the quiet hours); the deferred timer never shows
    in the state between two calls, but the policy told the trace of the deferral."""
    d = tmp_path / "rules"
    d.mkdir()
    (d / "rules.yaml").write_text("""\
rules:
  - id: tips
    type: transactional
    on: purchase
    delay: 1h
    then: {action: tips, channel: email}
policy:
  quiet_hours: {from: "21:00", to: "08:00", mode: defer}
""")
    compiled = load_and_compile(d)
    night = parse_ts("2026-03-02T23:30:00Z")
    s = Events()
    s.add("purchase", night)
    s.add("page_view", night + 12 * HOUR)
    e = explain_customer(compiled, "c1", events=s.events)
    tips = rule(e, "tips")
    assert [(t.status, t.fired_at) for t in tips.triggers] == [("sent", "2026-03-03T08:00:00.000Z")]
    assert tips.notes == ["2026-03-03T00:30:00.000Z: inside quiet hours, deferred to 2026-03-03T08:00:00.000Z"]
