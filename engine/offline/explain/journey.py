"""A journey rule in `triggers explain` (SPEC §3a): the customer's position read from the state
(the same for a backtest and live), the wait it is in (its deadline, what answers it, where yes
and no lead), the journey's steps in words, and the verdict line.

Why the walk took each branch is what the evaluator told the trace (`RuleTrace.moves`); a
live explanation has the position only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from engine.core.times import format_duration, format_ts
from engine.offline.explain.model import JourneyView, JourneyWait
from engine.offline.explain.render import fmt
from engine.rules.journey import END_AT, JourneyRule
from engine.rules.journey_schema import successors
from engine.rules.model import Reenter, StepKind
from engine.state.customer import CustomerState

if TYPE_CHECKING:
    from engine.offline.explain.trace import RuleTrace


def awaited(events: Collection[str], match: dict[str, str]) -> str:
    """What a journey wait awaits, in words: `email_clicked with campaign "welcome-1"`."""
    types = " or ".join(sorted(events))
    if not match:
        return types
    return types + " with " + " and ".join(f"{k} {fmt(v)}" for k, v in match.items())


def wait_match(props: tuple[str, ...], key: str) -> dict[str, str]:
    """A wait's rendered `match` (property -> the value the event must carry), from its timer's key."""
    if not props:
        return {}
    values = key.split("\x1f")
    if len(values) != len(props):   # a key of an edited wait: shown whole
        return {"/".join(props): key.replace("\x1f", "/")}
    return dict(zip(props, values, strict=True))


def step_id(rule: JourneyRule, i: int) -> str:
    """A step index's id; `END_AT` is "end"."""
    return "end" if i == END_AT or not 0 <= i < len(rule.steps) else rule.steps[i].id


def journey_timer_what(rule: JourneyRule, st: CustomerState) -> str:
    """A journey's timer is the wait of the customer's position (one per walk): named by its step."""
    pos = rule.position(st)
    if pos is None:
        return "journey wait of a walk that ended (lapses)"
    i = rule.index.get(pos.step)
    if i is None:
        return f"journey wait at '{pos.step}', a step no longer in the journey (ends the walk: step_removed)"
    s = rule.steps[i]
    if s.wait_for is not None:
        return f"journey wait '{s.id}' for {' or '.join(sorted(s.wait_for.events))}"
    return f"journey delay '{s.id}'"


_KIND_WORDS = {StepKind.SEND: ("send", "sends"), StepKind.WAIT: ("wait for an event", "waits for an event"),
               StepKind.DELAY: ("delay", "delays"), StepKind.CONDITION: ("condition", "conditions"),
               StepKind.SPLIT: ("split", "splits")}


def journey_shape(rule: JourneyRule, on: str, cond: str) -> str:
    """The journey in one line: its entry, its steps by kind, its exits and re-entry."""
    counts = [(k, sum(s.kind is k for s in rule.steps)) for k in _KIND_WORDS]
    kinds = ", ".join(f"{n} {_KIND_WORDS[k][n > 1]}" for k, n in counts if n)
    text = f"{len(rule.steps)} steps ({kinds}), entered on {on}{cond}"
    if rule.exit_on:
        text += f"; left at once on {' or '.join(f'`{t}`' for t in sorted(rule.exit_on))}"
    if rule.reenter is Reenter.NEVER:
        return text + "; entered once ever"
    if rule.reenter is Reenter.RESTART:
        return text + "; a new entry restarts the walk"
    if rule.reenter is Reenter.AFTER:
        return text + f"; re-entered once a walk ended and {format_duration(rule.reenter_after)} after its entry"
    return text + "; re-entered once a walk ended"


def _steps(rule: JourneyRule) -> list[str]:
    """Each step of the journey in words, with where it leads."""
    journey = rule.rule.journey
    assert journey is not None
    lines = []
    for i, s in enumerate(journey.steps):
        leads = dict(successors(journey.steps, i))
        if s.kind is StepKind.SEND:
            assert s.then is not None
            on = ", else ".join(s.then.channels) if s.then.channels else s.then.channel
            text = f"send {s.then.action} on {on} → {leads['next']}"
        elif s.kind is StepKind.DELAY:
            text = f"wait {format_duration(s.wait)} → {leads['next']}"
        elif s.kind is StepKind.WAIT:
            assert s.wait_for is not None
            text = (f"wait up to {format_duration(s.wait)} for {awaited(s.wait_for.events, s.wait_for.match)}: "
                    f"yes → {leads['yes']}, no → {leads['no']}")
        elif s.kind is StepKind.CONDITION:
            text = f"if {s.condition}: yes → {leads['yes']}, no → {leads['no']}"
        else:
            text = "split " + ", ".join(f"{share * 100:g}% → {target}" for target, share in s.split)
        lines.append(f"{s.id}: {text}")
    return lines


def journey_view(rule: JourneyRule, st: CustomerState, at: int, live: bool, tr: RuleTrace | None) -> JourneyView:
    """The customer's position in the journey, from the state (the same backtest or live), with
    the moves the trace was told (backtest)."""
    moves = list(tr.moves) if tr is not None else []
    steps = _steps(rule)
    pos = st.journeys.get(rule.id) if st.journeys else None
    if pos is None:
        return JourneyView(steps=steps, moves=moves)
    view = JourneyView(entered_at=format_ts(pos.entry_ts), entry_event=pos.entry, entry_type=pos.entry_type or None,
                       held_out=pos.held_out, repeats=sum(n - 1 for n in pos.sends.values()), steps=steps, moves=moves)
    if not pos.step:
        view.ended = pos.ended or None
        view.ended_at = next((m.at for m in reversed(moves) if m.what == "ended"), None)
        return view
    view.inside = True
    view.step = pos.step
    view.since = format_ts(pos.since)
    i = rule.index.get(pos.step)
    if i is None:
        return view   # an edit removed its step: the walk leaves at its wait's deadline
    s = rule.steps[i]
    journey = rule.rule.journey
    view.step_kind = s.kind.value
    view.leads = dict(successors(journey.steps, i)) if journey is not None else {}
    timer = next((t for t in st.timers if t.rule == rule.id), None)   # one wait per walk
    if timer is not None and s.kind in (StepKind.WAIT, StepKind.DELAY):
        awaits = sorted(s.wait_for.events) if s.wait_for is not None else []
        match = wait_match(s.wait_for.match_props, timer.key) if s.wait_for is not None else {}
        view.wait = JourneyWait(s.id, s.kind.value, view.since, format_ts(timer.due), awaits, match,
                                live and timer.due <= at)
    deferred = next((d.due for d in st.deferred if d.rule == rule.id), None)
    if deferred is not None:
        view.deferred_until = format_ts(deferred)
    return view


def journey_summary(rule: JourneyRule, j: JourneyView, triggers: str, tr: RuleTrace | None, backtest: bool) -> str:
    """The journey's triggers (counted by status, "" if none), then where the customer is: never
    entered, inside (the wait they are in), or how the latest walk ended."""
    where = _position(rule, j, tr, backtest)
    return f"{triggers}; {where}" if triggers else where


def _position(rule: JourneyRule, j: JourneyView, tr: RuleTrace | None, backtest: bool) -> str:
    if j.entered_at is None:
        if not backtest or tr is None:
            return "never entered: no position in the state"
        if tr.starts == 0:
            return f"never entered: no {' or '.join(f'`{t}`' for t in rule.rule.on)} event"
        if tr.last_eval is not None and not tr.last_eval[1]:
            ev = tr.last_eval[0]
            return f"never entered: condition false at its last evaluation ({ev.type} {ev.event_id} at {format_ts(ev.ts)})"
        return "never entered"
    if not j.inside:
        return f"ended: {j.ended}" + (f" at {j.ended_at}" if j.ended_at else "")
    where = f"inside at '{j.step}'"
    w = j.wait
    if w is not None:
        label = "overdue" if w.overdue else "waiting"
        if w.kind == StepKind.WAIT:
            return f"{where}: {label} until {w.due} for {awaited(w.awaits, w.match)}"
        return f"{where}: a delay, {label} until {w.due}"
    if j.deferred_until is not None:
        return f"{where}: its send is deferred by quiet hours to {j.deferred_until}"
    if j.step_kind is None:
        return f"{where}, a step no longer in the journey: the walk leaves when its wait comes due (step_removed)"
    return where
