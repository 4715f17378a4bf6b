"""Money in payloads (issue 16): a payload that shows a sum of amounts shows the decimal sum
(1108.67, not 1108.6699999999998), checked against the exact sums of the real UCI Online Retail
orders; the stored aggregate keeps its float; values passed through keep their digits."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from engine.actions.numbers import without_float_noise
from engine.core.times import parse_ts
from engine.events.model import Event
from engine.offline.backtest import backtest_file
from engine.offline.explain import explain_customer
from engine.rules.compiler import load_and_compile
from engine.rules.expr import Env, compile_template
from engine.state.customer import CustomerState

SPEND_RULES = """aggregates:
  lifetime_spend: {sum: amount, on: purchase}
  spend_by_country: {sum: amount, on: purchase, by: country}
rules:
  - id: spend-1000
    type: threshold
    on: purchase
    if: lifetime_spend >= 1000
    then:
      action: thanks
      channel: email
      payload: {spend: "{lifetime_spend}", line: "you spent {lifetime_spend} GBP", by_country: "{spend_by_country}",
                amount: "{event.amount}", twice: "{event.amount * 2}"}
"""


def test_spend_in_payloads_is_the_exact_decimal_sum_of_the_real_orders(tmp_path: Path, shared_data: Path) -> None:
    orders = shared_data / "online-retail-orders.jsonl"
    (tmp_path / "rules.yaml").write_text(SPEND_RULES)
    triggers: list = []
    backtest_file(load_and_compile(tmp_path), orders, triggers.extend, lambda _: None, progress=False)

    exact: dict[str, Decimal] = defaultdict(Decimal)   # the decimal sum up to each purchase, in file order
    noisy: dict[str, float] = defaultdict(float)       # what binary floats make of it
    at_event: dict[str, tuple[Decimal, float, Decimal]] = {}
    for line in orders.read_text().splitlines():
        ev = json.loads(line, parse_float=Decimal)
        if ev["type"] == "purchase":
            amount = Decimal(ev["properties"]["amount"])
            exact[ev["customer_id"]] += amount
            noisy[ev["customer_id"]] += float(amount)
            at_event[ev["event_id"]] = (exact[ev["customer_id"]], noisy[ev["customer_id"]], amount)

    assert len(triggers) > 1000
    for t in triggers:
        total, as_float, amount = at_event[t.cause_event_id]
        spend = t.payload["spend"]
        assert Decimal(repr(spend)) == total, (t.customer_id, spend, total)
        assert t.payload["line"] == f"you spent {spend!r} GBP"
        assert Decimal(repr(sum(t.payload["by_country"].values()))).quantize(Decimal("0.01")) == total
        assert all(len(repr(v).partition(".")[2]) <= 2 for v in t.payload["by_country"].values())
        assert Decimal(repr(t.payload["amount"])) == amount and Decimal(repr(t.payload["twice"])) == 2 * amount
    # without the rounding at rendering time these payloads would carry the float's noise
    assert sum(repr(at_event[t.cause_event_id][1]) != repr(t.payload["spend"]) for t in triggers) > 100


def test_explain_shows_a_sum_to_the_cent_and_the_state_keeps_the_float(tmp_path: Path, shared_data: Path) -> None:
    """c12748, the retailer's busiest customer: 200+ invoices, a lifetime spend of 30,000+."""
    orders = shared_data / "online-retail-orders.jsonl"
    (tmp_path / "rules.yaml").write_text(SPEND_RULES)
    rules = load_and_compile(tmp_path)
    lines = [json.loads(line, parse_float=Decimal) for line in orders.read_text().splitlines()]
    mine = [ev for ev in lines if ev["customer_id"] == "c12748" and ev["type"] == "purchase"]
    total = sum(Decimal(ev["properties"]["amount"]) for ev in mine)
    events = [Event(ev["event_id"], ev["type"], ev["customer_id"], parse_ts(ev["ts"]),
                    {"amount": float(ev["properties"]["amount"]), "country": ev["properties"]["country"]}) for ev in mine]
    e = explain_customer(rules, "c12748", events=events)
    [spend] = [a for a in e.state.aggregates if a.name == "lifetime_spend"]
    assert len(mine) > 200 and total > 30000
    assert Decimal(spend.display) == total                      # every cent, not 6 significant digits
    assert spend.value == sum(float(ev["properties"]["amount"]) for ev in mine)   # the float the rules compare


ENV = Env(aggregates={"lifetime_spend": lambda st, now: st.aggs.get("lifetime_spend")})


def render(template: str, props: dict | None = None, spend: float | None = None):
    state = CustomerState(aggs={"lifetime_spend": spend} if spend is not None else {}, profile={"lat": 52.52000812345678})
    return compile_template(template, ENV).fn(state, Event("e1", "purchase", "c1", 0, props or {}), 0)


def test_arithmetic_on_amounts_is_rendered_without_noise() -> None:
    # UCI invoice 536365, its first line: 6 WHITE HANGING HEART T-LIGHT HOLDERs at 2.55
    assert 2.55 * 6 == 15.299999999999999
    assert render("{event.price * event.quantity}", {"price": 2.55, "quantity": 6}) == 15.3
    assert render("{event.price * event.quantity} GBP", {"price": 2.55, "quantity": 6}) == "15.3 GBP"
    assert render("{lifetime_spend}", spend=1108.6699999999998) == 1108.67
    assert render("{lifetime_spend + 0.1}", spend=0.2) == 0.3
    assert render("{lifetime_spend}", spend=7000) == 7000 and type(render("{lifetime_spend}", spend=7000)) is int


def test_values_passed_through_keep_their_digits() -> None:
    assert render("{event.ratio}", {"ratio": 0.30000000000000004}) == 0.30000000000000004
    assert render("{profile.lat}") == 52.52000812345678
    assert render("at {profile.lat}") == "at 52.52000812345678"


def test_without_float_noise_rounds_to_12_significant_digits_and_leaves_the_rest() -> None:
    assert without_float_noise(9_999_999_999.99 + 1e-6) == 9_999_999_999.99
    assert without_float_noise({"GB": 0.1 + 0.2, "n": [1.1 + 2.2, "x", None, True]}) == {"GB": 0.3, "n": [3.3, "x", None, True]}
    assert without_float_noise(1 / 3) == 0.333333333333
    assert without_float_noise(float("inf")) == float("inf") and without_float_noise(2**60) == 2**60
