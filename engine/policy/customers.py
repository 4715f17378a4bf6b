"""Per-customer outcomes of a replay, for lift with the customer as the unit.

The trigger counters (`engine.policy.attribution.RuleOutcome`) treat every trigger as an
independent trial; a customer triggered ten times is ten trials that share one person's
habits, and intervals on them are far too narrow. Here a replay's sent and held-out triggers
and its conversion events are collected, and at the end each customer of a rule becomes one
unit: its group (contacted: got a `sent` trigger of the rule; control: only `held_out` ones),
whether it converted strictly after one of the rule's triggers within its attribution window,
and the revenue of those conversions, each conversion event counted once per customer and
rule however many of the rule's triggers were open.

Only the backtest collects this (`engine.offline.backtest.Replay`): the live engine's hot path
and persisted state keep the trigger counters. The result is a few sums per group (count,
conversions, revenue and its square, pre-period revenue for CUPED), so a summary stays small
whatever the number of customers (engine.policy.stats needs nothing more).

A trigger whose window runs past the end of the data is not fully observed: it is left out and
counted (`unobserved`). The program-level outcome compares the global control group with the
contacted customers over the rules that use the global control: per customer, the conversions
within any of those rules' windows, each counted once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from engine.actions.trigger import HELD_OUT, SENT, Trigger
from engine.core.times import parse_ts
from engine.events.model import Event, amount
from engine.policy.contact import at_once

if TYPE_CHECKING:
    from engine.rules.compiler import CompiledRules


class GroupTotals(msgspec.Struct):
    """Sums over the customers of one group (one value per customer)."""

    customers: int = 0
    converted: int = 0             # customers with a conversion in a window
    revenue: float = 0.0           # sum over customers of their attributed revenue
    revenue_sq: float = 0.0        # sum of squares of the same
    pre_revenue: float = 0.0       # revenue before the customer's first trigger (CUPED covariate)
    pre_revenue_sq: float = 0.0
    pre_x_revenue: float = 0.0     # sum of pre-period revenue times attributed revenue

    def add(self, converted: bool, revenue: float, pre: float) -> None:
        self.customers += 1
        self.converted += converted
        self.revenue += revenue
        self.revenue_sq += revenue * revenue
        self.pre_revenue += pre
        self.pre_revenue_sq += pre * pre
        self.pre_x_revenue += pre * revenue


class CustomerOutcome(msgspec.Struct):
    """A rule's (or the program's) customers by group, and the triggers left out.

    `days`: the same customers by the UTC day of their first observed trigger ("2026-03-01" ->
    [contacted, contacted converted, control, control converted]), for conversion over time."""

    contacted: GroupTotals = msgspec.field(default_factory=GroupTotals)
    control: GroupTotals = msgspec.field(default_factory=GroupTotals)
    unobserved: int = 0            # triggers whose attribution window runs past the end of the data
    days: dict[str, list[int]] = {}

    def add_day(self, first: int, held: bool, converted: bool) -> None:
        day = _day(first)
        counts = self.days.get(day)
        if counts is None:
            counts = self.days[day] = [0, 0, 0, 0]
        i = 2 if held else 0
        counts[i] += 1
        counts[i + 1] += converted


class CustomerCollector:
    """Collects a replay's sent/held-out triggers and conversion events per customer."""

    def __init__(self, rules: CompiledRules) -> None:
        settings = rules.attribution
        self.conversions = frozenset(settings.conversions)
        self.revenue_field = settings.revenue
        self.windows = {r.id: rules.attribution_windows.get(r.id, settings.window) for r in rules.rules}
        self.default_window = settings.window
        policy = rules.ruleset.policy
        global_share = policy.control_group if policy is not None else 0.0
        self.global_rules = frozenset(r.id for r in rules.rules if r.policy.control_group is None) \
            if global_share > 0 else frozenset()
        # SPEC §3b's timing experiment: rule -> the share sent at once; its sent triggers also count
        # under `timing_unit(rule)`, the at-once arm as its control, so that lift measures timing itself
        self.timing_arms = {r.id: a.time_holdout for r in rules.rules for a in r.actions() if a.time_holdout}
        self.salt = policy.control_group_salt if policy is not None else ""
        for rule in self.timing_arms:
            self.windows[timing_unit(rule)] = self.windows[rule]
        self.triggers_by: dict[str, list[tuple[str, int, bool]]] = {}     # customer -> (rule, at, held out)
        self.converts_by: dict[str, dict[str, tuple[int, float]]] = {}    # customer -> event id -> (ts, revenue)

    def events(self, events: Iterable[Event]) -> None:
        conversions = self.conversions
        for ev in events:
            if ev.type in conversions:
                seen = self.converts_by.setdefault(ev.customer_id, {})
                if ev.event_id not in seen:   # a duplicate counts once, as in the engine
                    seen[ev.event_id] = (ev.ts, float(amount(ev.properties.get(self.revenue_field))))

    def triggers(self, out: Iterable[Trigger]) -> None:
        arms = self.timing_arms
        for t in out:
            if t.status is SENT or t.status is HELD_OUT:
                at = parse_ts(t.fired_at)
                mine = self.triggers_by.setdefault(t.customer_id, [])
                mine.append((t.rule_id, at, t.status is HELD_OUT))
                if arms and t.status is SENT and t.rule_id in arms:
                    mine.append((timing_unit(t.rule_id), at,
                                 at_once(t.customer_id, t.rule_id, self.salt, arms[t.rule_id])))

    def outcomes(self, end: int) -> tuple[dict[str, CustomerOutcome], CustomerOutcome | None]:
        """Per rule and for the program (None: no global control group), with the data ending at `end`."""
        per_rule: dict[str, CustomerOutcome] = {}
        program = CustomerOutcome() if self.global_rules else None
        for customer, trigs in self.triggers_by.items():
            convs = sorted(self.converts_by.get(customer, {}).values())
            by_rule: dict[str, list[tuple[int, bool]]] = {}
            for rule, at, held in trigs:
                by_rule.setdefault(rule, []).append((at, held))
            program_windows: list[tuple[int, int]] = []
            program_held = True
            program_first: int | None = None
            for rule, entries in by_rule.items():
                o = per_rule.get(rule)
                if o is None:
                    o = per_rule[rule] = CustomerOutcome()
                w = self.windows.get(rule, self.default_window)
                observed = [(at, held) for at, held in entries if at + w <= end]
                o.unobserved += len(entries) - len(observed)
                if program is not None and rule in self.global_rules:
                    program.unobserved += len(entries) - len(observed)
                if not observed:
                    continue
                windows = [(at, at + w) for at, _ in observed]
                held = all(h for _, h in observed)
                first = min(at for at, _ in observed)
                o.add_day(first, held, _unit(o.control if held else o.contacted, convs, windows, first))
                if program is not None and rule in self.global_rules:
                    program_windows.extend(windows)
                    program_held = program_held and held
                    program_first = first if program_first is None else min(program_first, first)
            if program is not None and program_first is not None:
                converted = _unit(program.control if program_held else program.contacted, convs, program_windows,
                                  program_first)
                program.add_day(program_first, program_held, converted)
        return per_rule, program


def timing_unit(rule_id: str) -> str:
    """The lift row of a rule's timing experiment: its best-hour arm against its at-once arm."""
    return f"{rule_id} (send time)"


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def _unit(group: GroupTotals, convs: list[tuple[int, float]], windows: list[tuple[int, int]], first: int) -> bool:
    """Add one customer: conversions strictly after a trigger and within its window, each once;
    whether it converted."""
    converted = False
    revenue = pre = 0.0
    for ts, value in convs:
        if ts < first:
            pre += value
        elif any(at < ts <= until for at, until in windows):
            converted = True
            revenue += value
    group.add(converted, revenue, pre)
    return converted
