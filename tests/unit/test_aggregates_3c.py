"""SPEC §3c: `where:` on any aggregate, `inactive: D, of: TYPES`, `count/sum … by: PROP`, each run
through the backtest (the core the live worker shares)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.actions.trigger import Trigger
from engine.core.times import format_ts, parse_ts
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.compiler import CompiledRules, load_and_compile
from engine.rules.errors import RulesInvalid

T0 = parse_ts("2026-03-02T10:00:00Z")
MIN = 60_000
DAY = 24 * 60 * MIN


def compile_yaml(tmp_path: Path, text: str) -> CompiledRules:
    (tmp_path / "rules.yaml").write_text(text)
    return load_and_compile(tmp_path)


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RulesInvalid) as info:
        compile_yaml(tmp_path, text)
    return [f"{e.line}: {e.message}" for e in info.value.errors]


def replay(rules: CompiledRules, events: list[tuple[str, int, dict]], cid: str = "c1",
           drain: bool = True) -> list[Trigger]:
    out: list[Trigger] = []
    run = Replay(rules, out.extend, drain=drain)
    run.feed([Event(f"e{i}", type_, cid, ts, props) for i, (type_, ts, props) in enumerate(events)])
    run.finish()
    return out


def final_state(rules: CompiledRules, events: list[tuple[str, int, dict]], cid: str = "c1"):
    run = Replay(rules, lambda out: None)
    run.feed([Event(f"e{i}", type_, cid, ts, props) for i, (type_, ts, props) in enumerate(events)])
    run.finish()
    return run.store.states[cid]


# -- where -------------------------------------------------------------------------------

WELCOME = """
aggregates:
  welcome_clicks: {count: email_clicked, where: event.campaign == "welcome-1"}
  all_clicks: {count: email_clicked}
rules:
  - id: second-welcome-click
    type: behavioral
    on: email_clicked
    if: welcome_clicks == 2
    then: {action: thanks, channel: email}
"""


def test_where_counts_only_the_clicks_of_one_campaign(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    clicks = [("email_clicked", T0 + i * MIN, {"campaign": c})
              for i, c in enumerate(["welcome-1", "promo", "promo", "welcome-1", "welcome-1"])]
    st = final_state(rules, clicks)
    assert st.aggs["welcome_clicks"] == 3 and st.aggs["all_clicks"] == 5
    fired = replay(rules, clicks)
    assert [t.cause_event_id for t in fired] == ["e3"]   # the second welcome-1 click, not the second click


def test_where_that_fails_or_reads_a_missing_value_counts_as_false(tmp_path):
    rules = compile_yaml(tmp_path, """
aggregates:
  big: {count: purchase, where: event.amount > 100}
  big_sum: {sum: amount, on: purchase, where: event.amount * 1 > 100}
  last_big: {last: amount, on: purchase, where: event.amount > 100}
  big_by: {decayed_count: purchase, by: category, half_life: 7d, where: event.amount > 100}
rules:
  - {id: r, type: behavioral, on: purchase, then: {action: a, channel: email}}
""")
    st = final_state(rules, [("purchase", T0, {"amount": 150, "category": "shoes"}),
                             ("purchase", T0 + 1, {"category": "bags"}),                  # missing: None > 100
                             ("purchase", T0 + 2, {"amount": "lots", "category": "hats"}),   # str * 1 raises
                             ("purchase", T0 + 3, {"amount": 50, "category": "socks"})])
    assert st.aggs["big"] == 1 and st.aggs["big_sum"] == 150 and st.aggs["last_big"] == 150
    assert set(st.aggs["big_by"][1]) == {"shoes"}


def test_where_reads_the_profile(tmp_path):
    rules = compile_yaml(tmp_path, """
aggregates:
  vip_spend: {sum: amount, on: purchase, where: profile.tier == "gold"}
rules:
  - {id: r, type: behavioral, on: purchase, then: {action: a, channel: email}}
""")
    st = final_state(rules, [("purchase", T0, {"amount": 10}), ("identify", T0 + 1, {"tier": "gold"}),
                             ("purchase", T0 + 2, {"amount": 30})])
    assert st.aggs["vip_spend"] == 30


def test_where_errors_point_at_the_line(tmp_path):
    errors = errors_of(tmp_path, """
aggregates:
  clicks: {count: email_clicked}
  a: {count: email_clicked, where: event.campaign = "x"}
  b: {count: email_clicked, where: clicks > 1}
  c: {count: email_clicked, where: evnt.campaign == "x"}
rules:
  - {id: r, type: behavioral, on: email_clicked, then: {action: a, channel: email}}
""")
    assert errors[0].startswith("4: aggregate 'a': where (column 16): write '=='")
    assert errors[1].startswith("5: aggregate 'b': where reads the event and the profile, not aggregates (clicks)")
    assert errors[2].startswith("6: aggregate 'c': where (column 1): unknown aggregate 'evnt'")
    shape = errors_of(tmp_path, """
aggregates:
  d: {last: ts, where: [1]}
rules:
  - {id: r, type: behavioral, on: email_clicked, then: {action: a, channel: email}}
""")
    assert len(shape) == 1 and shape[0].startswith("3: ") and "'where' must be an expression" in shape[0]


# -- inactive: D, of: TYPES ----------------------------------------------------------------

LAPSED = """
rules:
  - id: no-purchase-60d
    type: behavioral
    inactive: 60d
    of: purchase
    then: {action: winback, channel: email}
  - id: silent-60d
    type: behavioral
    inactive: 60d
    then: {action: winback, channel: email}
"""


def browsing_after_a_purchase(days: int) -> list[tuple[str, int, dict]]:
    """A purchase, then a product view every 5 days for `days` days."""
    return [("purchase", T0, {"amount": 20})] + [("product_view", T0 + d * DAY, {"sku": "A-77"})
                                                 for d in range(5, days + 1, 5)]


def test_inactive_of_purchase_fires_while_the_customer_still_browses(tmp_path):
    rules = compile_yaml(tmp_path, LAPSED)
    fired = replay(rules, browsing_after_a_purchase(90), drain=False)
    assert [(t.rule_id, t.fired_at) for t in fired] == [("no-purchase-60d", format_ts(T0 + 60 * DAY))]


def test_inactive_of_fires_once_per_stretch_and_a_new_purchase_starts_another(tmp_path):
    rules = compile_yaml(tmp_path, LAPSED)
    events = browsing_after_a_purchase(90) + [("purchase", T0 + 100 * DAY, {"amount": 5})]
    fired = [t for t in replay(rules, events) if t.rule_id == "no-purchase-60d"]   # drained: the second stretch
    assert [t.fired_at for t in fired] == [format_ts(T0 + 60 * DAY), format_ts(T0 + 160 * DAY)]
    assert len({t.trigger_id for t in fired}) == 2


def test_inactive_of_needs_an_event_of_its_types_to_start(tmp_path):
    rules = compile_yaml(tmp_path, LAPSED)
    views = [("product_view", T0 + d * DAY, {"sku": "A-77"}) for d in range(0, 90, 5)]
    assert [t.rule_id for t in replay(rules, views)] == ["silent-60d"]   # drained: 60 days after the last view


def test_inactive_of_validation(tmp_path):
    then = "then: {action: a, channel: email}"
    errors = errors_of(tmp_path, f"""
rules:
  - {{id: a, type: behavioral, of: purchase, on: purchase, {then}}}
  - {{id: b, type: behavioral, inactive: 60d, off: purchase, {then}}}
  - {{id: c, type: behavioral, inactive: 60d, of: [], {then}}}
  - {{id: d, type: behavioral, inactive: 60d, on: purchase, {then}}}
""")
    assert any(e.startswith("3: ") and "'of'" in e and "only with 'inactive'" in e for e in errors)
    assert any(e.startswith("4: ") and "'off'" in e and "did you mean 'of'" in e for e in errors)
    assert any(e.startswith("5: ") and "'of' needs at least one event type" in e for e in errors)
    assert any(e.startswith("6: ") and "write 'of: [purchase]'" in e for e in errors)
    rules = compile_yaml(tmp_path, f"""
rules:
  - {{id: a, type: behavioral, inactive: 60d, of: [purchase, subscription_renewed], {then}}}
""")
    assert rules.inactive[0].of == ("purchase", "subscription_renewed")
