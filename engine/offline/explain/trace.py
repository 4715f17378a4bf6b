"""The backtest side of `triggers explain`: one customer's events replayed through a `Session`
(the driver the backtest and the live engine use), with this trace as the evaluator's observer.

The trace is told what happened (engine.core.observe): each evaluation of a rule's `if:` with
its value, each wait cancelled, re-armed or lapsed, each send deferred, each policy decision
with the fact that decided it. It reconstructs nothing from the state afterwards, so what it
records is what the evaluator did, whatever the evaluator's internals become.
"""

from __future__ import annotations

from typing import Any

from engine.actions.trigger import Trigger
from engine.core.observe import Observer, TimerEnd
from engine.core.session import Session
from engine.core.times import format_duration, format_ts
from engine.events.model import Event
from engine.offline.explain.journey import awaited, step_id, wait_match
from engine.offline.explain.model import JourneyMove
from engine.policy.contact import Decision
from engine.policy.timing import HourChoice, Population, hour_words
from engine.rules.compiler import CompiledRules
from engine.rules.journey import JourneyRule
from engine.rules.kinds import CompiledRule, Kind
from engine.rules.model import StepKind
from engine.state.customer import CustomerState, Deferred, Timer

NOTES = 8            # notable moments kept per rule (the latest)
JOURNEY_NOTES = 64   # a journey's: each walk is several moments (entry, sends, waits, branches, end)


class RuleTrace:
    """What one rule did for the customer over the replay."""

    __slots__ = ("starts", "evaluations", "true", "last_eval", "notes", "limit", "moves")

    def __init__(self, limit: int = NOTES) -> None:
        self.starts = 0                   # events of the rule's `on` types applied
        self.evaluations = 0              # of them, those its `if:` was evaluated on
        self.true = 0
        self.last_eval: tuple[Event, bool] | None = None
        self.notes: list[str] = []
        self.limit = limit                # notes (and journey moves) kept, the latest
        self.moves: list[JourneyMove] = []   # a journey's entries, branches and ends

    def note(self, text: str) -> None:
        self.notes.append(text)
        if len(self.notes) > self.limit:
            del self.notes[0]

    def move(self, move: JourneyMove) -> None:
        self.moves.append(move)
        if len(self.moves) > self.limit:
            del self.moves[0]


class Trace(Observer):
    """Replays one customer's events (`replay`), recording why each rule did what it did."""

    def __init__(self, rules: CompiledRules, customer_id: str, where: str = "explain",
                 population: Population | None = None) -> None:
        """`population`: every customer's responses (the best hour's fallback); default: this one's."""
        self.rules = rules
        self.customer_id = customer_id
        self.session = Session(rules, where, observer=self, population=population)
        self.events = 0                            # events replayed
        self.triggers: list[Trigger] = []
        self.decisions: dict[str, Decision] = {}   # trigger id -> the policy decision it came from
        self.last_by_type: dict[str, Event] = {}
        self.last_event: Event | None = None
        self.rule: dict[str, RuleTrace] = {
            r.id: RuleTrace(JOURNEY_NOTES if r.kind is Kind.JOURNEY else NOTES) for r in rules.rules}

    @property
    def state(self) -> CustomerState | None:
        return self.session.states.get(self.customer_id)

    def replay(self, events: list[Event], at: int) -> None:
        """Apply the events in order, then fire what is due by the explain time `at`."""
        self.events += len(events)
        self.session.apply(events, self.triggers)
        self.session.advance(at, self.triggers)

    # -- told by the evaluator ----------------------------------------------------------------

    def event_applied(self, ev: Event) -> None:
        self.last_by_type[ev.type] = ev
        self.last_event = ev

    def condition(self, rule: CompiledRule, ev: Event, value: Any) -> None:
        tr = self.rule.get(rule.id)
        if tr is None:
            return
        tr.starts += 1
        if rule.cond is None:
            return
        holds = bool(value)
        tr.evaluations += 1
        tr.true += holds
        tr.last_eval = (ev, holds)
        if not holds and rule.kind is not Kind.IMMEDIATE:
            done = "not entered" if rule.kind is Kind.JOURNEY else "not started"
            tr.note(f"{format_ts(ev.ts)} {ev.type} {ev.event_id}: condition false, {done}")

    def timer_armed(self, rule: CompiledRule, timer: Timer) -> None:
        tr = self.rule.get(rule.id)
        if tr is not None and isinstance(rule, JourneyRule) and 0 <= timer.step < len(rule.steps):
            s = rule.steps[timer.step]
            since = format_ts(timer.due - s.wait)
            if s.wait_for is None:
                tr.note(f"{since} at '{s.id}': a delay of {format_duration(s.wait)}, until {format_ts(timer.due)}")
            else:
                tr.note(f"{since} at '{s.id}': waits until {format_ts(timer.due)} for "
                        f"{awaited(s.wait_for.events, wait_match(s.wait_for.match_props, timer.key))}")

    def timer_ended(self, rule: CompiledRule | None, timer: Timer, why: str, ev: Event | None) -> None:
        tr = self.rule.get(timer.rule) if rule is not None else None
        if tr is None or rule is None:   # a rule no longer in the rules: nothing to explain it by
            return
        if rule.kind is Kind.JOURNEY:   # a wait answered or a delay over: the journey tells it (`journey`)
            return
        text = _ended(rule, timer, why, ev)
        if text is not None:
            tr.note(text)

    def deferred_due(self, rule: CompiledRule | None, send: Deferred, made: bool) -> None:
        tr = self.rule.get(send.rule) if rule is not None else None
        if tr is not None and not made:
            since = ("the walk is no longer at that send" if rule is not None and rule.kind is Kind.JOURNEY
                     else "the rule changed since it was deferred")
            tr.note(f"{format_ts(send.due)} deferred send due (cause {send.cause}): lapsed, {since}")

    def decision(self, decision: Decision, trigger: Trigger | None) -> None:
        c = decision.candidate
        tr = self.rule.get(c.rule.id)
        at = f"{format_ts(c.at)} at '{c.step_id}'" if c.step_id is not None else format_ts(c.at)
        if trigger is not None:
            self.decisions[trigger.trigger_id] = decision
            if tr is not None and c.step_id is not None:   # a journey's send: a moment of its walk
                status = trigger.status.value + (f" ({trigger.reason})" if trigger.reason else "")
                tr.note(f"{at}: {trigger.action} {status} on {trigger.channel}")
        elif tr is not None and isinstance(decision.detail, HourChoice):
            tr.note(f"{at}: send_time best, deferred to {format_ts(decision.until)}: {hour_words(decision.detail)}")
        elif tr is not None:
            tr.note(f"{at}: inside quiet hours, deferred to {format_ts(decision.until)}")

    def journey(self, rule: CompiledRule, at: int, what: str, detail: str, step: str = "", to: str = "") -> None:
        tr = self.rule.get(rule.id)
        if tr is None or not isinstance(rule, JourneyRule):
            return
        move = _move(rule, format_ts(at), what, detail, step, to)
        tr.move(move)
        tr.note(_move_text(move))


def _ended(rule: CompiledRule, t: Timer, why: str, ev: Event | None) -> str | None:
    """A timer that left the state without a candidate, in words (None: not worth a note)."""
    due = format_ts(t.due)
    step = f"step {t.step + 1} " if rule.kind is Kind.SERIES else ""
    if why == TimerEnd.CANCELLED and ev is not None:
        return (f"cancelled: {ev.type} {ev.event_id} at {format_ts(ev.ts)} came before the {step}deadline {due} "
                f"(cause {t.cause})")
    if why in (TimerEnd.REPLACED, TimerEnd.RESTARTED):
        if ev is None:   # a recurring date re-armed as it fired: nothing was lost
            return None
        if rule.kind is Kind.RECURRING:
            return f"rescheduled after a profile change ({ev.event_id} at {format_ts(ev.ts)})"
        return (f"re-armed: a newer {ev.type} {ev.event_id} at {format_ts(ev.ts)} replaced the {step}wait due {due} "
                f"(cause {t.cause})")
    what = f"step {t.step + 1}" if rule.kind is Kind.SERIES else "deadline"
    if why == TimerEnd.CONDITION_FALSE:
        if rule.kind is Kind.INACTIVE:
            return f"{due} inactivity due: its condition was false, nothing sent"
        return f"{due} {what} due (cause {t.cause}): its condition was false, nothing sent"
    return f"{due} {what} due (cause {t.cause}): lapsed, the rule changed since it was armed"


def _move(rule: JourneyRule, at: str, what: str, detail: str, step: str, to: str = "") -> JourneyMove:
    """The journey hook's words as a move, with where it led (from the compiled graph)."""
    if what in ("entered", "not entered") and not step:
        return JourneyMove(at, None, what, rule.steps[0].id if what == "entered" and rule.steps else None, detail)
    why = detail.removeprefix(f"{step}: ") if step else detail
    if what == "split":
        return JourneyMove(at, step, what, to, why.removeprefix("split, "))
    i = rule.index.get(step) if step else None
    if what == "ended" or i is None:
        return JourneyMove(at, step or None, what, None, why)
    s = rule.steps[i]
    if s.kind is StepKind.DELAY and what == "next":
        return JourneyMove(at, step, what, step_id(rule, s.next), why)
    if what in ("yes", "no"):
        return JourneyMove(at, step, what, step_id(rule, s.yes if what == "yes" else s.no), why)
    return JourneyMove(at, step, what, None, why)   # "ignored": the walk stays


def _move_text(m: JourneyMove) -> str:
    if m.what == "entered" and m.step is None:
        return f"{m.at} entered on {m.detail}"
    if m.step is None:
        return f"{m.at} {m.what}: {m.detail}"
    if m.what == "ended":
        return f"{m.at} ended: {m.detail}"
    to = f" → {m.to}" if m.to is not None else ""
    return f"{m.at} at '{m.step}': {m.what}{to}: {m.detail}"
