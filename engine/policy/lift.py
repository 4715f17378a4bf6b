"""Lift of a rule: conversion of the contacted group against its control group.

Denominators are every sent (resp. held-out) trigger, non-responders included. The 95%
interval of the absolute lift is Newcombe's hybrid score interval (built from two Wilson
intervals), which keeps its coverage for small counts and rates near 0 where the textbook
Wald interval does not; the relative lift's interval is Katz's log risk-ratio interval.
"""

from __future__ import annotations

import math

import msgspec

from engine.policy.attribution import RuleOutcome

Z95 = 1.959963984540054


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


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = x / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


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
