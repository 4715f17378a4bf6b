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
from engine.core.times import format_ts
from engine.events.model import Event
from engine.policy.contact import Decision
from engine.rules.compiler import CompiledRules
from engine.rules.kinds import CompiledRule, Kind
from engine.state.customer import CustomerState, Deferred, Timer

NOTES = 8   # notable moments kept per rule (the latest)


class RuleTrace:
    """What one rule did for the customer over the replay."""

    __slots__ = ("starts", "evaluations", "true", "last_eval", "notes")

    def __init__(self) -> None:
        self.starts = 0                   # events of the rule's `on` types applied
        self.evaluations = 0              # of them, those its `if:` was evaluated on
        self.true = 0
        self.last_eval: tuple[Event, bool] | None = None
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)
        if len(self.notes) > NOTES:
            del self.notes[0]


class Trace(Observer):
    """Replays one customer's events (`replay`), recording why each rule did what it did."""

    def __init__(self, rules: CompiledRules, customer_id: str, where: str = "explain") -> None:
        self.rules = rules
        self.customer_id = customer_id
        self.session = Session(rules, where, observer=self)
        self.events = 0                            # events replayed
        self.triggers: list[Trigger] = []
        self.decisions: dict[str, Decision] = {}   # trigger id -> the policy decision it came from
        self.last_by_type: dict[str, Event] = {}
        self.last_event: Event | None = None
        self.rule: dict[str, RuleTrace] = {r.id: RuleTrace() for r in rules.rules}

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
            tr.note(f"{format_ts(ev.ts)} {ev.type} {ev.event_id}: condition false, not started")

    def timer_ended(self, rule: CompiledRule | None, timer: Timer, why: str, ev: Event | None) -> None:
        tr = self.rule.get(timer.rule) if rule is not None else None
        if tr is None or rule is None:   # a rule no longer in the rules: nothing to explain it by
            return
        text = _ended(rule, timer, why, ev)
        if text is not None:
            tr.note(text)

    def deferred_due(self, rule: CompiledRule | None, send: Deferred, made: bool) -> None:
        tr = self.rule.get(send.rule) if rule is not None else None
        if tr is not None and not made:
            tr.note(f"{format_ts(send.due)} deferred send due (cause {send.cause}): lapsed, the rule changed "
                    "since it was deferred")

    def decision(self, decision: Decision, trigger: Trigger | None) -> None:
        c = decision.candidate
        if trigger is not None:
            self.decisions[trigger.trigger_id] = decision
        elif c.rule.id in self.rule:
            self.rule[c.rule.id].note(f"{format_ts(c.at)}: inside quiet hours, deferred to {format_ts(decision.until)}")


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
