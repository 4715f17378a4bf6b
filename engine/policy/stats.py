"""Two-group interval statistics for lift, with the customer as the independent unit.

A customer's triggers are not independent (the same person, the same habits), so the
callers aggregate per customer first: one 0/1 "converted" and one revenue figure per customer
and rule. Customers are then independent draws, and:

- conversion: Newcombe's hybrid score interval for the difference of two proportions (built
  from Wilson intervals); it keeps its coverage for small counts and rates near 0 or 1.
- revenue per customer (zeros included): Welch's interval for a difference of means, with the
  Welch–Satterthwaite degrees of freedom. Chosen over a bootstrap because it needs only the
  count, sum and sum of squares per group (a summary of a few numbers per rule, whatever the
  number of customers) and is deterministic without a seed; with hundreds of customers per
  group the mean of even lognormal revenue is close enough to normal (tests/unit/test_lift_customers.py
  measures coverage and false discoveries on heavy-tailed synthetic data).
- relative conversion lift: MOVER-R (Donner & Zou 2012) for the ratio of two proportions from
  the Wilson limits, widened to at least the absolute interval divided by the control rate,
  so it is never narrower than the absolute one implies; undefined when the control rate is 0
  (no finite ratio), unbounded above when the data cannot bound it.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054
Z80 = 0.8416212335729143   # one-sided 80% power


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = x / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def newcombe(x1: int, n1: int, x2: int, n2: int) -> tuple[float, tuple[float, float]]:
    """p1 - p2 with its 95% interval (Newcombe 1998, method 10); both n must be positive."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1)
    l2, u2 = wilson(x2, n2)
    d = p1 - p2
    return d, (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def ratio_interval(x1: int, n1: int, x2: int, n2: int,
                   absolute_ci: tuple[float, float]) -> tuple[float, tuple[float, float]] | None:
    """p1 / p2 - 1 with its 95% interval (MOVER-R), or None when p2 is 0; `inf` where unbounded."""
    if x2 == 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1)
    l2, u2 = wilson(x2, n2)
    pp = p1 * p2
    disc_low = pp * pp - l1 * u2 * (2 * p1 - l1) * (2 * p2 - u2)
    if 2 * p2 > u2:
        low = (pp - math.sqrt(max(disc_low, 0.0))) / (u2 * (2 * p2 - u2))
    elif l1 > 0:   # few control conversions: the ratio's closed form breaks down; MOVER on the log scale
        low = p1 / p2 * math.exp(-math.sqrt(math.log(p1 / l1) ** 2 + math.log(u2 / p2) ** 2))
    else:
        low = 0.0
    disc_high = pp * pp - u1 * l2 * (2 * p1 - u1) * (2 * p2 - l2)
    if disc_high >= 0 and l2 > 0 and 2 * p2 > l2:
        high = (pp + math.sqrt(disc_high)) / (l2 * (2 * p2 - l2))
    elif p1 > 0 and l2 > 0:
        high = p1 / p2 * math.exp(math.sqrt(math.log(u1 / p1) ** 2 + math.log(p2 / l2) ** 2))
    else:
        high = math.inf
    low, high = max(low, 0.0) - 1, high - 1
    # never narrower than the absolute interval implies with the control rate taken as known
    low = max(min(low, absolute_ci[0] / p2), -1.0)   # a rate is never below 0
    high = max(high, absolute_ci[1] / p2)
    return p1 / p2 - 1, (low, high)


_T95_SMALL = (12.7062, 4.3027, 3.1824, 2.7764)   # exact 97.5% quantiles at df 1-4, where the series is off


def t_quantile(df: float, z: float = Z95) -> float:
    """Student's t quantile from the normal one (Abramowitz & Stegun 26.7.5: within 2e-3 from df
    4, better above); below df 5 the exact value at the df rounded down (conservative). `z` other
    than Z95 uses the series throughout."""
    if not math.isfinite(df) or df > 1e7:
        return z
    df = max(df, 1.0)
    if df < 5 and z == Z95:
        return _T95_SMALL[int(df) - 1]
    z3, z5, z7, z9 = z ** 3, z ** 5, z ** 7, z ** 9
    g1 = (z3 + z) / 4
    g2 = (5 * z5 + 16 * z3 + 3 * z) / 96
    g3 = (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / 384
    g4 = (79 * z9 + 776 * z7 + 1482 * z5 - 1920 * z3 - 945 * z) / 92160
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


def mean_var(n: int, total: float, squares: float) -> tuple[float, float]:
    """Mean and sample variance from a count, a sum and a sum of squares (n >= 1)."""
    mean = total / n
    var = max(squares - total * mean, 0.0) / (n - 1) if n > 1 else 0.0
    return mean, var


def welch(n1: int, mean1: float, var1: float, n2: int, mean2: float,
          var2: float) -> tuple[float, tuple[float, float]]:
    """mean1 - mean2 with its 95% Welch interval; both n must be positive (a group of 1 has
    no variance of its own: the interval is then only as wide as the other group makes it)."""
    d = mean1 - mean2
    a, b = var1 / n1, var2 / n2
    se2 = a + b
    if se2 <= 0:
        return d, (d, d)
    dof_den = (a * a / (n1 - 1) if n1 > 1 else 0.0) + (b * b / (n2 - 1) if n2 > 1 else 0.0)
    df = se2 * se2 / dof_den if dof_den > 0 else math.inf
    half = t_quantile(df) * math.sqrt(se2)
    return d, (d - half, d + half)


def sample_size(base: float, effect: float = 0.05, z_alpha: float = Z95, z_beta: float = Z80) -> int:
    """Customers per group to detect `effect` (absolute) over a base rate, two-sided alpha 0.05,
    80% power (the pooled-variance two-proportion formula)."""
    p1 = min(max(base, 0.0), 1.0)
    p2 = p1 + effect if p1 + effect <= 1 else p1 - effect
    pbar = (p1 + p2) / 2
    num = z_alpha * math.sqrt(2 * pbar * (1 - pbar)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(num * num / (effect * effect))
