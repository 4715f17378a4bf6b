"""Lift with the customer as the unit, tested like code: synthetic backtests with and without a
planted effect go through the real replay, attribution and lift; the intervals must exclude 0
about 5% of the time without an effect and cover the planted effect otherwise.

Each synthetic customer has its own base conversion probability and its own spend level
(lognormal), and is triggered 1-10 times with windows that do not overlap; a converted
customer buys 1+ times (more, the more triggers it has) in random windows of its triggers.
So a customer's triggers share one outcome, as in shop data, and per-trigger intervals are
too narrow.
"""

from __future__ import annotations

import math
import random
import textwrap

import pytest

from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.policy.contact import in_control_group
from engine.policy.customers import CustomerOutcome, GroupTotals
from engine.policy.lift import Verdict, customer_lift, lift, program_lift
from engine.policy.stats import newcombe, ratio_interval, sample_size, t_quantile, welch
from engine.rules.compiler import load_and_compile

HOUR, DAY = 3_600_000, 86_400_000
T0 = 1_772_323_200_000          # 2026-03-01T00:00:00Z
SALT = "lift-sim"
RULES = f"""
rules:
  - id: browse
    type: transactional
    on: add_to_cart
    attribution_window: 2d
    then: {{action: nudge, channel: email}}
policy:
  control_group: 50%
  control_group_salt: {SALT}
  attribution: {{window: 2d, conversions: [purchase], revenue: amount}}
"""
CUSTOMERS = 400
Q_LOW, Q_HIGH = 0.01, 0.70             # base conversion probability per customer: uniform
MAX_TRIGGERS = 10                      # triggers per customer: uniform 1..MAX_TRIGGERS
EXTRA_BUYS = 0.8                       # purchases beyond the first: Poisson, mean this x the customer's triggers
MU, MU_SD, SIGMA = math.log(40), 0.6, 1.0   # spend: log-mean per customer ~ N(MU, MU_SD); per order sd SIGMA
MEAN_SPEND = (1 + EXTRA_BUYS * (1 + MAX_TRIGGERS) / 2) * math.exp(MU + (MU_SD ** 2 + SIGMA ** 2) / 2)   # per converted customer
DATASETS = 30


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    d = tmp_path_factory.mktemp("lift-rules")
    (d / "rules.yaml").write_text(textwrap.dedent(RULES))
    return load_and_compile(d)


def _poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def generate(seed: int, effect: float) -> list[Event]:
    """Events of one dataset; `effect`: added to a contacted customer's conversion probability."""
    rng = random.Random(seed)
    events: list[Event] = []
    n = 0
    for c in range(CUSTOMERS):
        cid = f"s{seed}-c{c}"
        q = rng.uniform(Q_LOW, Q_HIGH)
        if not in_control_group(cid, "", SALT, 0.5):
            q += effect
        mu = rng.gauss(MU, MU_SD)
        k = rng.randint(1, MAX_TRIGGERS)
        starts = sorted(rng.sample(range(40), k))          # day of each trigger: windows never overlap
        ats = [T0 + day * 3 * DAY + rng.randint(0, 12) * HOUR for day in starts]
        for at in ats:
            n += 1
            events.append(Event(f"e{n}", "add_to_cart", cid, at, {}))
        if rng.random() < q:
            for _ in range(1 + _poisson(rng, EXTRA_BUYS * k)):
                at = rng.choice(ats) + rng.randint(1, 47) * HOUR   # strictly after, within the 2d window
                n += 1
                events.append(Event(f"e{n}", "purchase", cid, at, {"amount": round(math.exp(rng.gauss(mu, SIGMA)), 2)}))
    # the data ends well after the last window
    events.append(Event("end", "page_view", "nobody", T0 + 125 * DAY, {}))
    return sorted(events, key=lambda e: e.ts)


def run(rules, events: list[Event]):
    r = Replay(rules, lambda out: None)
    r.feed(events)
    r.finish()
    return r.summary(0, 0.0)


def _excludes(ci, value: float) -> bool:
    return not (ci[0] <= value <= ci[1])


def test_no_effect_intervals_exclude_zero_about_one_in_twenty(rules):
    conv = rev = old = 0
    for seed in range(DATASETS):
        s = run(rules, generate(seed, 0.0))
        result = customer_lift("browse", s.by_customer["browse"])
        assert result.contacted.customers + result.control.customers == CUSTOMERS
        conv += _excludes(result.conversion.ci, 0.0)
        rev += _excludes(result.revenue.ci, 0.0)
        old += _excludes(lift("browse", s.per_rule["browse"]).absolute_ci, 0.0)
    print(f"\nno effect, {DATASETS} datasets: 95% interval excludes 0 — conversion per customer {conv}/{DATASETS}, "
          f"revenue per customer {rev}/{DATASETS}, old per-trigger conversion {old}/{DATASETS}")
    assert conv <= 0.15 * DATASETS and rev <= 0.15 * DATASETS
    assert old > 0.15 * DATASETS     # the per-trigger lift fails the same bar on the same data


EFFECT = 0.10


def test_planted_effect_is_covered(rules):
    conv = rev = incremental = detected = 0
    for seed in range(1000, 1000 + DATASETS):
        s = run(rules, generate(seed, EFFECT))
        result = customer_lift("browse", s.by_customer["browse"])
        detected += _excludes(result.conversion.ci, 0.0)
        conv += not _excludes(result.conversion.ci, EFFECT)
        rev += not _excludes(result.revenue.ci, EFFECT * MEAN_SPEND)
        n = result.contacted.customers
        incremental += not _excludes(result.revenue.incremental_ci, EFFECT * MEAN_SPEND * n)
    print(f"\nplanted +{100 * EFFECT:.0f} points, +{EFFECT * MEAN_SPEND:.2f} revenue per customer, {DATASETS} datasets: "
          f"covered — conversion {conv}/{DATASETS}, revenue {rev}/{DATASETS}, incremental revenue {incremental}/{DATASETS}; "
          f"conversion interval above 0 in {detected}/{DATASETS}")
    assert conv >= 0.9 * DATASETS and rev >= 0.9 * DATASETS
    assert detected >= 0.5 * DATASETS   # covering the effect is not enough: the intervals must also be narrow enough to see it


def test_program_counts_each_conversion_once(rules, tmp_path):
    # two rules fire for one customer; one purchase follows: the program counts it once, each rule once
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(RULES.replace("  - id: browse", """  - id: other
    type: transactional
    on: page_view
    then: {action: other, channel: sms}
  - id: browse""")))
    two = load_and_compile(tmp_path)
    cid = next(f"c{i}" for i in range(100) if not in_control_group(f"c{i}", "", SALT, 0.5))
    events = [Event("a", "add_to_cart", cid, T0, {}), Event("v", "page_view", cid, T0 + 60_000, {}),
              Event("p", "purchase", cid, T0 + HOUR, {"amount": 30.0}), Event("end", "page_view", "nobody", T0 + 10 * DAY, {})]
    s = run(two, events)
    assert s.program is not None and s.program_rules == ["browse", "other"]
    assert (s.program.contacted.customers, s.program.contacted.converted, s.program.contacted.revenue) == (1, 1, 30.0)
    for rule in ("browse", "other"):
        assert s.by_customer[rule].contacted.revenue == 30.0
        assert s.per_rule[rule].revenue == 30.0


def test_two_open_triggers_of_a_rule_count_a_purchase_once(rules):
    cid = next(f"c{i}" for i in range(100) if not in_control_group(f"c{i}", "", SALT, 0.5))
    events = [Event("a1", "add_to_cart", cid, T0, {}), Event("a2", "add_to_cart", cid, T0 + HOUR, {}),
              Event("p", "purchase", cid, T0 + 2 * HOUR, {"amount": 50.0}),
              Event("p", "purchase", cid, T0 + 2 * HOUR, {"amount": 50.0}),    # a duplicate
              Event("end", "page_view", "nobody", T0 + 10 * DAY, {})]
    s = run(rules, events)
    per_trigger = s.per_rule["browse"]
    assert (per_trigger.sent, per_trigger.converted) == (2, 2)      # both triggers converted...
    assert per_trigger.revenue == 50.0                              # ...but the purchase's revenue counts once
    c = s.by_customer["browse"].contacted
    assert (c.customers, c.converted, c.revenue) == (1, 1, 50.0)


def test_a_window_past_the_end_of_the_data_is_unobserved(rules):
    cid = next(f"c{i}" for i in range(100) if in_control_group(f"c{i}", "", SALT, 0.5))
    events = [Event("a1", "add_to_cart", cid, T0, {}), Event("a2", "add_to_cart", cid, T0 + 5 * DAY, {}),
              Event("p", "purchase", cid, T0 + 5 * DAY + HOUR, {"amount": 9.0}),
              Event("end", "page_view", "nobody", T0 + 6 * DAY, {})]
    o = run(rules, events).by_customer["browse"]
    # the second trigger's window (2d) ends after the data: left out with the purchase in it
    assert o.unobserved == 1
    assert (o.control.customers, o.control.converted, o.control.revenue) == (1, 0, 0.0)


def test_drained_deadlines_do_not_move_the_end_of_data(tmp_path):
    """With --drain the clock runs on past the data to fire what was pending; a trigger whose
    window ends after the last event is still unobserved (the end of data is `ended_at`)."""
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(RULES.replace("  - id: browse", """  - id: winback
    type: threshold
    inactive: 30d
    then: {action: winback, channel: email}
  - id: browse""")))
    rules = load_and_compile(tmp_path)
    cid = next(f"c{i}" for i in range(100) if in_control_group(f"c{i}", "", SALT, 0.5))
    events = [Event("a1", "add_to_cart", cid, T0, {}), Event("end", "page_view", "nobody", T0 + DAY, {})]
    r = Replay(rules, lambda out: None, drain=True)
    r.feed(events)
    r.finish()
    s = r.summary(0, 0.0)
    assert s.ended_at == T0 + DAY and s.drained and s.pending_total == 2   # both customers' win-backs
    assert s.by_customer["browse"].unobserved == 1 and s.by_customer["browse"].control.customers == 0
    assert s.by_customer["winback"].unobserved == 2   # both fired after the end: never observable


def test_conversion_strictly_after_the_trigger(rules):
    cid = next(f"c{i}" for i in range(100) if in_control_group(f"c{i}", "", SALT, 0.5))
    events = [Event("p0", "purchase", cid, T0 - DAY, {"amount": 7.0}), Event("a", "add_to_cart", cid, T0, {}),
              Event("p", "purchase", cid, T0, {"amount": 9.0}), Event("end", "page_view", "nobody", T0 + 6 * DAY, {})]
    o = run(rules, events).by_customer["browse"].control
    assert (o.converted, o.revenue, o.pre_revenue) == (0, 0.0, 7.0)


# -- the statistics and the verdicts ---------------------------------------------------------


def _outcome(a: tuple[int, int], b: tuple[int, int], revenue: float = 10.0) -> CustomerOutcome:
    """(customers, converted) per group; each converted customer spent `revenue`."""
    def group(n: int, x: int) -> GroupTotals:
        g = GroupTotals()
        for i in range(n):
            g.add(i < x, revenue if i < x else 0.0, 0.0)
        return g
    return CustomerOutcome(group(*a), group(*b))


def test_relative_interval_at_zero_control_rate_is_undefined():
    result = customer_lift("r", _outcome((200, 20), (100, 0)))
    assert result.conversion.lift == pytest.approx(0.1)
    assert result.conversion.relative is None and result.conversion.relative_ci is None


def test_relative_interval_at_full_control_rate_is_not_narrower_than_the_absolute_one():
    # 9 of 9 control customers converted: the relative interval must carry the absolute one's width
    result = customer_lift("r", _outcome((50, 48), (9, 9)))
    lo, hi = result.conversion.ci
    rlo, rhi = result.conversion.relative_ci
    assert rlo <= lo / 1.0 and (rhi is None or rhi >= hi / 1.0)
    assert rhi is None or rhi > 0 > rlo         # covers 0, as the absolute interval does
    assert lo < 0 < hi


def test_relative_interval_never_below_minus_100_percent():
    result = customer_lift("r", _outcome((40, 1), (4, 1)))
    assert result.conversion.relative_ci[0] >= -1.0


def test_mover_ratio_interval_matches_the_log_ratio_for_large_counts():
    d, ci = newcombe(600, 2000, 400, 2000)
    rel, (lo, hi) = ratio_interval(600, 2000, 400, 2000, ci)
    se = math.sqrt(1 / 600 - 1 / 2000 + 1 / 400 - 1 / 2000)
    assert rel == pytest.approx(0.5)
    assert lo == pytest.approx(1.5 * math.exp(-1.96 * se) - 1, abs=0.01)
    assert hi == pytest.approx(1.5 * math.exp(1.96 * se) - 1, abs=0.01)


def test_relative_interval_with_few_control_conversions_agrees_with_the_absolute_one():
    """14/100 vs 1/100: the absolute interval is well above 0, and so must the relative one be
    (its lower end was -100% whenever the control had about six conversions or fewer)."""
    d, ci = newcombe(14, 100, 1, 100)
    assert ci[0] > 0
    rel = ratio_interval(14, 100, 1, 100, ci)
    assert rel is not None and rel[1][0] > 0 and rel[1][0] <= rel[0] <= rel[1][1]
    for x2 in range(1, 8):   # and it widens smoothly as the control's conversions fall
        r = ratio_interval(116, 1000, x2, 1000, newcombe(116, 1000, x2, 1000)[1])
        assert r is not None and r[1][0] > 0, x2


def test_t_quantile_known_values():
    assert [round(t_quantile(df), 3) for df in (1, 2, 3, 4)] == [12.706, 4.303, 3.182, 2.776]   # was 11.30 at df 1
    assert t_quantile(1.5) == t_quantile(1)     # rounded down: never narrower than the exact value
    assert t_quantile(5) == pytest.approx(2.5706, abs=2e-3)
    assert t_quantile(30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile(math.inf) == pytest.approx(1.96, abs=1e-4)


def test_welch_known_values():
    # n1=10, mean 20, var 16; n2=15, mean 15, var 36: se = sqrt(1.6 + 2.4) = 2, df = 16 / (0.2844 + 0.4114)
    d, (lo, hi) = welch(10, 20.0, 16.0, 15, 15.0, 36.0)
    df = 16 / (1.6 ** 2 / 9 + 2.4 ** 2 / 14)
    assert d == 5.0 and hi - d == pytest.approx(t_quantile(df) * 2)
    assert t_quantile(df) == pytest.approx(2.0687, abs=5e-3)      # t(0.975, 22.99)


def test_sample_size_known_value():
    # 10% vs 15%, alpha 0.05 two-sided, 80% power: 686 per group (Fleiss, without continuity correction)
    assert sample_size(0.10, 0.05) == 686


def test_empty_control_is_no_control_group():
    result = customer_lift("r", _outcome((30, 3), (0, 0)))
    assert result.verdict_kind is Verdict.NO_CONTROL and result.verdict == "no control group"
    assert result.conversion.ci is None and result.revenue.ci is None


def test_one_customer_per_group_is_inconclusive():
    result = customer_lift("r", _outcome((1, 1), (1, 0)))
    assert result.verdict_kind is Verdict.INCONCLUSIVE
    assert result.verdict.startswith("inconclusive: control has 1 customer; about ")
    assert result.verdict.endswith(" per group needed to see a 5-point effect")
    # a group of one has no spread: no revenue interval (it was a zero-width one, (d, d))
    assert result.revenue.ci is None and result.revenue.incremental_ci is None and result.revenue.lift is not None


def test_verdict_texts():
    assert customer_lift("r", _outcome((2000, 400), (2000, 200))).verdict == "lift"
    assert customer_lift("r", _outcome((2000, 200), (2000, 400))).verdict == "negative"
    assert customer_lift("r", _outcome((2000, 200), (2000, 205))).verdict == "no measurable effect"
    small = customer_lift("r", _outcome((300, 30), (2, 0)))
    needed = sample_size(30 / 302, 0.05)
    assert small.verdict == f"inconclusive: control has 2 customers; about {needed:,} per group needed to see a 5-point effect"
    assert small.needed_per_group == needed


def test_program_sums_the_rules_incremental_revenue():
    a, b = customer_lift("a", _outcome((100, 20), (100, 10))), customer_lift("b", _outcome((100, 20), (100, 10)))
    p = program_lift(_outcome((150, 30), (150, 15)), [a, b], ["a", "b"])
    assert p.rules_incremental_revenue == pytest.approx(a.revenue.incremental + b.revenue.incremental)
    assert p.lift.rule_id == "all rules"


def test_cuped_reduces_variance_when_pre_period_predicts():
    rng = random.Random(3)
    o = CustomerOutcome()
    for i in range(400):
        pre = rng.lognormvariate(3, 1)
        post = pre * 0.8 + rng.gauss(0, 5)
        (o.contacted if i % 2 else o.control).add(post > 20, post, pre)
    result = customer_lift("r", o)
    assert result.revenue.cuped is not None and result.revenue.cuped.variance_reduction > 0.5
    width = result.revenue.ci[1] - result.revenue.ci[0]
    assert result.revenue.cuped.ci[1] - result.revenue.cuped.ci[0] < width
