"""The views of `triggers explain`: the state, the pending timers and, per rule, its shape, its
condition now, its triggers with the policy detail that decided each, and a one-line verdict.

A backtest view reads what the trace was told (engine.offline.explain.trace); a live view has
only the state, so it says only what the state remembers.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.actions.trigger import HELD_OUT, SENT, Trigger
from engine.core.calendar import parse_date
from engine.core.times import format_duration, format_ts
from engine.events.model import Event
from engine.offline.explain.conditions import check_condition
from engine.offline.explain.journey import journey_shape, journey_summary, journey_timer_what, journey_view
from engine.offline.explain.model import (
    AggregateValue,
    ConditionCheck,
    ConsentView,
    ContactView,
    OpenTriggerView,
    RuleExplanation,
    StateView,
    TimerView,
    TriggerView,
)
from engine.offline.explain.render import fmt
from engine.offline.explain.trace import RuleTrace, Trace
from engine.policy.contact import COOLDOWN, FREQUENCY_CAP, NO_CONSENT, PRIORITY, QUIET_HOURS_DROPPED, Decision
from engine.policy.timing import ChannelChoice
from engine.rules.compiler import CompiledRules
from engine.rules.expr import Env
from engine.rules.journey import JourneyRule
from engine.rules.kinds import (
    AbsenceRule,
    CompiledRule,
    DelayRule,
    ImmediateRule,
    InactiveRule,
    Kind,
    RecurringRule,
    SeriesRule,
)
from engine.rules.model import ANY_EVENT
from engine.state.customer import CustomerState


def _agg_definition(agg: Any) -> str:
    where = f" where {agg.where}" if getattr(agg, "where", None) else ""
    return _agg_kind_definition(agg) + where


def _agg_kind_definition(agg: Any) -> str:
    on = "every event" if ANY_EVENT in agg.on else " or ".join(agg.on)
    window = f" over {format_duration(agg.window)}" if agg.window else ""
    by = f" by {agg.by}" if agg.by else ""
    if agg.kind == "sum":
        return f"sum of {agg.field} on {on}{by}{window}"
    if agg.kind == "count":
        return f"count of {on}{by}{window}"
    if agg.kind == "last":
        return f"last {'event time' if agg.field == 'ts' else agg.field} on {on}"
    return f"decayed count of {on} by {agg.by}, half-life {format_duration(agg.half_life or 0)}"




class Unreadable(msgspec.Struct, frozen=True):
    """An aggregate whose stored value these rules' reader cannot read (a state written by other
    rules, e.g. before a reload changed the aggregate's kind)."""

    error: str   # the exception's type name


def read_aggregates(rules: CompiledRules, st: CustomerState, at: int) -> dict[str, Any]:
    """Every aggregate of the rules by name, as the rules read it at `at` (epoch ms): windowed
    sums over the window ending then, decayed counts decayed to then (`CompiledRules.readers`).
    One definition for `triggers explain`, `triggers export` and the profile API, so they cannot
    disagree; a value that cannot be read is an `Unreadable`, never an exception."""
    values: dict[str, Any] = {}
    for name, read in rules.readers.items():
        try:
            values[name] = read(st, at)
        except Exception as e:   # a state written by other rules: show it, do not fail the caller
            values[name] = Unreadable(type(e).__name__)
    return values


def state_view(rules: CompiledRules, st: CustomerState, at: int) -> StateView:
    aggs = []
    values = read_aggregates(rules, st, at)
    for agg in rules.ruleset.aggregates.values():
        value = values[agg.name]
        if isinstance(value, Unreadable):
            display = f"unreadable ({value.error})"
            value = None
        else:
            display = fmt(value, amount=agg.kind == "sum")
            if agg.kind == "last" and agg.field == "ts" and isinstance(value, int):
                display = f"{format_ts(value)} ({value})"
        aggs.append(AggregateValue(agg.name, _agg_definition(agg), value, display))
    policy = rules.ruleset.policy
    required = policy is not None and policy.consent == "required"
    channels = sorted({c for r in rules.rules for a in _actions(r) for c in (a.channels or (a.channel,))}
                      | set(st.consent))
    consent = []
    for ch in channels:
        decision = st.consent.get(ch)
        if decision is None:
            consent.append(ConsentView(ch, None, None, "suppressed (no_consent: consent required)" if required
                                       else "contacted (no decision; consent optional)"))
        else:
            granted = decision.granted
            consent.append(ConsentView(ch, granted, format_ts(decision.at),
                                       "contacted" if granted else "suppressed (no_consent: opted out)"))
    return StateView(
        last_event_at=format_ts(st.last_ts) if st.last_ts else None,
        aggregates=aggs,
        profile=dict(st.profile),
        consent=consent,
        contacts=[ContactView(format_ts(c.at), c.channel) for c in st.contacts],
        last_contact={r: format_ts(ts) for r, ts in st.last_contact.items()},
        open_triggers=[OpenTriggerView(e.rule, format_ts(e.at), e.held_out, e.responded, e.converted,
                                       format_ts(e.until)) for e in st.open_triggers if e.until >= at],
        armed=list(st.armed),
    )


def _actions(rule: CompiledRule) -> list[Any]:
    return list(rule.actions())


DEFERRED_SEND = "deferred send (quiet hours)"   # `TimerView.what` of a send deferred out of quiet hours


def timer_views(rules: CompiledRules, st: CustomerState, at: int, live: bool) -> list[TimerView]:
    views = [TimerView(d.rule, d.step + 1, format_ts(d.due), DEFERRED_SEND, d.cause,
                       format_ts(d.cause_ts), live and d.due <= at) for d in st.deferred]
    for t in sorted(st.timers, key=lambda t: (t.due, t.rule, t.step)):
        rule = rules.by_id.get(t.rule)
        if rule is not None and rule.kind is Kind.RECURRING:
            what = f"occurrence {t.cause}"
        elif rule is None:
            what = "deadline of a rule no longer in the rules (lapses)"
        elif isinstance(rule, JourneyRule):
            what = journey_timer_what(rule, st)
        else:
            what = _TIMER_WHAT.get(rule.kind, "deadline")
        views.append(TimerView(t.rule, t.step + 1, format_ts(t.due), what, t.cause, format_ts(t.cause_ts),
                               live and t.due <= at))
    # Inactivity deadlines are implicit (the latest event time plus the rule's wait), unless the
    # rule already fired since that event; a stored timer of the rule (older engines) wins.
    stored = {t.rule for t in st.timers}
    if st.last_ts:
        for rule in rules.inactive:
            due = rule.due(st) if rule.id not in stored else None
            if due is not None:
                since = due - rule.wait
                latest = f"latest {' or '.join(rule.of)} event" if rule.of else "latest event"
                views.append(TimerView(rule.id, 1, format_ts(due), f"inactivity ({format_duration(rule.wait)} after "
                                       f"the {latest})", latest, format_ts(since), live and due <= at))
    views.sort(key=lambda v: (v.due, v.rule_id, v.step))
    return views


_TIMER_WHAT = {Kind.ABSENCE: "absence deadline", Kind.DELAY: "delay", Kind.SERIES: "series step",
               Kind.INACTIVE: "inactivity"}


def _shape(rule: CompiledRule) -> str:
    r = rule.rule
    on = " or ".join(f"`{t}`" for t in r.on) if r.on else ""
    cond = " when `if` holds" if r.condition else ""
    if isinstance(rule, ImmediateRule):
        if rule.crossing:
            return f"on {on}, once when `if` turns true (crossing); again only after it turned false"
        return f"on {on}{cond}"
    if isinstance(rule, AbsenceRule):
        cancel = " or ".join(f"`{t}`" for t in sorted(rule.unless.events))
        return f"{format_duration(rule.wait)} after {on}{cond}, unless {cancel} comes first"
    if isinstance(rule, DelayRule):
        return f"{format_duration(rule.wait)} after each {on}{cond}"
    if isinstance(rule, SeriesRule):
        return f"series of {len(rule.steps)} steps, started by {on}{cond}"
    if isinstance(rule, JourneyRule):
        return journey_shape(rule, on, cond)
    if isinstance(rule, InactiveRule):
        if rule.of:
            return f"after {format_duration(rule.wait)} without {' or '.join(f'`{t}`' for t in rule.of)}"
        return f"after {format_duration(rule.wait)} without any event"
    assert isinstance(rule, RecurringRule)
    at = f"{r.at[0]:02d}:{r.at[1]:02d}"
    return f"every {r.every} on profile.{rule.date_attr} at {at} local time"


def explain_rule(rules: CompiledRules, env: Env, rule: CompiledRule, st: CustomerState, at: int,
                  timers: list[TimerView], trace: Trace | None) -> RuleExplanation:
    r = rule.rule
    condition = None
    if r.condition:
        ev = _condition_event(rule, trace)
        condition = check_condition(r.condition, env, st, ev, at)
    mine = [t for t in trace.triggers if t.rule_id == rule.id] if trace is not None else []
    views = [_trigger_view(rules, rule, t, trace.decisions.get(t.trigger_id)) for t in mine] if trace else []
    my_timers = [t for t in timers if t.rule_id == rule.id]
    last_contact = format_ts(st.last_contact[rule.id]) if rule.id in st.last_contact else None
    tr = trace.rule.get(rule.id) if trace is not None else None
    journey = None
    if isinstance(rule, JourneyRule):
        journey = journey_view(rule, st, at, trace is None, tr)
        summary = journey_summary(rule, journey, _counts(views), tr, trace is not None)
    else:
        summary = _summary(rule, views, my_timers, tr, st, condition, last_contact, trace is not None)
    return RuleExplanation(
        rule_id=rule.id, type=r.type, kind=rule.kind, shape=_shape(rule), summary=summary, condition=condition,
        triggers=views, timers=my_timers, last_contact=last_contact, notes=list(tr.notes) if tr else [],
        journey=journey,
    )


def _condition_event(rule: CompiledRule, trace: Trace | None) -> Event | None:
    """The latest event the rule runs on (event.* reads come from it); None live."""
    if trace is None:
        return None
    on = rule.rule.on
    if ANY_EVENT in on:
        return trace.last_event
    found = [trace.last_by_type[t] for t in on if t in trace.last_by_type]
    return max(found, key=lambda e: e.ts) if found else None


def _trigger_view(rules: CompiledRules, rule: CompiledRule, t: Trigger, decision: Decision | None) -> TriggerView:
    return TriggerView(t.trigger_id, t.action, t.channel, t.status, t.reason, t.fired_at, t.cause_event_id,
                       t.payload, _why(rules, rule, t, decision), t.step if isinstance(t.step, str) else None)


def _why(rules: CompiledRules, rule: CompiledRule, t: Trigger, decision: Decision | None) -> str:
    """The status in words, from the fact the policy decided it by (`Decision.detail`)."""
    if t.status == SENT:
        return "sent" + _fallback(t, decision)
    detail: Any = decision.detail if decision is not None else None   # its type depends on the reason
    if t.status == HELD_OUT:
        share, scope = detail if detail is not None else (None, "")
        where = "this rule's" if scope == "rule" else "the global"
        return (f"held out: the customer is in {where} control group ({_pct(share)}): recorded, not sent"
                + _fallback(t, decision))
    reason = t.reason or ""
    if decision is None:
        return f"suppressed ({reason})"
    if reason == NO_CONSENT:
        if detail is not None:   # a recorded decision: an opt-out
            return f"suppressed (no_consent): opted out of {t.channel} at {format_ts(detail.at)}"
        return f"suppressed (no_consent): no opt-in for {t.channel} at {t.fired_at}"
    if reason == COOLDOWN:
        return (f"suppressed (cooldown): within {format_duration(rule.policy.cooldown)} of the rule's last contact, "
                f"the previous contact at {format_ts(detail)}")
    if reason == PRIORITY:
        return f"suppressed (priority): another trigger of higher priority: {detail.rule.id} won the same moment"
    policy = rules.ruleset.policy
    if reason == QUIET_HOURS_DROPPED and policy is not None and policy.quiet_hours is not None:
        q = policy.quiet_hours
        return (f"suppressed (quiet_hours_dropped): inside quiet hours {q.start[0]:02d}:{q.start[1]:02d}–"
                f"{q.end[0]:02d}:{q.end[1]:02d} ({detail or 'UTC'}), mode drop")
    if reason == FREQUENCY_CAP:
        cap = detail
        what = cap.channel if cap.channel != "*" else "contacts"
        return f"suppressed (frequency_cap): at most {cap.max} {what} per {format_duration(cap.per)}"
    return f"suppressed ({reason})"


def _fallback(t: Trigger, decision: Decision | None) -> str:
    """A send of a fallback list (`channel: [push, sms]`) on another channel than the first, or of
    `channel: best`, in words."""
    detail = decision.detail if decision is not None else None
    if isinstance(detail, ChannelChoice):
        learned, eligible = detail.learned, detail.eligible
        if learned:
            return f" on {t.channel}: the best decayed response rate of {', '.join(eligible)} (channel: best)"
        return (f" on {t.channel}: the first of {', '.join(eligible)} the customer may be contacted on (channel:"
                " best, fewer than 3 sends on 2 channels to compare)")
    channels = decision.candidate.action.channels if decision is not None else ()
    if not channels or t.channel == channels[0]:
        return ""
    return f" on {t.channel}, the first of {', '.join(channels)} with consent and not capped"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:g}%"


def _counts(triggers: list[TriggerView]) -> str:
    """Triggers counted by status: "sent ×2, suppressed (cooldown)"."""
    counts: dict[str, int] = {}
    for t in triggers:
        key = f"{t.status} ({t.reason})" if t.reason else t.status
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} ×{n}" if n > 1 else k for k, n in counts.items())


def _summary(rule: CompiledRule, triggers: list[TriggerView], timers: list[TimerView], tr: RuleTrace | None,
             st: CustomerState, condition: ConditionCheck | None, last_contact: str | None, backtest: bool) -> str:
    pieces: list[str] = []
    if triggers:
        pieces.append(_counts(triggers))
    for w in timers:
        label = "overdue" if w.overdue else "waiting"
        step = f"step {w.step}, " if rule.kind is Kind.SERIES else ""
        pieces.append(f"{label}: {step}due {w.due}" + (" (deferred by quiet hours)" if w.what == DEFERRED_SEND else ""))
    if pieces:
        return "; ".join(pieces)
    on = " or ".join(f"`{t}`" for t in rule.rule.on)
    if isinstance(rule, RecurringRule):
        if parse_date(st.profile.get(rule.date_attr or "")) is None:
            return f"never scheduled: no usable profile.{rule.date_attr}"
        return "no occurrence scheduled"
    if rule.kind is Kind.INACTIVE:
        if not st.last_ts:
            return "never started: no event"
        assert isinstance(rule, InactiveRule)
        if not rule.since(st):
            return f"never started: no {' or '.join(f'`{t}`' for t in rule.of)} event"
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
