"""Rules compiler: a validated `RuleSet` becomes plain callables, indexed by event type.

Everything that can be decided once is decided here, so evaluating an event is one dict
lookup for its plan, then calls of compiled functions: no parsing, no name lookups.
Each rule becomes the class of its kind (engine.rules.kinds), decided here from its shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from engine.events.model import CONSENT_EVENT
from engine.rules.aggregates import (
    Fit,
    Read,
    StateUpdate,
    Update,
    compile_aggregate,
    decayed_top,
    filtered,
    keyed_read,
    value_fits,
)
from engine.rules.errors import MAX_ERRORS, RuleError, RulesInvalid, error_limit, exception_text
from engine.rules.expr import CompiledExpr, Env, ExprError, compile_expr, compile_template, reserved_name_problem
from engine.rules.journey import END_AT, CompiledJourneyStep, JourneyRule, compile_targets
from engine.rules.kinds import (
    AbsenceRule,
    CompiledAction,
    CompiledRule,
    CompiledStep,
    CompiledUnless,
    CrossingRule,
    DelayRule,
    ImmediateRule,
    InactiveRule,
    RecurringRule,
    SeriesRule,
)
from engine.rules.loader import load_rules
from engine.rules.model import (
    ANY_EVENT,
    BEST,
    NOTHING_LEFT_OUT,
    Action,
    Aggregate,
    Attribution,
    LeftOut,
    Rule,
    RuleSet,
    RuleType,
    Source,
    Unless,
)
from engine.rules.plan import EventPlan
from engine.state.customer import CustomerState

log = logging.getLogger("engine.rules")

PROFILE_EVENTS = frozenset({"identify", "profile"})
MAX_TIMERS_PER_RULE = 8     # concurrent waits of one rule for one customer (delay, matched absence)
# What a rules directory may ask the compiler to compile: `if:` expressions and templates with a
# {...} (each becomes a function: 0.2 to 0.3 ms on a small machine), and their text (1.5 µs a
# character). At both bounds compiling takes under 2 s; 1,000 typical rules (bench/rulegen.py)
# need 670 expressions of 17,000 characters in all.
MAX_EXPRESSIONS = 5_000
MAX_EXPRESSION_TEXT = 250_000

Fn = Callable[..., Any]


class CompiledRules:
    def __init__(self, ruleset: RuleSet, readers: dict[str, Read], updates: list[tuple[tuple[str, ...], Update]],
                 rules: list[CompiledRule], profile_attrs: frozenset[str],
                 filtered: list[tuple[tuple[str, ...], StateUpdate]] | None = None,
                 fits: dict[str, Fit] | None = None) -> None:
        self.ruleset = ruleset
        self.fits = fits or {}   # aggregate name -> the shape its stored value must have (`conform`)
        self._reset_logged: set[str] = set()
        self.readers = readers
        self._updates = updates
        self._filtered = filtered or []
        self.rules = tuple(rules)
        self.by_id = {r.id: r for r in rules}
        self.profile_attrs = profile_attrs
        self.lateness = ruleset.lateness   # ms an event may arrive behind the newest (SPEC §6)
        self.inactive = tuple(r for r in rules if isinstance(r, InactiveRule))
        self.inactive_of = tuple(r for r in self.inactive if r.of)   # re-armed by some event types only
        self.recurring = tuple(r for r in rules if isinstance(r, RecurringRule))
        # channels some rule sends on: the only ones whose consent is worth keeping
        by_channel = policy.responses_by_channel if (policy := ruleset.policy) is not None else {}
        self.channels = frozenset(c for r in rules for a in r.actions() for c in (a.channels or (a.channel,))
                                  if c != BEST) | frozenset(by_channel)
        self._response_channel = {t: i for i, types in enumerate(by_channel.values()) for t in types}
        self.journeys = tuple(r for r in rules if isinstance(r, JourneyRule))
        self.attribution = policy.attribution if policy is not None else Attribution()
        self.attribution_windows = {r.id: r.policy.attribution_window for r in rules if r.policy.attribution_window}
        self._response_types = frozenset(self.attribution.responses) | frozenset(self.attribution.conversions)
        self.cancel_types = frozenset(t for r in rules for u in r.unlesses() for t in u.events)
        # `send_time: best` falls back on the population's hour: live, partitions wait for each other's days
        self.uses_population = any(a.best_time for r in rules for a in r.actions())
        self.drain_span = max((_span(r.rule) for r in rules if not r.dated), default=0)
        self._plans: dict[str, EventPlan] = {}

    def conform(self, state: CustomerState, customer_id: str) -> bool:
        """Drop the stored aggregate values another definition of their name left in a shape these
        rules cannot read (`engine.rules.aggregates.value_fits`): the aggregate starts again from
        no events for this customer, instead of every event of the customer failing. True when
        something was dropped. Called for each state loaded from a store and, after a reload that
        changed a check (`reshapes`), for each state held; not per event."""
        aggs = state.aggs
        if not aggs:
            return False
        dropped = False
        latest = state.last_ts
        for name, fit in self.fits.items():
            value = aggs.get(name)
            if value is not None and not fit.check(value, latest):
                del aggs[name]
                dropped = True
                if name not in self._reset_logged:
                    self._reset_logged.add(name)
                    log.warning("aggregate '%s': customer %r holds a value of another definition of the name "
                                "(%s), which these rules cannot read: it starts again from no events (logged once "
                                "per aggregate and rules version)", name, customer_id, _shape(value))
        return dropped

    def reshapes(self, before: CompiledRules) -> bool:
        """Whether values kept under `before` may not fit these rules (an aggregate whose shape
        check changed, or is new: a state can hold a value from rules older than `before`)."""
        shapes = {name: fit.shape for name, fit in before.fits.items()}
        return any(shapes.get(name) != fit.shape for name, fit in self.fits.items())

    def plan(self, event_type: str) -> EventPlan:
        """The plan for an event type, built on first sight and cached (types are few)."""
        try:
            return self._plans[event_type]
        except KeyError:
            pass
        plan = self._plans[event_type] = EventPlan(
            updates=tuple(u for on, u in self._updates if event_type in on or ANY_EVENT in on),
            filtered=tuple(u for on, u in self._filtered if event_type in on or ANY_EVENT in on),
            rules=tuple(
                r for r in self.rules
                if r.on_events and (event_type in r.rule.on or ANY_EVENT in r.rule.on)
            ),
            cancels=event_type in self.cancel_types,
            profile=event_type in PROFILE_EVENTS,
            consent=event_type == CONSENT_EVENT,
            responds=event_type in self._response_types,
            idle_of=tuple(r for r in self.inactive if event_type in r.of),
            journeys=tuple(r for r in self.journeys if event_type in r.watches),
            engagement=self._response_channel.get(event_type, -1),
        )
        return plan


DAY_MS = 86_400_000


def _shape(value: Any) -> str:
    """A stored value's shape for a log line, bounded (a value can be a long list)."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _span(rule: Rule) -> int:
    """How long after its cause a rule's one-shot deadlines can still fall, each wait passed once,
    plus a day per send for a quiet-hours deferral: how far a drained backtest runs its clock. A
    journey that loops through a wait would never drain; its later laps are left pending."""
    waits = (rule.unless.within or 0) if rule.unless is not None else 0
    waits += (rule.delay or 0) + (rule.inactive or 0) + sum(s.after for s in rule.steps)
    sends = max(1, len(rule.steps))
    if rule.journey is not None:
        waits += sum(s.wait for s in rule.journey.steps)
        sends = sum(1 for s in rule.journey.steps if s.then is not None)
    return waits + DAY_MS * (sends + 1)


def load_and_compile(path: str | Path) -> CompiledRules:
    """Load, validate and compile a rules directory; raises RulesInvalid listing every error.

    Whatever the files hold, it raises nothing else (hot reload and `triggers validate` rely on
    it): a failure nobody foresaw becomes an error naming the directory.
    """
    try:
        ruleset = load_rules(path)
    except RulesInvalid:
        raise
    except Exception as exc:
        raise _unforeseen(path, exc) from exc
    return compile_read(ruleset, path)


def compile_read(ruleset: RuleSet, path: str | Path) -> CompiledRules:
    """`load_and_compile` of a `RuleSet` already read from `path`: the rules compiled are those
    read, not a second reading's (engine.rules.check). Raises nothing but RulesInvalid."""
    try:
        return compile_rules(ruleset)
    except RulesInvalid:
        raise
    except Exception as exc:
        raise _unforeseen(path, exc) from exc


def _unforeseen(path: str | Path, exc: Exception) -> RulesInvalid:
    return RulesInvalid([RuleError(str(path), 0, f"cannot load the rules ({exception_text(exc)}):"
                                   " please report this as a bug of the rules compiler")])


def _no_read(st: Any, now: int) -> None:
    return None


def _no_keyed_read(st: Any, now: int, key: Any) -> None:
    return None


def _where(agg: Aggregate, errors: list[RuleError], profile_attrs: set[str], budget: _Budget,
           aggregates: Collection[str]) -> Fn | None:
    """An aggregate's `where:`, compiled like `if:`; it reads the event, the profile and the
    clock, never aggregates (they are updated one after another, in no promised order)."""
    assert agg.where is not None
    line = agg.where_line or agg.source.line
    budget.count(errors, Source(agg.source.file, line), agg.where, f"aggregate '{agg.name}': ")
    names = Env(aggregates={a: _no_read for a in aggregates if reserved_name_problem(a) is None})
    try:
        compiled = compile_expr(agg.where, names)
    except ExprError as exc:
        errors.append(RuleError(agg.source.file, line, f"aggregate '{agg.name}': where (column {exc.col + 1}):"
                                f" {exc.message}"))
        return None
    except Exception as exc:  # expr.py reports every mistake as an ExprError; anything else is a bug
        errors.append(RuleError(agg.source.file, line, f"aggregate '{agg.name}': where cannot be compiled"
                                f" ({exception_text(exc)})"))
        return None
    if compiled.aggregates:
        read = ", ".join(sorted(compiled.aggregates))
        errors.append(RuleError(agg.source.file, line, f"aggregate '{agg.name}': where reads the event and the"
                                f" profile, not aggregates ({read}): keep the condition on the rule's `if:`"))
        return None
    profile_attrs |= compiled.profile_attrs
    return compiled.fn


def compile_rules(ruleset: RuleSet, left_out: LeftOut = NOTHING_LEFT_OUT) -> CompiledRules:
    """The compiled rules, or `RulesInvalid` with every error (at most `MAX_ERRORS`).

    `left_out` names what a reading left out for an error already reported (engine.rules.check):
    expressions may read its aggregates as any aggregate, and `best` needs no policy, so what
    compiles is the rest's own errors only. Rules compiled with something left out are for their
    errors: they read nothing of it, and must not run.
    """
    errors: list[RuleError] = []
    readers: dict[str, Read] = {}
    updates: list[tuple[tuple[str, ...], Update]] = []
    filtered_updates: list[tuple[tuple[str, ...], StateUpdate]] = []
    fits: dict[str, Fit] = {}
    profile_attrs: set[str] = {"timezone"}   # recurring dates and quiet hours are local time
    budget = _Budget()
    stopped = False   # the bound on expressions was passed (and reported): nothing more is compiled
    for agg in ruleset.aggregates.values():
        problem = reserved_name_problem(agg.name)   # the loader reports it first; a RuleSet built by hand may not
        if problem is not None:
            errors.append(RuleError(agg.source.file, agg.source.line, f"aggregate '{agg.name}': {problem}"))
            continue
        try:
            update, read = compile_aggregate(agg)
        except Exception as exc:  # validated by the loader: a bug, reported where it shows
            errors.append(RuleError(agg.source.file, agg.source.line, f"aggregate '{agg.name}' cannot be compiled"
                                    f" ({exception_text(exc)})"))
            continue
        readers[agg.name] = read
        if (fit := value_fits(agg)) is not None:
            fits[agg.name] = fit
        if agg.where is None:
            updates.append((agg.on, update))
            continue
        try:
            where = _where(agg, errors, profile_attrs, budget, ruleset.aggregates.keys() | left_out.aggregates)
        except _Stop:
            stopped = True
            break
        if where is not None:
            filtered_updates.append((agg.on, filtered(update, where)))
    tops = {a.name: decayed_top(a) for a in ruleset.aggregates.values() if a.kind == "decayed_count"}
    keyed = {a.name: keyed_read(a) for a in ruleset.aggregates.values()
             if a.kind in ("sum", "count") and a.by and a.name in readers}
    stand_ins = sorted(a for a in left_out.aggregates if a not in readers and reserved_name_problem(a) is None)
    env = Env(aggregates=readers | dict.fromkeys(stand_ins, _no_read), tops=tops,
              keyed=keyed | dict.fromkeys(stand_ins, _no_keyed_read))   # of any kind: `x`, `top(x)`, `x[key]`
    compiled = []
    for rule in () if stopped else ruleset.rules:
        try:
            compiled.append(_compile_rule(rule, env, errors, profile_attrs, budget, ruleset, left_out))
        except _Stop:
            break
        except Exception as exc:  # a bug, or the interpreter's own limits: an error of this rule, not a traceback
            errors.append(RuleError(rule.source.file, rule.source.line, f"cannot be compiled ({exception_text(exc)}):"
                                    " please report this as a bug of the rules compiler", rule.id))
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        errors.sort(key=lambda e: (e.file, e.line))
        raise RulesInvalid(errors + [error_limit(errors[-1])] if len(errors) >= MAX_ERRORS else errors)
    return CompiledRules(ruleset, readers, updates, compiled, frozenset(profile_attrs), filtered_updates, fits)


class _Budget:
    """How many expressions and templates the rules directory has compiled so far, and their text."""

    __slots__ = ("expressions", "text")

    def __init__(self) -> None:
        self.expressions = 0
        self.text = 0

    def count(self, errors: list[RuleError], source: Source, text: str, who: str = "",
              rule_id: str | None = None) -> None:
        """Count one expression or template; past a limit, report it at `source` and stop."""
        self.expressions += 1
        self.text += len(text)
        if self.expressions > MAX_EXPRESSIONS:
            what = f"more than {MAX_EXPRESSIONS:,} expressions and templates"
        elif self.text > MAX_EXPRESSION_TEXT:
            what = f"more than {MAX_EXPRESSION_TEXT:,} characters of expressions and templates"
        else:
            return
        errors.append(RuleError(source.file, source.line, f"{who}{what} in the rules directory, the most it may"
                                " have: split the rules into several directories", rule_id))
        raise _Stop


class _Stop(Exception):
    """`MAX_EXPRESSIONS` or `MAX_EXPRESSION_TEXT` was passed (and reported): compiling stops."""


def _constant(value: Any) -> Fn:
    return lambda st, ev, now: value


class _Collector:
    """Compiles the expressions of one rule, turning ExprErrors into file:line RuleErrors."""

    def __init__(self, rule: Rule, env: Env, errors: list[RuleError], profile_attrs: set[str],
                 budget: _Budget, ruleset: RuleSet, left_out: LeftOut) -> None:
        self.rule, self.env, self.errors, self.profile_attrs, self.budget = rule, env, errors, profile_attrs, budget
        self.ruleset = ruleset
        self.left_out = left_out
        self.event_props: set[str] = set()

    def _take(self, compiled: CompiledExpr) -> Fn:
        self.event_props |= compiled.event_props
        self.profile_attrs |= compiled.profile_attrs
        return compiled.fn

    def _count(self, source: Source, text: str) -> None:
        self.budget.count(self.errors, source, text, rule_id=self.rule.id)

    def _failed(self, source: Source, what: str, exc: Exception) -> None:
        if isinstance(exc, ExprError):
            message = f"{what} (column {exc.col + 1}): {exc.message}"
        else:  # expr.py reports every mistake as an ExprError; anything else is a bug shown as an error
            message = f"{what}: cannot be compiled ({exception_text(exc)})"
        self.errors.append(RuleError(source.file, source.line, message, self.rule.id))

    def expr(self, text: str, source: Source, what: str) -> Fn | None:
        self._count(source, text)
        try:
            return self._take(compile_expr(text, self.env))
        except Exception as e:
            self._failed(source, what, e)
            return None

    def template(self, value: Any, source: Source, what: str) -> Fn | None:
        if not isinstance(value, str) or ("{" not in value and "}" not in value):
            return _constant(value)   # what compile_template would return, without compiling a function
        self._count(source, value)
        try:
            return self._take(compile_template(value, self.env))
        except Exception as e:
            self._failed(source, what, e)
            return None

    def action(self, action: Action) -> CompiledAction:
        payload = []
        for key, value in action.payload.items():
            fn = self.template(value, action.source, f"payload '{key}'")
            if fn is not None:
                payload.append((key, fn))
        self._check_timing(action)
        return CompiledAction(action.action, action.channel, tuple(payload), action.channels,
                              action.send_time == BEST, action.send_time_holdout)

    def _check_timing(self, action: Action) -> None:
        """`channel: best` and `send_time: best` learn from the responses the policy assigns to channels."""
        if self.left_out.policy:
            return   # what it assigns is unknown: its own error is reported
        policy = self.ruleset.policy
        by_channel = policy.responses_by_channel if policy is not None else {}
        wanted = [k for k, v in (("channel", action.channel), ("send_time", action.send_time)) if v == BEST]
        if wanted and not by_channel:
            what = " and ".join(f"'{k}: best'" for k in wanted)
            self.errors.append(RuleError(action.source.file, action.source.line, f"{what} learn(s) from each"
                                         " customer's responses per channel: name them in the policy, e.g."
                                         " responses_by_channel: {email: [email_opened, email_clicked]}",
                                         self.rule.id))
            return
        if action.send_time == BEST and action.channel != BEST:
            missing = [c for c in (action.channels or (action.channel,)) if c not in by_channel]
            if missing:
                self.errors.append(RuleError(action.source.file, action.source.line, f"'send_time: best' learns"
                                             f" from the responses on the channel, and the policy's"
                                             f" responses_by_channel names none for {', '.join(missing)}",
                                             self.rule.id))

    def unless(self, unless: Unless | None) -> CompiledUnless | None:
        if unless is None:
            return None
        props, values = [], []
        for prop, template in unless.match.items():
            fn = self.template(template, unless.source, f"unless.match '{prop}'")
            if fn is not None:
                props.append(prop)
                values.append(fn)
        return CompiledUnless(frozenset(unless.events), tuple(props), tuple(values))


def _journey_steps(rule: Rule, col: _Collector) -> tuple[CompiledJourneyStep, ...]:
    """A journey's steps with their targets resolved to indices and their expressions compiled."""
    assert rule.journey is not None
    steps = rule.journey.steps
    index = {s.id: i for i, s in enumerate(steps)}
    out = []
    for i, s in enumerate(steps):
        targets = compile_targets(steps, i, index)
        cond = None
        if s.condition is not None:
            cond = col.expr(s.condition, Source(s.source.file, s.condition_line or s.source.line), f"step '{s.id}' if")
        cumulative, split = 0.0, []
        for target, share in s.split:
            cumulative += share
            split.append((cumulative, targets[f"split.{target}"], target))
        if split:   # the last bucket takes the rounding: every draw in [0, 1) falls in one
            split[-1] = (1.0, split[-1][1], split[-1][2])
        out.append(CompiledJourneyStep(
            s.id, s.kind, col.action(s.then) if s.then is not None else None, targets.get("next", END_AT), s.wait,
            col.unless(s.wait_for), targets.get("yes", END_AT), targets.get("no", END_AT), cond, tuple(split)))
    return tuple(out)


def _compile_rule(rule: Rule, env: Env, errors: list[RuleError], profile_attrs: set[str],
                  budget: _Budget, ruleset: RuleSet, left_out: LeftOut) -> CompiledRule:
    """The class of the rule's kind, decided from its shape (not its `type:` family)."""
    col = _Collector(rule, env, errors, profile_attrs, budget, ruleset, left_out)
    cond = None
    if rule.condition is not None:
        line = Source(rule.source.file, rule.condition_line or rule.source.line)
        cond = col.expr(rule.condition, line, "if")
    then = col.action(rule.then) if rule.then is not None else None
    unless = col.unless(rule.unless)
    steps: tuple[CompiledStep, ...] = ()
    if rule.steps and rule.type != RuleType.RECURRING and not rule.inactive:
        steps = tuple(
            CompiledStep(
                step.after,
                col.expr(step.condition, Source(step.source.file, step.condition_line or step.source.line),
                         f"step {i + 1} if") if step.condition else None,
                col.action(step.then),
                col.unless(step.unless),
            )
            for i, step in enumerate(rule.steps)
        )
    if rule.journey is not None:
        journey_steps = _journey_steps(rule, col)
        return JourneyRule(rule, cond, journey_steps, tuple(sorted(col.event_props)))
    ctx_props = tuple(sorted(col.event_props))   # cause-event properties a timer must carry
    if rule.type == RuleType.RECURRING:
        assert then is not None
        date_attr = (rule.date or "").removeprefix("profile.")
        profile_attrs.add(date_attr)
        profile_attrs.add("timezone")
        return RecurringRule(rule, cond, then, date_attr)
    if rule.inactive:
        assert then is not None
        if col.event_props:
            # the deadline follows from the latest event time alone; no event is kept for it
            props = ", ".join(f"event.{p}" for p in sorted(col.event_props))
            errors.append(RuleError(rule.source.file, rule.source.line,
                                    f"an inactivity rule fires when no event came, so it cannot read {props}; "
                                    "use aggregates (e.g. last_active) or profile attributes", rule.id))
        of = () if ANY_EVENT in rule.inactive_of else rule.inactive_of
        return InactiveRule(rule, cond, then, rule.inactive, of)
    if steps:
        return SeriesRule(rule, cond, steps, ctx_props)
    assert then is not None   # the loader requires `then:` of a rule without steps
    if unless is not None and rule.unless is not None:
        return AbsenceRule(rule, cond, then, rule.unless.within or 0, unless, ctx_props)
    if rule.delay:
        return DelayRule(rule, cond, then, rule.delay, ctx_props)
    if rule.type == RuleType.THRESHOLD:
        return CrossingRule(rule, cond, then)
    return ImmediateRule(rule, cond, then)
