"""SPEC §3c: `where:` on any aggregate, `inactive: D, of: TYPES`, `count/sum … by: PROP`, each run
through the backtest (the core the live worker shares)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.actions.trigger import Trigger
from engine.core.times import format_ts, now_ms, parse_ts
from engine.events.decode import EventDecoder
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.aggregates import BY_KEYS, DECAYED_KEYS, by_key, compile_aggregate
from engine.rules.compiler import CompiledRules, load_and_compile
from engine.rules.errors import RulesInvalid
from engine.rules.model import Aggregate, Source
from engine.state.customer import encode_state
from engine.testing import run_in_memory

T0 = parse_ts("2026-03-02T10:00:00Z")
MIN = 60_000
DAY = 24 * 60 * MIN
HOUR = 60 * MIN


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


def test_a_late_event_of_another_type_does_not_fire_a_fired_stretch_again(tmp_path):
    """`of: [purchase, refund]`: a purchase, the rule fires 10 days later while the customer
    browses, then a refund dated before the purchase arrives (late). The stretch still starts
    at the purchase and has fired: no second trigger with the same id (it fired twice)."""
    rules = compile_yaml(tmp_path, """
rules:
  - id: no-buy-10d
    type: behavioral
    inactive: 10d
    of: [purchase, refund]
    then: {action: winback, channel: email}
""")
    events = [("purchase", T0, {"amount": 20}), ("product_view", T0 + 15 * DAY, {}),
              ("refund", T0 - 5 * DAY, {}), ("product_view", T0 + 16 * DAY, {})]
    fired = replay(rules, events, drain=False)
    assert [t.fired_at for t in fired] == [format_ts(T0 + 10 * DAY)]


def test_browsing_after_an_inactive_of_rule_fired_does_not_reindex_the_customer(tmp_path):
    """A fired `of` rule stays fired while the customer browses on: those events move no
    deadline earlier, so the session does not re-index the customer on each of them."""
    rules = compile_yaml(tmp_path, LAPSED.split("  - id: silent-60d")[0])
    run = Replay(rules, lambda out: None)
    events = [Event(f"e{i}", type_, "c1", ts, props) for i, (type_, ts, props) in enumerate(browsing_after_a_purchase(90))]
    run.feed(events[:14])             # the purchase and 65 days of views: fired at day 60
    evaluator = run.session.evaluator
    state = run.store.states["c1"]
    assert state.idle_fired == ["no-purchase-60d"]
    for ev in events[14:]:
        evaluator.earlier_deadline = False
        evaluator.on_event(state, ev, [])
        assert not evaluator.earlier_deadline, ev


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


# -- count / sum … by: PROP ----------------------------------------------------------------

BY_SKU = """
aggregates:
  views_by_sku: {count: product_view, by: sku}
  spend_by_brand: {sum: price, on: purchase, by: brand}
rules:
  - id: third-view-of-a-product
    type: behavioral
    on: product_view
    if: views_by_sku[event.sku] == 3
    then: {action: still-thinking, channel: email, payload: {sku: "{event.sku}", top: "{top(views_by_sku)}"}}
"""


def views(skus: list[str]) -> list[tuple[str, int, dict]]:
    return [("product_view", T0 + i * MIN, {"sku": sku}) for i, sku in enumerate(skus)]


def test_the_same_product_viewed_three_times_fires(tmp_path):
    rules = compile_yaml(tmp_path, BY_SKU)
    fired = replay(rules, views(["A-77", "A-77", "A-77"]))
    assert [(t.cause_event_id, t.payload) for t in fired] == [("e2", {"sku": "A-77", "top": "A-77"})]


def test_four_products_viewed_once_each_do_not(tmp_path):
    rules = compile_yaml(tmp_path, BY_SKU)
    skus = ["A-77", "B-12", "C-3", "D-40"]
    assert replay(rules, views(skus)) == []
    assert final_state(rules, views(skus)).aggs["views_by_sku"] == dict.fromkeys(skus, 1)


def test_by_keeps_the_most_recent_keys(tmp_path):
    rules = compile_yaml(tmp_path, BY_SKU)
    skus = ["OLD", *[f"S-{i}" for i in range(BY_KEYS - 1)], "OLD", "NEW"]   # OLD seen again: recent
    counts = final_state(rules, views(skus)).aggs["views_by_sku"]
    assert len(counts) == BY_KEYS and counts["OLD"] == 2 and counts["NEW"] == 1 and "S-0" not in counts
    assert list(counts)[-2:] == ["OLD", "NEW"]


def test_sum_by_and_reads_by_key(tmp_path):
    rules = compile_yaml(tmp_path, BY_SKU + """
  - id: big-on-acme
    type: behavioral
    on: purchase
    if: spend_by_brand["acme"] > 100 and spend_by_brand[event.brand] > 100 and spend_by_brand["none"] == 0
    then: {action: acme-fan, channel: email}
""")
    buys = [("purchase", T0 + i, {"brand": b, "price": p})
            for i, (b, p) in enumerate([("acme", 60), ("zeta", 500), ("acme", "50.5"), ("acme", "bad"), (7, 1)])]
    st = final_state(rules, buys)
    assert st.aggs["spend_by_brand"] == {"zeta": 500, "acme": 110.5, "7": 1}
    # e2 and e3 are acme's (e3's bad price adds nothing); e4's brand 7 reads as the key "7"
    assert [t.cause_event_id for t in replay(rules, buys)] == ["e2", "e3"]


def test_where_on_a_by_aggregate(tmp_path):
    rules = compile_yaml(tmp_path, """
aggregates:
  sale_views: {count: product_view, by: sku, where: event.price < 10}
rules:
  - {id: r, type: behavioral, on: product_view, if: "sale_views[event.sku] >= 1", then: {action: a, channel: email}}
""")
    seen = [("product_view", T0 + i, {"sku": s, "price": p}) for i, (s, p) in enumerate([("A", 5), ("B", 50), ("A", 8)])]
    assert final_state(rules, seen).aggs["sale_views"] == {"A": 2}
    assert [t.cause_event_id for t in replay(rules, seen)] == ["e0", "e2"]


def test_by_validation(tmp_path):
    errors = errors_of(tmp_path, """
aggregates:
  a: {count: product_view, by: sku, window: 7d}
  b: {last: sku, by: sku}
rules:
  - {id: r, type: behavioral, on: product_view, then: {action: a, channel: email}}
""")
    assert errors[0].startswith("3: ") and "with 'by' has no 'window'" in errors[0]
    assert errors[1].startswith("4: ") and "'by' does not apply to a last aggregate" in errors[1]


# -- the live worker agrees ----------------------------------------------------------------


def test_live_on_the_test_doubles_equals_backtest(tmp_path):
    """The three cases of the issue, for three customers, through the live dataflow (source,
    partition worker, commits, on the shipped test doubles) and through a backtest up to now:
    the same triggers and the same final states."""
    rules = compile_yaml(tmp_path, """
aggregates:
  views_by_sku: {count: product_view, by: sku}
  welcome_clicks: {count: email_clicked, where: event.campaign == "welcome-1"}
rules:
  - {id: third-view-of-a-product, type: behavioral, on: product_view, if: "views_by_sku[event.sku] == 3",
     then: {action: still-thinking, channel: email, payload: {sku: "{event.sku}"}}}
  - {id: second-welcome-click, type: behavioral, on: email_clicked, if: welcome_clicks == 2,
     then: {action: thanks, channel: email}}
  - {id: no-purchase-60d, type: behavioral, inactive: 60d, of: purchase, then: {action: winback, channel: email}}
""")
    start = now_ms() - 200 * DAY   # every deadline falls before the wall clock the live run fires by
    cases = {
        "viewer": [("product_view", start + i * MIN, {"sku": s}) for i, s in enumerate(["A", "A", "B", "A", "C"])],
        "clicker": [("email_clicked", start + i * MIN, {"campaign": c})
                    for i, c in enumerate(["welcome-1", "promo", "welcome-1"])],
        "lapsed": [("purchase", start, {"price": 20})] + [("product_view", start + d * DAY, {"sku": f"S-{d}"})
                                                          for d in range(5, 95, 5)],   # still browsing
    }
    enc = msgspec.json.encode
    lines = [enc({"event_id": f"{cid}-{i}", "type": t, "customer_id": cid, "ts": ts, "properties": props})
             for cid, events in cases.items() for i, (t, ts, props) in enumerate(events)]

    triggers, dead, store = run_in_memory(rules, lines)

    expected: list[Trigger] = []
    run = Replay(rules, expected.extend, until=now_ms())
    events, _ = EventDecoder().decode_batch((raw, "test") for raw in lines)
    run.feed(events)
    run.finish()

    assert dead == []
    assert sorted((t.customer_id, t.rule_id) for t in expected) == [
        ("clicker", "second-welcome-click"), ("lapsed", "no-purchase-60d"), ("viewer", "third-view-of-a-product")]
    assert sorted(map(enc, triggers)) == sorted(map(enc, expected))
    assert {c: encode_state(s) for c, s in store.items()} == {c: encode_state(s) for c, s in run.store.states.items()}


def test_validate_events_checks_the_types_of_inactive_of(tmp_path):
    from collections import Counter

    from engine.rules.loader import load_rules
    from engine.rules.usage import missing_types

    (tmp_path / "rules.yaml").write_text(LAPSED.replace("of: purchase", "of: purchse"))
    warnings = missing_types(load_rules(tmp_path), Counter({"purchase": 3, "product_view": 9}))
    assert len(warnings) == 1 and "rule 'no-purchase-60d' inactive of 'purchse'" in warnings[0]
    assert "did you mean 'purchase'" in warnings[0]


# -- decayed counts and by-keys against a plain model ---------------------------------------

def decayed_model(views: list[tuple[int, object]], half_life: int) -> dict[str, float]:
    """What `interest` holds, written the obvious way: every key's score rebased to the first
    event's time, at most DECAYED_KEYS keys, the lowest score dropped (ties: the smallest key)."""
    ref, scores = None, {}
    for ts, category in views:
        key = by_key(category)
        if key is None:
            continue
        if ref is None:
            ref = ts
        scores[key] = scores.get(key, 0.0) + 2.0 ** ((ts - ref) / half_life)
        if len(scores) > DECAYED_KEYS:
            del scores[min(scores, key=lambda k: (scores[k], k))]
    return scores


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.one_of(st.sampled_from("abcdefghijkl"), st.integers(0, 3),
                                                         st.none(), st.just([1]))), min_size=9, max_size=60))
def test_a_decayed_count_keeps_what_the_plain_model_keeps(views):
    """Equal steps and equal keys make ties of scores: the smallest key goes first."""
    agg = Aggregate(name="interest", kind="decayed_count", on=("v",), by="category", half_life=HOUR,
                    source=Source("hand.yaml", 1))
    update, _ = compile_aggregate(agg)
    aggs: dict = {}
    timed = [(step * HOUR // 4, category) for step, category in sorted(views, key=lambda v: v[0])]
    for i, (ts, category) in enumerate(timed):
        update(aggs, Event(f"e{i}", "v", "c1", ts, {"category": category}))
    expected = decayed_model(timed, HOUR)
    assert set(aggs.get("interest", [0, {}])[1]) == set(expected)
    for key, score in expected.items():
        assert aggs["interest"][1][key] == pytest.approx(score)


def test_values_another_kind_of_the_same_name_left_are_read_as_before():
    """A reload that changes an aggregate's kind keeps a stored value of the same shape
    (`value_fits`; other shapes are dropped, tests/unit/test_aggregate_redefined.py): the compiled core types
    some values (setup.py), and a number where a `last: ts` is kept, or whole numbers where a
    decayed count keeps its scores, must work as they do in the pure core."""
    last, _ = compile_aggregate(Aggregate(name="seen", kind="last", field="ts", on=("*",),
                                          source=Source("hand.yaml", 1)))
    aggs: dict = {"seen": 2.5e12}   # a sum's float, from the rules before the reload
    last(aggs, Event("e1", "v", "c1", T0, {}))
    assert aggs["seen"] == 2.5e12   # later than T0: kept
    last(aggs, Event("e2", "v", "c1", 2_600_000_000_000, {}))
    assert aggs["seen"] == 2_600_000_000_000
    decayed, read = compile_aggregate(Aggregate(name="interest", kind="decayed_count", on=("v",), by="category",
                                                half_life=HOUR, source=Source("hand.yaml", 1)))
    aggs = {"interest": [T0, {"a": 1, "b": 2}]}   # whole-number scores
    decayed(aggs, Event("e3", "v", "c1", T0, {"category": "a"}))
    assert aggs["interest"][1] == {"a": 2.0, "b": 2}
