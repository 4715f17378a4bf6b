"""Lift: the interval maths, and a backtest that recovers a planted effect of contact."""

from __future__ import annotations

import random
import textwrap

import orjson
import pytest

from bench.workload import generate
from engine.core.times import parse_ts
from engine.events.decode import EventDecoder
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.policy.attribution import RuleOutcome
from engine.policy.lift import lift, wilson
from engine.rules.compiler import load_and_compile


def test_wilson_interval_known_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_newcombe_difference_interval_known_values():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80, method 10
    o = RuleOutcome(sent=70, converted=56, held_out=80, held_out_converted=48)
    result = lift("r", o)
    assert result.absolute == pytest.approx(0.2)
    assert (round(result.absolute_ci[0], 4), round(result.absolute_ci[1], 4)) == (0.0524, 0.3339)
    assert result.relative == pytest.approx(0.2 / 0.6)


def test_no_control_group_gives_no_lift():
    result = lift("r", RuleOutcome(sent=10, converted=3))
    assert result.absolute is None and result.contacted_rate == 0.3


RULES = """
rules:
  - id: cart-abandoned
    type: transactional
    on: add_to_cart
    unless: {event: purchase, within: 30m}
    attribution_window: 2d
    then: {action: cart-reminder, channel: email}
policy:
  control_group: 30%
  control_group_salt: lift-test
"""
CONTACTED_RATE, CONTROL_RATE = 0.40, 0.15      # planted conversion within the window


def test_backtest_report_recovers_a_planted_lift(tmp_path):
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(RULES))
    rules = load_and_compile(tmp_path)
    decoder = EventDecoder()
    base = [decoder.decode(orjson.dumps(e), "gen") for e in
            generate(events=30_000, customers=3_000, days=30, seed=11, start="2026-03-01")]
    assert all(isinstance(e, Event) for e in base)

    first: list = []
    r = Replay(rules, first.extend)
    r.feed(base)
    r.finish()
    natural = r.evaluator.outcomes["cart-abandoned"]
    natural_rate = (natural.converted + natural.held_out_converted) / (natural.sent + natural.held_out)
    # Plant conversions: contacted customers buy with probability 40% within a day of the
    # reminder, control-group customers with 15%. Nothing else in the data knows the groups.
    rng = random.Random(5)
    planted = []
    for t in first:
        rate = CONTACTED_RATE if t.status == "sent" else CONTROL_RATE if t.status == "held_out" else 0.0
        if rng.random() < rate:
            at = parse_ts(t.fired_at) + rng.randint(60_000, 86_400_000)
            planted.append(Event(f"planted-{t.trigger_id}", "purchase", t.customer_id, at, {"amount": 30.0}))
    events = sorted(base + planted, key=lambda e: e.ts)

    r = Replay(rules, lambda out: None)
    r.feed(events)
    r.finish()
    o = r.evaluator.outcomes["cart-abandoned"]
    result = lift("cart-abandoned", o)
    assert o.sent > 500 and o.held_out > 150
    # A planted purchase only adds a conversion where the customer had not converted anyway.
    planted_lift = (1 - natural_rate) * (CONTACTED_RATE - CONTROL_RATE)
    low, high = result.absolute_ci
    assert low <= planted_lift <= high, (result.absolute, result.absolute_ci)
    assert low > 0
