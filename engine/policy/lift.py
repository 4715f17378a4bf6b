"""Lift of a rule: the contacted group against its control group.

`customer_lift` is the lift the reports show: the customer is the unit (one per customer and
rule, engine.policy.customers), conversion as the share of customers converted and revenue
per customer (zeros included), each with a 95% interval valid when customers repeat
(engine.policy.stats), the incremental revenue, and a verdict in plain words.

`lift` is the older per-trigger figure (denominators: every sent or held-out trigger; Newcombe
interval, Katz relative): kept for the trigger counters' consumers, but its intervals are too
narrow when customers are triggered repeatedly, since a customer's triggers are not independent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum

import msgspec

from engine.policy.attribution import RuleOutcome
from engine.policy.customers import CustomerOutcome, GroupTotals
from engine.policy.stats import Z95, mean_var, newcombe, ratio_interval, sample_size, welch, wilson

EFFECT = 0.05   # the conversion difference (absolute) the sample-size hint is for


class Lift(msgspec.Struct):
    rule_id: str
    contacted: int
    contacted_converted: int
    control: int
    control_converted: int
    contacted_rate: float | None
    control_rate: float | None
    absolute: float | None               # contacted_rate - control_rate
    absolute_ci: tuple[float, float] | None
    relative: float | None               # absolute / control_rate
    relative_ci: tuple[float, float] | None
    contacted_revenue: float = 0.0
    control_revenue: float = 0.0


def lift(rule_id: str, o: RuleOutcome) -> Lift:
    n1, x1, n2, x2 = o.sent, o.converted, o.held_out, o.held_out_converted
    p1 = x1 / n1 if n1 else None
    p2 = x2 / n2 if n2 else None
    absolute = absolute_ci = relative = relative_ci = None
    if p1 is not None and p2 is not None:
        absolute = p1 - p2
        l1, u1 = wilson(x1, n1)
        l2, u2 = wilson(x2, n2)
        absolute_ci = (absolute - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
                       absolute + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
        if p2 > 0:
            relative = absolute / p2
            if x1 > 0:
                se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
                log_rr = math.log(p1 / p2)
                relative_ci = (math.exp(log_rr - Z95 * se) - 1, math.exp(log_rr + Z95 * se) - 1)
    return Lift(rule_id, n1, x1, n2, x2, p1, p2, absolute, absolute_ci, relative, relative_ci,
                o.revenue, o.held_out_revenue)


# -- the customer as the unit -------------------------------------------------------------------

class Verdict(StrEnum):
    LIFT = "lift"                           # the conversion interval is above 0
    NEGATIVE = "negative"                   # below 0
    NO_EFFECT = "no measurable effect"      # enough customers, and the interval covers 0
    INCONCLUSIVE = "inconclusive"           # the interval covers 0 and a group is too small to tell
    NO_CONTROL = "no control group"         # no (observed) control customer, or no contacted one


class Group(msgspec.Struct):
    customers: int
    converted: int
    rate: float | None                      # converted / customers
    revenue: float                          # attributed revenue, in total
    revenue_per_customer: float | None


class Conversion(msgspec.Struct):
    """Share of customers converted: contacted minus control, in [0, 1] units."""

    lift: float | None
    ci: tuple[float, float] | None
    relative: float | None                  # lift / control rate; None when the control rate is 0
    relative_ci: tuple[float, float | None] | None   # high None: not bounded by the data
    unit: str = "customer"


class Cuped(msgspec.Struct):
    """Revenue lift adjusted by pre-period revenue (CUPED): same effect, narrower interval when
    the customer's earlier revenue predicts their later one."""

    lift: float
    ci: tuple[float, float]
    theta: float
    variance_reduction: float               # 1 - adjusted variance / plain variance of the lift


class Revenue(msgspec.Struct):
    """Revenue per customer (zeros included): contacted minus control."""

    lift: float | None
    ci: tuple[float, float] | None
    incremental: float | None               # lift x contacted customers
    incremental_ci: tuple[float, float] | None
    cuped: Cuped | None = None
    unit: str = "customer"


class CustomerLift(msgspec.Struct):
    rule_id: str
    contacted: Group
    control: Group
    unobserved: int                         # triggers left out: their window runs past the end of the data
    conversion: Conversion
    revenue: Revenue
    verdict: str                            # plain words, e.g. "inconclusive: control has 2 customers; ..."
    verdict_kind: Verdict
    needed_per_group: int | None            # customers per group to see a 5-point conversion effect


def _group(g: GroupTotals) -> Group:
    n = g.customers
    return Group(n, g.converted, g.converted / n if n else None, g.revenue, g.revenue / n if n else None)


def _cuped(a: GroupTotals, b: GroupTotals, plain_se2: float) -> Cuped | None:
    """theta from both groups pooled; each group's mean and variance adjusted by it."""
    n = a.customers + b.customers
    if a.customers < 2 or b.customers < 2 or plain_se2 <= 0:
        return None
    sx, sxx = a.pre_revenue + b.pre_revenue, a.pre_revenue_sq + b.pre_revenue_sq
    sy, sxy = a.revenue + b.revenue, a.pre_x_revenue + b.pre_x_revenue
    var_x = (sxx - sx * sx / n) / (n - 1)
    if var_x <= 0:
        return None
    theta = (sxy - sx * sy / n) / (n - 1) / var_x
    mean_x = sx / n
    adjusted = []
    for g in (a, b):
        k = g.customers
        my, vy = mean_var(k, g.revenue, g.revenue_sq)
        mx, vx = mean_var(k, g.pre_revenue, g.pre_revenue_sq)
        cov = (g.pre_x_revenue - g.pre_revenue * g.revenue / k) / (k - 1)
        adjusted.append((k, my - theta * (mx - mean_x), max(vy - 2 * theta * cov + theta * theta * vx, 0.0)))
    (n1, m1, v1), (n2, m2, v2) = adjusted
    d, ci = welch(n1, m1, v1, n2, m2, v2)
    return Cuped(d, ci, theta, 1 - (v1 / n1 + v2 / n2) / plain_se2)


def _verdict(ci: tuple[float, float] | None, a: Group, b: Group) -> tuple[Verdict, str, int | None]:
    if ci is None:
        return Verdict.NO_CONTROL, Verdict.NO_CONTROL.value, None
    if ci[0] > 0:
        return Verdict.LIFT, Verdict.LIFT.value, None
    if ci[1] < 0:
        return Verdict.NEGATIVE, Verdict.NEGATIVE.value, None
    base = (a.converted + b.converted) / (a.customers + b.customers)
    needed = sample_size(base, EFFECT)
    if min(a.customers, b.customers) < needed:
        name, small = ("control", b) if b.customers <= a.customers else ("contacted", a)
        noun = "customer" if small.customers == 1 else "customers"
        return (Verdict.INCONCLUSIVE, f"inconclusive: {name} has {small.customers:,} {noun}; about {needed:,} "
                f"per group needed to see a {100 * EFFECT:.0f}-point effect", needed)
    return Verdict.NO_EFFECT, Verdict.NO_EFFECT.value, needed


def customer_lift(rule_id: str, o: CustomerOutcome) -> CustomerLift:
    """Contacted vs control customers of a rule (or of the program)."""
    a, b = o.contacted, o.control
    ga, gb = _group(a), _group(b)
    conversion = Conversion(None, None, None, None)
    revenue = Revenue(None, None, None, None)
    if a.customers and b.customers:
        d, ci = newcombe(a.converted, a.customers, b.converted, b.customers)
        rel = ratio_interval(a.converted, a.customers, b.converted, b.customers, ci)
        rel_ci = None if rel is None else (rel[1][0], rel[1][1] if math.isfinite(rel[1][1]) else None)
        conversion = Conversion(d, ci, None if rel is None else rel[0], rel_ci)
        m1, v1 = mean_var(a.customers, a.revenue, a.revenue_sq)
        m2, v2 = mean_var(b.customers, b.revenue, b.revenue_sq)
        rd, rci = welch(a.customers, m1, v1, b.customers, m2, v2)
        n = a.customers
        if a.customers < 2 or b.customers < 2:   # a group of one has no spread: no interval to give
            revenue = Revenue(rd, None, rd * n, None)
        else:
            revenue = Revenue(rd, rci, rd * n, (rci[0] * n, rci[1] * n),
                              _cuped(a, b, v1 / a.customers + v2 / b.customers))
    kind, text, needed = _verdict(conversion.ci, ga, gb)
    return CustomerLift(rule_id, ga, gb, o.unobserved, conversion, revenue, text, kind, needed)


class Program(msgspec.Struct):
    """The global control group against every contacted customer of the rules that use it, each
    conversion counted once per customer; beside it the sum of those rules' own incremental
    revenues: a sum above the program's shows campaigns claiming the same purchases."""

    lift: CustomerLift
    rules: list[str]                        # the rules using the global control group
    rules_incremental_revenue: float        # sum of their per-rule incremental revenues


def program_lift(program: CustomerOutcome, rules: list[CustomerLift], names: list[str]) -> Program:
    """`rules`: every rule's lift; `names`: those using the global control group."""
    using = set(names)
    total = sum(r.revenue.incremental or 0.0 for r in rules if r.rule_id in using)
    return Program(customer_lift("all rules", program), sorted(using), total)


def rule_lifts(rule_ids: Iterable[str], by_customer: Mapping[str, CustomerOutcome],
               program: CustomerOutcome | None, program_rules: list[str]) -> tuple[list[CustomerLift], Program | None]:
    """Each rule's lift (customers as the unit; a rule without customers gets empty groups) and
    the program's (None without a global control group): what every report shows."""
    lifts = [customer_lift(rule_id, by_customer.get(rule_id) or CustomerOutcome()) for rule_id in rule_ids]
    return lifts, None if program is None else program_lift(program, lifts, program_rules)
