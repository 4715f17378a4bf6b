"""`triggers explain`: why a customer got (or did not get) each trigger.

Two sources of a customer's state:
- a backtest: only this customer's events are replayed (customers are independent, so the
  result is what a full `triggers backtest` computes for them), through the same
  `Evaluator` as everywhere, traced on the way: the last evaluation of each rule's `if:`,
  waits cancelled or re-armed, sends deferred by quiet hours. The explain time is the
  customer's last event (or `--until` / `--at`); deadlines due by then fire, later ones are
  shown as waiting (a backtest fires one-shot deadlines at the end of the file);
- live: the state the engine keeps in Redis, read once and never written; the explain time
  is now (or `--at`). There is no trigger history then, only what the state remembers
  (last contact per rule, open triggers, armed thresholds, pending deadlines).

Conditions are shown as the rules read them at the explain time: each top-level `and`/`or`
part with its value, and for comparisons the values of their operands, each compiled on its
own with the same expression compiler (anything unusual: the whole expression's value only).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import msgspec

from engine.errors import EngineError
from engine.rules.aggregates import decayed_top
from engine.core.calendar import parse_date
from engine.events.decode import EventDecoder, read_jsonl
from engine.core.evaluate import DEFER_KEY, Evaluator
from engine.events.model import Event
from engine.rules.compiler import (
    ABSENCE, DELAY, IMMEDIATE, INACTIVE, RECURRING, SERIES, CompiledRule, CompiledRules, load_and_compile,
)
from engine.rules.errors import RulesInvalid, did_you_mean
from engine.rules.expr import Env, compile_expr
from engine.rules.model import ANY_EVENT
from engine.state.customer import CustomerState, Timer
from engine.core.times import format_duration, format_ts, now_ms, parse_ts
from engine.actions.trigger import HELD_OUT, SENT, SUPPRESSED, Trigger

__all__ = [
    "AggregateValue", "ConditionCheck", "ConditionPart", "Explanation", "ExplainError", "Operand",
    "RuleExplanation", "StateView", "TimerView", "TriggerView", "UnknownCustomer", "add_parser",
    "explain_customer", "print_explanation",
]

NOTES = 8   # notable moments kept per rule (the latest)
_BATCH = 2000


class ExplainError(EngineError):
    """A request that cannot be explained; `exit_code` follows the CLI's convention."""

    exit_code = 2


class UnknownCustomer(ExplainError):
    exit_code = 1


# -- the result ----------------------------------------------------------------------------------

class AggregateValue(msgspec.Struct, omit_defaults=False):
    name: str
    definition: str         # "sum of amount on purchase", "count of product_view over 7d", …
    value: Any              # as the rules read it at the explain time
    display: str            # the value for people (timestamps as RFC 3339, decayed counts rounded)


class ConsentView(msgspec.Struct, omit_defaults=False):
    channel: str
    granted: bool | None    # None: no decision recorded
    at: str | None          # when the decision was made (event time)
    effect: str             # "contacted", "suppressed (no_consent)"


class ContactView(msgspec.Struct, omit_defaults=False):
    at: str
    channel: str


class OpenTriggerView(msgspec.Struct, omit_defaults=False):
    rule_id: str
    at: str
    held_out: bool
    responded: bool
    converted: bool
    until: str              # end of its attribution window


class StateView(msgspec.Struct, omit_defaults=False):
    last_event_at: str | None
    aggregates: list[AggregateValue]
    profile: dict[str, Any]
    consent: list[ConsentView]            # every channel the rules use, and any other with a decision
    contacts: list[ContactView]           # recent contacts counted by frequency caps
    last_contact: dict[str, str]          # rule id -> its last sent or held-out trigger (cooldown)
    open_triggers: list[OpenTriggerView]  # sent/held-out triggers whose attribution window is still open
    armed: list[str]                      # threshold rules whose condition is currently true


class TimerView(msgspec.Struct, omit_defaults=False):
    rule_id: str
    step: int               # 1-based step of a series; 1 otherwise
    due: str
    what: str               # "deadline", "deferred send (quiet hours)", "occurrence 2026-05-04"
    cause: str              # event id that armed it (occurrence date for recurring)
    cause_at: str
    overdue: bool           # live: due before the explain time, not yet fired by the engine


class Operand(msgspec.Struct, omit_defaults=False):
    text: str
    value: Any


class ConditionPart(msgspec.Struct, omit_defaults=False):
    text: str
    holds: bool
    value: Any
    operands: list[Operand] = []   # comparisons: the values compared (constants left out)


class ConditionCheck(msgspec.Struct, omit_defaults=False):
    expression: str
    holds: bool
    value: Any
    joiner: str | None             # "and" / "or" between the parts; None: one part
    parts: list[ConditionPart]
    event_id: str | None           # the event the `event.*` reads came from (None: read as missing)
    at: str                        # the `now` it was evaluated at
    note: str | None = None        # when the parts disagree with the whole (a data error voids it all)
    reads_event: bool = False      # the expression reads event.* (else `event_id` does not matter)


class TriggerView(msgspec.Struct, omit_defaults=False):
    trigger_id: str
    action: str
    channel: str
    status: str
    reason: str | None
    fired_at: str
    cause_event_id: str
    payload: dict[str, Any]
    why: str                       # the status in words, with the policy detail that decided it


class RuleExplanation(msgspec.Struct, omit_defaults=False):
    rule_id: str
    type: str                      # threshold / transactional / behavioral / recurring
    kind: str                      # immediate / absence / delay / series / inactive / recurring
    shape: str                     # how it fires, in words
    summary: str                   # the verdict in one line
    condition: ConditionCheck | None
    triggers: list[TriggerView]    # backtest: this customer's triggers of the rule
    timers: list[TimerView]
    last_contact: str | None
    notes: list[str]               # backtest: notable moments (cancelled waits, false conditions, …)


class Explanation(msgspec.Struct, omit_defaults=False):
    customer_id: str
    source: str                    # "backtest" or "live"
    where: str                     # the events file, or the Redis URL and key
    at: str                        # the explain time
    at_basis: str                  # "last event", "--at", "--until", "now"
    events: int                    # backtest: this customer's events replayed
    state: StateView
    timers: list[TimerView]
    rules: list[RuleExplanation]


# -- entry point ---------------------------------------------------------------------------------

def explain_customer(
    rules: CompiledRules | str | Path,
    customer_id: str,
    *,
    events: str | Path | Iterable[Event] | None = None,
    state: CustomerState | None = None,
    rule_id: str | None = None,
    until: int | str | None = None,
    at: int | str | None = None,
    where: str | None = None,
) -> Explanation:
    """Explain one customer, from a backtest of `events` (a JSONL file or decoded events) or
    from a live `state` (e.g. loaded with `RedisStore.load_many`); exactly one of them.

    `until`: backtest only, events after it are not replayed (as in `triggers backtest`).
    `at`: the explain time (epoch ms or RFC 3339); default: the customer's last event (or
    `until`) for a backtest, the wall clock for a live state.
    Raises UnknownCustomer when the customer has no event / no state, ExplainError when a
    `rule_id` does not exist or the arguments do not fit, RulesInvalid for invalid rules.
    """
    compiled = rules if isinstance(rules, CompiledRules) else load_and_compile(rules)
    if (events is None) == (state is None):
        raise ExplainError("give either events (a backtest) or a state (live), not both or neither")
    if rule_id is not None and rule_id not in compiled.by_id:
        raise ExplainError(f"no rule '{rule_id}' in the rules{did_you_mean(rule_id, compiled.by_id)}; "
                           f"the rules are: {', '.join(compiled.by_id)}")
    until_ms = _ms(until, "until")
    at_ms = _ms(at, "at")
    selected = [compiled.by_id[rule_id]] if rule_id else list(compiled.rules)
    if events is not None:
        evs = _customer_events(events, customer_id)
        if until_ms is not None:
            evs = _before(evs, until_ms)
        if not evs:
            raise UnknownCustomer(_no_events(events, customer_id, until_ms))
        basis = "--at" if at_ms is not None else ("--until" if until_ms is not None else "last event")
        if at_ms is None:
            at_ms = until_ms if until_ms is not None else max(e.ts for e in evs)
        evs = _before(evs, at_ms)
        trace = _Trace(compiled, customer_id)
        trace.replay(evs, at_ms)
        st = trace.state if trace.state is not None else CustomerState()   # --at before the first event
        source, n_events = "backtest", len(evs)
        where = where or (str(events) if isinstance(events, (str, Path)) else "events")
    else:
        if until_ms is not None:
            raise ExplainError("--until applies to a backtest (--events), not to a live state")
        assert state is not None
        trace = None
        st = state
        basis = "--at" if at_ms is not None else "now"
        if at_ms is None:
            at_ms = now_ms()
        source, n_events = "live", 0
        where = where or "state"
    env = _env(compiled)
    timers = _timers(compiled, st, at_ms, live=trace is None)
    return Explanation(
        customer_id=customer_id, source=source, where=where, at=format_ts(at_ms), at_basis=basis,
        events=n_events, state=_state_view(compiled, st, at_ms),
        timers=timers,
        rules=[_explain_rule(compiled, env, r, st, at_ms, timers, trace) for r in selected],
    )


def _ms(value: int | str | None, what: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_ts(value)
    except ValueError as e:
        raise ExplainError(f"--{what}: {e}") from None


def _before(events: list[Event], cutoff: int) -> list[Event]:
    """Events in file order up to the first one after `cutoff` (as a backtest's --until stops)."""
    for i, ev in enumerate(events):
        if ev.ts > cutoff:
            return events[:i]
    return events


def _customer_events(events: str | Path | Iterable[Event], customer_id: str) -> list[Event]:
    """This customer's events, in file order. A file is pre-filtered on the raw bytes (a line
    that does not contain the id cannot be the customer's), so only candidate lines are decoded."""
    if not isinstance(events, (str, Path)):
        return [e for e in events if e.customer_id == customer_id]
    if str(events) != "-" and not Path(events).is_file():
        raise ExplainError(f"no such events file: {events}")
    needle = customer_id.encode()
    # An id that JSON may write with escapes cannot be pre-filtered on bytes: decode every line.
    prefilter = customer_id.isascii() and customer_id.isprintable() and not any(c in customer_id for c in '"\\/')
    decoder = EventDecoder()
    found: list[Event] = []
    batch: list[tuple[bytes, str]] = []
    for raw, src in read_jsonl(events):
        if prefilter and needle not in raw:
            continue
        batch.append((raw, src))
        if len(batch) >= _BATCH:
            found += [e for e in decoder.decode_batch(batch)[0] if e.customer_id == customer_id]
            batch = []
    if batch:
        found += [e for e in decoder.decode_batch(batch)[0] if e.customer_id == customer_id]
    return found


def _no_events(events: str | Path | Iterable[Event], customer_id: str, until: int | None) -> str:
    upto = f" up to {format_ts(until)}" if until is not None else ""
    if not isinstance(events, (str, Path)) or str(events) == "-":
        return f"customer '{customer_id}' has no events{upto}"
    ids: set[str] = set()
    decoder = EventDecoder()
    batch: list[tuple[bytes, str]] = []
    for item in read_jsonl(events):   # the error path only: find a close id to suggest
        batch.append(item)
        if len(batch) >= _BATCH:
            ids.update(e.customer_id for e in decoder.decode_batch(batch)[0])
            batch = []
    ids.update(e.customer_id for e in decoder.decode_batch(batch)[0])
    return f"customer '{customer_id}' has no events in {events}{upto}{did_you_mean(customer_id, ids)}"


def _env(rules: CompiledRules) -> Env:
    """The names `if:` expressions compile against, as the rules compiler builds them."""
    aggs = rules.ruleset.aggregates
    return Env(aggregates=rules.readers,
               tops={a.name: decayed_top(a) for a in aggs.values() if a.kind == "decayed_count"})


# -- tracing a backtest ----------------------------------------------------------------------

class _RuleTrace:
    __slots__ = ("starts", "evaluations", "true", "last_eval", "notes")

    def __init__(self) -> None:
        self.starts = 0                   # events of the rule's `on` types applied
        self.evaluations = 0
        self.true = 0
        self.last_eval: tuple[Event, bool] | None = None
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)
        if len(self.notes) > NOTES:
            del self.notes[0]


class _Trace:
    """Replays one customer's events through an `Evaluator`, recording why rules did what.

    Deadlines due before an event fire first, as `Replay` fires them; the state's timers are
    compared around each step to tell a fired deadline from a cancelled or re-armed one.
    """

    def __init__(self, rules: CompiledRules, customer_id: str) -> None:
        self.rules = rules
        self.customer_id = customer_id
        self.evaluator = Evaluator(rules)
        self.state: CustomerState | None = None
        self.triggers: list[Trigger] = []
        self.last_by_type: dict[str, Event] = {}
        self.last_event: Event | None = None
        self.rule: dict[str, _RuleTrace] = {r.id: _RuleTrace() for r in rules.rules}
        self._idle_noted: set[str] = set()   # inactivity rules noted since the latest event

    def replay(self, events: list[Event], at: int) -> None:
        ev_ = self.evaluator
        for ev in events:
            if self.state is not None and self.state.timers:
                self._time(ev.ts - 1)
            duplicates = ev_.counters.duplicates
            before = list(self.state.timers) if self.state is not None else []
            out: list[Trigger] = []
            self.state = ev_.on_event(self.state, ev, out)
            self.triggers += out
            if ev_.counters.duplicates != duplicates:
                continue
            self.last_by_type[ev.type] = ev
            self.last_event = ev
            self._idle_noted.clear()
            for rule in self.rules.plan(ev.type).rules:
                tr = self.rule[rule.id]
                tr.starts += 1
                if rule.cond is not None:
                    holds = bool(rule.cond(self.state, ev, ev.ts))
                    tr.evaluations += 1
                    tr.true += holds
                    tr.last_eval = (ev, holds)
                    if not holds and rule.kind is not IMMEDIATE:
                        tr.note(f"{format_ts(ev.ts)} {ev.type} {ev.event_id}: condition false, not started")
            self._removed(before, ev)
            self._deferred(before, out)
        if self.state is not None:
            self._time(at)

    def _time(self, now: int) -> None:
        state = self.state
        assert state is not None
        before = list(state.timers)
        out: list[Trigger] = []
        self.evaluator.on_time(state, self.customer_id, now, out)
        self.triggers += out
        kept = {id(t) for t in state.timers}
        old = {id(t) for t in before}
        fired_rules = {t.rule_id for t in out}
        deferred_rules = {t.rule for t in state.timers if t.key == DEFER_KEY and id(t) not in old}
        for t in before:
            if id(t) in kept or t.rule not in self.rule:
                continue
            if t.rule not in fired_rules and t.rule not in deferred_rules:
                rule = self.rules.by_id[t.rule]
                what = f"step {t.step + 1}" if rule.kind is SERIES else "deadline"
                self.rule[t.rule].note(f"{format_ts(t.due)} {what} due (cause {t.cause}): its condition was false, "
                                       "nothing sent")
        idle_fired = getattr(state, "idle_fired", ())
        for rule in self.rules.inactive:
            if rule.id in idle_fired and rule.id not in fired_rules and rule.id not in deferred_rules \
                    and rule.id not in self._idle_noted:
                self._idle_noted.add(rule.id)
                self.rule[rule.id].note(f"{format_ts(state.last_ts + rule.wait)} inactivity due: its condition was "
                                        "false, nothing sent")
        self._deferred(before, out)

    def _removed(self, before: list[Timer], ev: Event) -> None:
        """Timers an event removed: cancelled by an `unless` event, re-armed by a newer cause,
        or rescheduled (recurring) after a profile change."""
        state = self.state
        assert state is not None
        kept = {id(t) for t in state.timers}
        for t in before:
            if id(t) in kept or t.key == DEFER_KEY or t.rule not in self.rule:
                continue
            rule = self.rules.by_id[t.rule]
            unless = rule.unless_for_step(t.step)
            due = format_ts(t.due)
            step = f"step {t.step + 1} " if rule.kind is SERIES else ""
            if unless is not None and ev.type in unless.events:
                text = (f"cancelled: {ev.type} {ev.event_id} at {format_ts(ev.ts)} came before the {step}deadline "
                        f"{due} (cause {t.cause})")
            elif ev.type in rule.rule.on or ANY_EVENT in rule.rule.on:
                text = (f"re-armed: a newer {ev.type} {ev.event_id} at {format_ts(ev.ts)} replaced the {step}wait "
                        f"due {due} (cause {t.cause})")
            elif rule.kind is RECURRING:
                text = f"rescheduled after a profile change ({ev.event_id} at {format_ts(ev.ts)})"
            else:
                text = f"wait due {due} removed by {ev.type} {ev.event_id}"
            self.rule[t.rule].note(text)

    def _deferred(self, before: list[Timer], out: list[Trigger]) -> None:
        state = self.state
        assert state is not None
        old = {id(t) for t in before}
        for t in state.timers:
            if t.key == DEFER_KEY and id(t) not in old and t.rule in self.rule:
                self.rule[t.rule].note(f"{format_ts(t.ctx.get('deferred_at', t.cause_ts))}: inside quiet hours, "
                                       f"deferred to {format_ts(t.due)}")


# -- views ---------------------------------------------------------------------------------------

def _agg_definition(agg: Any) -> str:
    on = "every event" if ANY_EVENT in agg.on else " or ".join(agg.on)
    window = f" over {format_duration(agg.window)}" if agg.window else ""
    if agg.kind == "sum":
        return f"sum of {agg.field} on {on}{window}"
    if agg.kind == "count":
        return f"count of {on}{window}"
    if agg.kind == "last":
        return f"last {'event time' if agg.field == 'ts' else agg.field} on {on}"
    return f"decayed count of {on} by {agg.by}, half-life {format_duration(agg.half_life or 0)}"


def _fmt(value: Any) -> str:
    """A value for people: numbers without float noise, null as `missing`, JSON otherwise."""
    if value is None:
        return "missing"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e15 else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: (-kv[1], str(kv[0]))) if all(
            isinstance(v, (int, float)) for v in value.values()) else list(value.items())
        return "{" + ", ".join(f"{_fmt(str(k))}: {_fmt(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _state_view(rules: CompiledRules, st: CustomerState, at: int) -> StateView:
    aggs = []
    for agg in rules.ruleset.aggregates.values():
        try:
            value = rules.readers[agg.name](st, at)
        except Exception as e:   # a state written by other rules: show it, do not fail the explanation
            value = None
            display = f"unreadable ({type(e).__name__})"
        else:
            display = _fmt(value)
            if agg.kind == "last" and agg.field == "ts" and isinstance(value, int):
                display = f"{format_ts(value)} ({value})"
        aggs.append(AggregateValue(agg.name, _agg_definition(agg), value, display))
    policy = rules.ruleset.policy
    required = policy is not None and policy.consent == "required"
    channels = sorted({a.channel for r in rules.rules for a in _actions(r)} | set(st.consent))
    consent = []
    for ch in channels:
        decision = st.consent.get(ch)
        if decision is None:
            consent.append(ConsentView(ch, None, None, "suppressed (no_consent: consent required)" if required
                                       else "contacted (no decision; consent optional)"))
        else:
            granted = bool(decision[0])
            consent.append(ConsentView(ch, granted, format_ts(decision[1]),
                                       "contacted" if granted else "suppressed (no_consent: opted out)"))
    return StateView(
        last_event_at=format_ts(st.last_ts) if st.last_ts else None,
        aggregates=aggs,
        profile=dict(st.profile),
        consent=consent,
        contacts=[ContactView(format_ts(c[0]), str(c[1])) for c in st.contacts],
        last_contact={r: format_ts(ts) for r, ts in st.sent.items()},
        open_triggers=[OpenTriggerView(str(e[0]), format_ts(e[1]), bool(e[2]), bool(e[3]), bool(e[4]),
                                       format_ts(e[5])) for e in st.open_triggers if len(e) >= 6 and e[5] >= at],
        armed=list(st.armed),
    )


def _actions(rule: CompiledRule) -> list[Any]:
    return [rule.then] if rule.then is not None else [s.then for s in rule.steps]


def _timers(rules: CompiledRules, st: CustomerState, at: int, live: bool) -> list[TimerView]:
    views = []
    for t in sorted(st.timers, key=lambda t: (t.due, t.rule, t.step)):
        rule = rules.by_id.get(t.rule)
        if t.key == DEFER_KEY:
            what = "deferred send (quiet hours)"
        elif rule is not None and rule.kind is RECURRING:
            what = f"occurrence {t.cause}"
        elif rule is None:
            what = "deadline of a rule no longer in the rules (lapses)"
        else:
            what = {ABSENCE: "absence deadline", DELAY: "delay", SERIES: "series step", INACTIVE: "inactivity"}.get(
                rule.kind, "deadline")
        views.append(TimerView(t.rule, t.step + 1, format_ts(t.due), what, t.cause, format_ts(t.cause_ts),
                               live and t.due <= at))
    # Inactivity deadlines are implicit (the latest event time plus the rule's wait), unless the
    # rule already fired since that event; a stored timer of the rule (older engines) wins.
    stored = {t.rule for t in st.timers}
    idle_fired = getattr(st, "idle_fired", ())
    if st.last_ts:
        for rule in rules.inactive:
            if rule.id not in stored and rule.id not in idle_fired:
                due = st.last_ts + rule.wait
                views.append(TimerView(rule.id, 1, format_ts(due), f"inactivity ({format_duration(rule.wait)} after "
                                       "the latest event)", "latest event", format_ts(st.last_ts), live and due <= at))
    views.sort(key=lambda v: (v.due, v.rule_id, v.step))
    return views


def _shape(rule: CompiledRule) -> str:
    r = rule.rule
    on = " or ".join(f"`{t}`" for t in r.on) if r.on else ""
    cond = " when `if` holds" if r.condition else ""
    if rule.kind is IMMEDIATE:
        if rule.crossing:
            return f"on {on}, once when `if` turns true (crossing); again only after it turned false"
        return f"on {on}{cond}"
    if rule.kind is ABSENCE:
        cancel = " or ".join(f"`{t}`" for t in sorted(rule.unless.events)) if rule.unless else ""
        return f"{format_duration(rule.wait)} after {on}{cond}, unless {cancel} comes first"
    if rule.kind is DELAY:
        return f"{format_duration(rule.wait)} after each {on}{cond}"
    if rule.kind is SERIES:
        return f"series of {len(rule.steps)} steps, started by {on}{cond}"
    if rule.kind is INACTIVE:
        return f"after {format_duration(rule.wait)} without any event"
    at = f"{r.at[0]:02d}:{r.at[1]:02d}"
    return f"every {r.every} on profile.{rule.date_attr} at {at} local time"


def check_condition(text: str, env: Env, st: CustomerState, ev: Event | None, now: int) -> ConditionCheck:
    """Evaluate an `if:` expression and, separately, its top-level and/or parts and the
    operands of comparisons. Whatever cannot be split is shown as the whole expression."""
    compiled = compile_expr(text, env)
    whole = compiled.fn(st, ev, now)
    reads_event = bool(compiled.event_props) or "event." in text
    joiner: str | None = None
    parts: list[ConditionPart] = []
    try:
        stripped = text.strip()
        body = ast.parse(stripped, mode="eval").body
        nodes = [body]
        if isinstance(body, ast.BoolOp):
            joiner = "and" if isinstance(body.op, ast.And) else "or"
            nodes = list(body.values)
        for node in nodes:
            seg = ast.get_source_segment(stripped, node)
            if seg is None:
                raise ValueError("no source")
            value = _evaluate(seg, env, st, ev, now)
            operands: list[Operand] = []
            if isinstance(node, ast.Compare):
                for sub in (node.left, *node.comparators):
                    sub_text = ast.get_source_segment(stripped, sub)
                    if sub_text is None or _is_constant(sub):
                        continue
                    operands.append(Operand(sub_text, _evaluate(sub_text, env, st, ev, now)))
            parts.append(ConditionPart(seg, bool(value), value, operands))
    except Exception:   # unusual syntax or a compiler refusing a piece: the whole value only
        joiner = None
        parts = [ConditionPart(text.strip(), bool(whole), whole, [])]
    note = None
    if len(parts) > 1:
        combined = all(x.holds for x in parts) if joiner == "and" else any(x.holds for x in parts)
        if combined != bool(whole):
            note = ("the parts say " + _fmt(combined) + ", the whole expression is " + _fmt(bool(whole)) +
                    ": a missing or ill-typed value makes the engine treat the whole `if:` as false")
    return ConditionCheck(text.strip(), bool(whole), whole, joiner, parts,
                          ev.event_id if ev is not None else None, format_ts(now), note, reads_event)


def _evaluate(text: str, env: Env, st: CustomerState, ev: Event | None, now: int) -> Any:
    return compile_expr(text, env).fn(st, ev, now)


def _is_constant(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _explain_rule(rules: CompiledRules, env: Env, rule: CompiledRule, st: CustomerState, at: int,
                  timers: list[TimerView], trace: _Trace | None) -> RuleExplanation:
    r = rule.rule
    condition = None
    if r.condition:
        ev = _condition_event(rule, trace)
        condition = check_condition(r.condition, env, st, ev, at)
    mine = [t for t in trace.triggers if t.rule_id == rule.id] if trace is not None else []
    views = [_trigger_view(rules, rule, t, trace.triggers if trace else [], st) for t in mine]
    my_timers = [t for t in timers if t.rule_id == rule.id]
    last_contact = format_ts(st.sent[rule.id]) if rule.id in st.sent else None
    tr = trace.rule.get(rule.id) if trace is not None else None
    summary = _summary(rule, views, my_timers, tr, st, condition, last_contact, trace is not None)
    return RuleExplanation(
        rule_id=rule.id, type=r.type, kind=rule.kind, shape=_shape(rule), summary=summary, condition=condition,
        triggers=views, timers=my_timers, last_contact=last_contact, notes=list(tr.notes) if tr else [],
    )


def _condition_event(rule: CompiledRule, trace: _Trace | None) -> Event | None:
    """The latest event the rule runs on (event.* reads come from it); None live."""
    if trace is None:
        return None
    on = rule.rule.on
    if ANY_EVENT in on:
        return trace.last_event
    found = [trace.last_by_type[t] for t in on if t in trace.last_by_type]
    return max(found, key=lambda e: e.ts) if found else None


def _trigger_view(rules: CompiledRules, rule: CompiledRule, t: Trigger, all_triggers: list[Trigger],
                  st: CustomerState) -> TriggerView:
    return TriggerView(t.trigger_id, t.action, t.channel, t.status, t.reason, t.fired_at, t.cause_event_id,
                       t.payload, _why(rules, rule, t, all_triggers, st))


def _why(rules: CompiledRules, rule: CompiledRule, t: Trigger, all_triggers: list[Trigger], st: CustomerState) -> str:
    policy = rules.ruleset.policy
    if t.status == SENT:
        return "sent"
    if t.status == HELD_OUT:
        share = rule.rule.control_group
        scope = "this rule's" if share is not None else "the global"
        if share is None and policy is not None:
            share = policy.control_group
        return f"held out: the customer is in {scope} control group ({_pct(share)}): recorded, not sent"
    reason = t.reason or ""
    if reason == "no_consent":
        return f"suppressed (no_consent): no opt-in for {t.channel} at {t.fired_at}"
    if reason == "cooldown":
        previous = [p for p in all_triggers if p.rule_id == rule.id and p.status in (SENT, HELD_OUT)
                    and p.fired_at < t.fired_at]
        since = f", the previous contact at {previous[-1].fired_at}" if previous else ""
        return f"suppressed (cooldown): within {format_duration(rule.cooldown)} of the rule's last contact{since}"
    if reason == "priority":
        winners = sorted({p.rule_id for p in all_triggers if p.fired_at == t.fired_at and p.rule_id != rule.id
                          and p.status != SUPPRESSED})
        by = f": {', '.join(winners)} won the same moment" if winners else ""
        return f"suppressed (priority): another trigger of higher priority{by}"
    if reason == "quiet_hours_dropped" and policy is not None and policy.quiet_hours is not None:
        q = policy.quiet_hours
        tz = st.profile.get("timezone") or "UTC"
        return (f"suppressed (quiet_hours_dropped): inside quiet hours {q.start[0]:02d}:{q.start[1]:02d}–"
                f"{q.end[0]:02d}:{q.end[1]:02d} ({tz}), mode drop")
    if reason == "frequency_cap" and policy is not None:
        caps = [c for c in policy.frequency_caps if c.channel in (t.channel, "*")]
        text = "; ".join(f"at most {c.max} {c.channel if c.channel != '*' else 'contacts'} per "
                         f"{format_duration(c.per)}" for c in caps)
        return f"suppressed (frequency_cap): {text}" if text else "suppressed (frequency_cap)"
    return f"suppressed ({reason})"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:g}%"


def _summary(rule: CompiledRule, triggers: list[TriggerView], timers: list[TimerView], tr: _RuleTrace | None,
             st: CustomerState, condition: ConditionCheck | None, last_contact: str | None, backtest: bool) -> str:
    pieces: list[str] = []
    if triggers:
        counts: dict[str, int] = {}
        for t in triggers:
            key = f"{t.status} ({t.reason})" if t.reason else t.status
            counts[key] = counts.get(key, 0) + 1
        pieces.append(", ".join(f"{k} ×{n}" if n > 1 else k for k, n in counts.items()))
    for t in timers:
        label = "overdue" if t.overdue else "waiting"
        step = f"step {t.step}, " if rule.kind is SERIES else ""
        pieces.append(f"{label}: {step}due {t.due}" + (" (deferred by quiet hours)" if "deferred" in t.what else ""))
    if pieces:
        return "; ".join(pieces)
    on = " or ".join(f"`{t}`" for t in rule.rule.on)
    if rule.kind is RECURRING:
        if parse_date(st.profile.get(rule.date_attr)) is None:
            return f"never scheduled: no usable profile.{rule.date_attr}"
        return "no occurrence scheduled"
    if rule.kind is INACTIVE:
        if not st.last_ts:
            return "never started: no event"
        if rule.id in getattr(st, "idle_fired", ()):
            return "fired since the latest event (its condition was false then)"
        return "no inactivity deadline pending"
    if backtest and tr is not None:
        if tr.starts == 0:
            return f"never started: no {on} event"
        if tr.last_eval is not None and not tr.last_eval[1]:
            ev = tr.last_eval[0]
            return f"condition false at its last evaluation ({ev.type} {ev.event_id} at {format_ts(ev.ts)})"
        cancelled = [n for n in tr.notes if n.startswith("cancelled")]
        if cancelled:
            return cancelled[-1]
        if tr.notes:
            return tr.notes[-1]
        return "no trigger"
    # live: only what the state remembers
    if rule.crossing:
        if rule.id in st.armed:
            return ("armed: its condition was true at its last evaluation (it fired then); "
                    "it fires again only after the condition turns false")
        return "not armed: its condition was false at its last evaluation, or the rule has not run yet"
    if last_contact:
        return f"no deadline pending; last contact {last_contact}"
    return "no deadline pending and no contact recorded"


# -- output --------------------------------------------------------------------------------------

def print_explanation(e: Explanation, stream: TextIO) -> None:
    """The readable report: state, pending timers, then one block per rule."""
    def p(text: str = "") -> None:
        print(text, file=stream)

    basis = f"{e.at} ({e.at_basis})"
    if e.source == "backtest":
        p(f"customer {e.customer_id}: backtest of {e.where}, {e.events:,} of its events, explained at {basis}")
    else:
        p(f"customer {e.customer_id}: live state from {e.where}, explained at {basis}")
    s = e.state
    p()
    p("state")
    p(f"  last event     {s.last_event_at or '-'}")
    width = max([0] + [len(a.name) for a in s.aggregates])
    for i, a in enumerate(s.aggregates):
        label = "aggregates" if i == 0 else ""
        p(f"  {label:<13}  {a.name:<{width}} = {a.display}    ({a.definition})")
    profile = ", ".join(f"{k} = {_fmt(v)}" for k, v in sorted(s.profile.items())) or "-"
    p(f"  profile        {profile}")
    for i, c in enumerate(s.consent):
        label = "consent" if i == 0 else ""
        decided = "no decision" if c.granted is None else (
            f"opted in at {c.at}" if c.granted else f"opted out at {c.at}")
        p(f"  {label:<13}  {c.channel}: {decided} → {c.effect}")
    contacts = ", ".join(f"{c.at} {c.channel}" for c in s.contacts) or "-"
    p(f"  contacts       {contacts}")
    last = ", ".join(f"{r} {ts}" for r, ts in sorted(s.last_contact.items())) or "-"
    p(f"  last contact   {last}")
    if s.open_triggers:
        for i, o in enumerate(s.open_triggers):
            label = "open triggers" if i == 0 else ""
            flags = ", ".join(x for x, on in (("held out", o.held_out), ("responded", o.responded),
                                               ("converted", o.converted)) if on) or "no response yet"
            p(f"  {label:<13}  {o.rule_id} at {o.at}, awaiting responses until {o.until} ({flags})")
    else:
        p("  open triggers  -")
    if s.armed:
        p(f"  armed          {', '.join(s.armed)}  (threshold conditions currently true)")
    p()
    p("pending timers" + ("" if e.timers else "  -"))
    if e.timers:
        rw = max(len(t.rule_id) for t in e.timers)
        for t in e.timers:
            over = "  OVERDUE" if t.overdue else ""
            cause = "" if t.what.startswith("occurrence") else f", cause {t.cause} at {t.cause_at}"
            p(f"  {t.rule_id:<{rw}}  step {t.step}  due {t.due}  {t.what}{cause}{over}")
        if e.source == "backtest":
            p("  (a `triggers backtest` ending here fires the pending one-shot deadlines at the end of the file)")
    for r in e.rules:
        p()
        p(f"{r.rule_id}  ({r.type}: {r.shape})")
        p(f"  → {r.summary}")
        if r.condition is not None:
            c = r.condition
            src = "" if not c.reads_event else (
                f"with event {c.event_id}, " if c.event_id else "with no event: event.* read as missing, ")
            p(f"  if {c.expression}  → {_fmt(c.holds)} now ({src}at {c.at})")
            if len(c.parts) > 1 or c.parts and c.parts[0].operands:
                tw = max(len(x.text) for x in c.parts)
                for i, part in enumerate(c.parts):
                    join = f"{c.joiner} " if i and c.joiner else "    " if c.joiner else ""
                    values = "; ".join(f"{o.text} = {_fmt(o.value)}" for o in part.operands)
                    if not values and not isinstance(part.value, bool):
                        values = f"= {_fmt(part.value)}"
                    shown = f"{values} → {_fmt(part.holds)}" if values else f"→ {_fmt(part.holds)}"
                    p(f"    {join}{part.text:<{tw}}    {shown}")
            if c.note:
                p(f"    ({c.note})")
        if r.last_contact and e.source == "live":
            p(f"  last contact {r.last_contact}")
        if r.triggers:
            p("  triggers")
            for t in r.triggers:
                p(f"    {t.fired_at}  {t.action} ({t.channel})  {t.why}  [cause {t.cause_event_id}]")
        elif e.source == "backtest":
            p("  triggers: none")
        for note in r.notes:
            p(f"    · {note}")


# -- command line --------------------------------------------------------------------------------

DESCRIPTION = """\
Explain one customer: the state the rules read (aggregates at the explain time, profile,
consent per channel, recent contacts, open triggers awaiting responses), the pending timers,
and per rule whether its `if:` holds now (each and/or part with the values it compares) and
why it did or did not fire: its triggers with their status and the policy check that decided
them (cooldown, no_consent, frequency_cap, priority, quiet hours, control group), or why it
never started, was cancelled, or is still waiting.

From a backtest (--events): only this customer's events are replayed; the explain time is
their last event, --until or --at. Live (--redis-url): the state the engine keeps in Redis,
read only; the explain time is now or --at.
"""

EPILOG = """\
examples:
  triggers explain --rules rules/ --events examples/sample-events.jsonl --customer c-31
  triggers explain --rules rules/ --events events.jsonl --customer c-31 --rule cart-abandoned --json
  triggers explain --rules rules/ --events events.jsonl --customer c-31 --until 2026-02-01T00:00:00Z
  triggers explain --rules rules/ --redis-url redis://127.0.0.1:6379/0 --prefix te --customer c-31

exit status: 0 explained, 1 no such customer (no events / no state) or invalid rules,
2 bad usage (no such rule, events file, bad time, Redis unreachable).
"""


def add_parser(subparsers: Any) -> None:
    """Register `triggers explain` on the `triggers` command's subparsers."""
    p = subparsers.add_parser(
        "explain", help="why a customer got (or did not get) each trigger: state, timers, conditions, policy",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rules", required=True, metavar="RULES_DIR", help="rules directory (or one file)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", metavar="FILE", help="backtest: JSONL events, native or Segment form ('-' = stdin)")
    source.add_argument("--redis-url", metavar="URL", help="live: the Redis holding the engine's state, "
                        "e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--prefix", default="te", help="live: the key prefix of the engine's state (default: te)")
    p.add_argument("--cluster", action="store_true", help="live: --redis-url names a node of a Redis Cluster")
    p.add_argument("--customer", required=True, metavar="ID", help="the customer id")
    p.add_argument("--rule", metavar="ID", help="explain only this rule")
    p.add_argument("--until", metavar="TIME", help="backtest: events after it (RFC 3339) are not replayed")
    p.add_argument("--at", metavar="TIME", help="the explain time (RFC 3339); default: the customer's last "
                   "event (backtest), now (live)")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    err = sys.stderr
    if args.redis_url and args.until:
        print("triggers explain: --until applies to a backtest (--events); live, use --at", file=err)
        return 2
    try:
        rules = load_and_compile(args.rules)
    except RulesInvalid as e:
        for error in e.errors:
            print(error, file=err)
        print(f"triggers explain: {len(e.errors)} error(s) in {args.rules}", file=err)
        return 1
    try:
        if args.events:
            explanation = explain_customer(rules, args.customer, events=args.events, rule_id=args.rule,
                                           until=args.until, at=args.at)
        else:
            if args.rule is not None and args.rule not in rules.by_id:   # before touching Redis
                explain_customer(rules, args.customer, state=CustomerState(), rule_id=args.rule)
            state, where = _load_live(args)
            explanation = explain_customer(rules, args.customer, state=state, rule_id=args.rule, at=args.at,
                                           where=where)
    except ExplainError as e:
        print(f"triggers explain: {e}", file=err)
        return e.exit_code
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(explanation)).decode())
    else:
        print_explanation(explanation, sys.stdout)
    return 0


def _load_live(args: argparse.Namespace) -> tuple[CustomerState, str]:
    import redis

    from engine.state.redis import RedisStore

    try:
        store = RedisStore(args.redis_url, prefix=args.prefix, cluster=args.cluster)
    except ValueError as e:
        raise ExplainError(f"--redis-url {args.redis_url!r}: {e}") from None
    key = store.state_key(args.customer)
    try:
        states = store.load_many([args.customer])
    except redis.RedisError as e:
        raise ExplainError(f"cannot read {key} from Redis at {args.redis_url}: {e}") from None
    except msgspec.DecodeError as e:
        raise UnknownCustomer(f"{key} in Redis at {args.redis_url} is not an engine state: {e}") from None
    finally:
        store.close()
    state = states.get(args.customer)
    if state is None:
        raise UnknownCustomer(f"no state for customer '{args.customer}' in Redis at {args.redis_url} "
                              f"(key {key}; is --prefix {args.prefix!r} the engine's?)")
    return state, f"{args.redis_url} key {key}"
