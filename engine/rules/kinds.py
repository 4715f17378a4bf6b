"""Compiled rules: one small class per kind of rule (how it fires), behind one interface.

The compiler (engine.rules.compiler) decides a rule's kind from its shape, not its `type:`
family, and builds the class of that kind. Each class says what its rule does when its
condition holds on an event (`matched`) and when one of its deadlines comes (`fired`), which
deadlines it still accepts after a reload, which `unless` and which action a step has: the one
place that dispatches on kind. The evaluator (engine.core.evaluate) provides the mechanics they
call (candidates, timers) and stays free of branches on kind.

`RulePolicy` is what the contact policy reads of a rule (priority, cooldown, control share,
quiet-hours mode, attribution window), so the policy never reads the rule's source.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from engine.rules.model import Rule

if TYPE_CHECKING:
    from engine.core.evaluate import Evaluator
    from engine.events.model import Event
    from engine.policy.contact import Candidate
    from engine.state.customer import CustomerState, Deferred, Timer

Fn = Callable[..., Any]


class Kind(StrEnum):
    """How a rule fires; the values are what explain shows (`kind` in its JSON)."""

    IMMEDIATE = "immediate"     # fires on the event itself (threshold crossings, plain conditions)
    ABSENCE = "absence"         # fires `within` after the event unless a cancelling event came
    DELAY = "delay"             # fires `delay` after the event
    SERIES = "series"           # multi-step journey
    INACTIVE = "inactive"       # fires after a stretch with no event at all
    RECURRING = "recurring"     # fires on a date every year/month at a local time
    JOURNEY = "journey"         # a graph of steps that branches on the customer's response (SPEC §3a)


class RulePolicy(msgspec.Struct, frozen=True):
    """A rule's own contact settings, read by the contact policy (engine.policy.contact)."""

    priority: int = 0                  # higher wins when several rules fire for a customer at once
    cooldown: int = 0                  # ms; 0: none
    control_group: float | None = None   # holdout share 0..1; None: the policy's global share
    quiet_hours: str | None = None       # "defer" or "drop"; None: the policy's mode
    attribution_window: int | None = None   # ms; None: the policy's window

    @classmethod
    def of(cls, rule: Rule) -> RulePolicy:
        return cls(rule.priority, rule.cooldown or 0, rule.control_group, rule.quiet_hours, rule.attribution_window)


class CompiledAction:
    __slots__ = ("action", "channel", "payload", "channels", "best_time", "time_holdout")

    def __init__(self, action: str, channel: str, payload: tuple[tuple[str, Fn], ...],
                 channels: tuple[str, ...] = (), best_time: bool = False, time_holdout: float = 0.0) -> None:
        self.action = action
        self.channel = channel        # the first choice; "best": the policy chooses (SPEC §3b)
        self.payload = payload
        self.channels = channels      # a fallback list (`channel: [push, sms]`); (): `channel` alone
        self.best_time = best_time    # `send_time: best`: deferred to the customer's best hour
        self.time_holdout = time_holdout   # the share of customers sent at once instead (an experiment arm)


class CompiledUnless:
    """A cancelling condition: an event of `events` whose `match_props` equal the timer's key."""

    __slots__ = ("events", "match_props", "match_values")

    def __init__(self, events: frozenset[str], match_props: tuple[str, ...], match_values: tuple[Fn, ...]) -> None:
        self.events = events
        self.match_props = match_props
        self.match_values = match_values

    def key_for_cause(self, st: Any, ev: Any, now: int) -> str:
        """The timer key: the match values the cancelling event must carry, rendered from the cause."""
        if not self.match_values:
            return ""
        return "\x1f".join(str(fn(st, ev, now)) for fn in self.match_values)

    def key_of_candidate(self, ev: Any) -> str:
        if not self.match_props:
            return ""
        props = ev.properties
        return "\x1f".join(str(props.get(p)) for p in self.match_props)


class CompiledStep:
    __slots__ = ("after", "cond", "then", "unless")

    def __init__(self, after: int, cond: Fn | None, then: CompiledAction, unless: CompiledUnless | None) -> None:
        self.after = after
        self.cond = cond
        self.then = then
        self.unless = unless


class CompiledRule:
    """The interface of every kind. `rule` is the source (explain reads its text and lines).

    Its abstract methods are checked by mypy, not by an `ABC` metaclass: compiled by mypyc
    (setup.py), `isinstance` of a subclass's instance against another subclass of an ABC
    answers wrong (a `CrossingRule` was no `ImmediateRule`).

    `matched`: the rule's condition held on `ev` (for a crossing, turned true): send, wait or
    start. `fired`: one of its stored (or, for inactivity, implicit) deadlines is due; it appends
    the candidate, if any, to `moment` and says whether it made one.
    """

    kind: ClassVar[Kind]
    crossing: ClassVar[bool] = False    # threshold: fire only when the condition turns true
    on_events: ClassVar[bool] = True    # run by the events of `on:` (False: by the clock alone)
    dated: ClassVar[bool] = False       # its deadlines are calendar dates (a backtest's end holds them back)
    __slots__ = ("id", "rule", "policy", "cond", "ctx_props")

    def __init__(self, rule: Rule, cond: Fn | None, ctx_props: tuple[str, ...] = ()) -> None:
        self.id = rule.id
        self.rule = rule
        self.policy = RulePolicy.of(rule)
        self.cond = cond
        self.ctx_props = ctx_props     # cause-event properties a timer must carry

    @abstractmethod
    def actions(self) -> tuple[CompiledAction, ...]:
        """Each kind's own."""

    @abstractmethod
    def action_for_step(self, step: int) -> CompiledAction | None:
        """The action of a step (0 for single-action rules); None if the rule has no such step."""

    def unless_for_step(self, step: int) -> CompiledUnless | None:
        return None

    def unlesses(self) -> tuple[CompiledUnless, ...]:
        return ()

    def accepts(self, timer: Timer) -> bool:
        """Whether a stored deadline still fits this rule (a reload may have changed its shape:
        fewer steps, another kind); one that does not lapses."""
        return timer.step == 0

    def resumed(self, run: Evaluator, state: CustomerState, send: Deferred) -> Candidate | None:
        """The candidate of a send deferred out of quiet hours, now due; None if a reload left
        the rule without its action (the send lapses)."""
        return run.deferred_candidate(self, send)

    def decided(self, run: Evaluator, state: CustomerState, customer_id: str, decision: Any, out: list) -> None:
        """The policy decided one of the rule's candidates with a step id: a journey goes on from its sends."""
        return None

    @abstractmethod
    def matched(self, run: Evaluator, state: CustomerState, ev: Event, moment: list[Candidate]) -> None:
        """Each kind's own."""

    @abstractmethod
    def fired(self, run: Evaluator, state: CustomerState, t: Timer, cause: Event, moment: list[Candidate]) -> bool:
        """Each kind's own."""


class _OneAction(CompiledRule):
    """A rule with one action (`then:`): every kind but a series."""

    __slots__ = ("then",)

    def __init__(self, rule: Rule, cond: Fn | None, then: CompiledAction, ctx_props: tuple[str, ...] = ()) -> None:
        super().__init__(rule, cond, ctx_props)
        self.then = then

    def actions(self) -> tuple[CompiledAction, ...]:
        return (self.then,)

    def action_for_step(self, step: int) -> CompiledAction | None:
        return self.then if step == 0 else None


class ImmediateRule(_OneAction):
    kind = Kind.IMMEDIATE
    __slots__ = ()

    def accepts(self, timer: Timer) -> bool:
        return False   # it never waits: a stored deadline is another kind's, left by a reload

    def matched(self, run: Evaluator, state: CustomerState, ev: Event, moment: list[Candidate]) -> None:
        moment.append(run.candidate(state, self, 0, self.then, ev.event_id, ev.event_id, ev.ts, ev))

    def fired(self, run: Evaluator, state: CustomerState, t: Timer, cause: Event, moment: list[Candidate]) -> bool:
        return False   # unreachable: `accepts` is False


class CrossingRule(ImmediateRule):
    """A threshold rule without a wait: fires once when its condition turns true."""

    crossing = True
    __slots__ = ()


class _WaitRule(_OneAction):
    """Fires `wait` ms after its cause; the condition was checked when the cause armed it."""

    __slots__ = ("wait",)

    def __init__(self, rule: Rule, cond: Fn | None, then: CompiledAction, wait: int,
                 ctx_props: tuple[str, ...] = ()) -> None:
        super().__init__(rule, cond, then, ctx_props)
        self.wait = wait

    def fired(self, run: Evaluator, state: CustomerState, t: Timer, cause: Event, moment: list[Candidate]) -> bool:
        moment.append(run.candidate(state, self, 0, self.then, self._cause_key(t), t.cause, t.due, cause))
        return True

    @staticmethod
    def _cause_key(t: Timer) -> str:
        return t.cause


class AbsenceRule(_WaitRule):
    kind = Kind.ABSENCE
    __slots__ = ("unless",)

    def __init__(self, rule: Rule, cond: Fn | None, then: CompiledAction, wait: int, unless: CompiledUnless,
                 ctx_props: tuple[str, ...] = ()) -> None:
        super().__init__(rule, cond, then, wait, ctx_props)
        self.unless = unless

    def unless_for_step(self, step: int) -> CompiledUnless | None:
        return self.unless

    def unlesses(self) -> tuple[CompiledUnless, ...]:
        return (self.unless,)

    def matched(self, run: Evaluator, state: CustomerState, ev: Event, moment: list[Candidate]) -> None:
        ts = ev.ts
        run.arm(state, self, ev, ts + self.wait, 0, self.unless.key_for_cause(state, ev, ts), replace=True)

    @staticmethod
    def _cause_key(t: Timer) -> str:
        return f"{t.cause}\x1f{t.key}" if t.key else t.cause


class DelayRule(_WaitRule):
    kind = Kind.DELAY
    __slots__ = ()

    def matched(self, run: Evaluator, state: CustomerState, ev: Event, moment: list[Candidate]) -> None:
        run.arm(state, self, ev, ev.ts + self.wait, 0, ev.event_id, replace=False)


class _ByTheClock(_OneAction):
    """A kind run by the clock alone: never indexed by event type, so no event reaches `matched`."""

    on_events = False
    __slots__ = ()

    def matched(self, run: Evaluator, state: CustomerState, ev: Event, moment: list[Candidate]) -> None:
        """Nothing: events only move this kind's deadline (the evaluator re-arms it)."""


class InactiveRule(_ByTheClock):
    """Fires `wait` ms after the latest event (of the types `of`, when given); the deadline is
    implicit (`since(state)` + wait): `last_ts`, or the latest of `CustomerState.latest_of`."""

    kind = Kind.INACTIVE
    __slots__ = ("wait", "of")

    def __init__(self, rule: Rule, cond: Fn | None, then: CompiledAction, wait: int,
                 of: tuple[str, ...] = ()) -> None:
        super().__init__(rule, cond, then)
        self.wait = wait
        self.of = of     # (): any event re-arms it

    def since(self, state: CustomerState) -> int:
        """Epoch ms the stretch of inactivity started; 0: none started (no such event yet)."""
        if not self.of:
            return state.last_ts
        latest = state.latest_of
        best = 0
        for t in self.of:
            ts = latest.get(t, 0)
            if ts > best:
                best = ts
        return best

    def due(self, state: CustomerState) -> int | None:
        """When the rule's inactivity deadline falls; None: no stretch started, or it fired already."""
        since = self.since(state)
        if not since or self.id in state.idle_fired:
            return None
        return since + self.wait

    def fired(self, run: Evaluator, state: CustomerState, t: Timer, cause: Event, moment: list[Candidate]) -> bool:
        # no event caused it: the cause is the stretch since `since(state)`
        state.idle_fired = [*state.idle_fired, self.id]
        if self.cond is not None and not self.cond(state, None, t.due):
            return False
        moment.append(run.candidate(state, self, 0, self.then, f"inactive{t.cause}", "", t.due, cause))
        return True


class RecurringRule(_ByTheClock):
    """Fires on `profile.<date_attr>` every year or month, at `rule.at` in the customer's zone."""

    kind = Kind.RECURRING
    dated = True
    __slots__ = ("date_attr",)

    def __init__(self, rule: Rule, cond: Fn | None, then: CompiledAction, date_attr: str) -> None:
        super().__init__(rule, cond, then)
        self.date_attr = date_attr

    def fired(self, run: Evaluator, state: CustomerState, t: Timer, cause: Event, moment: list[Candidate]) -> bool:
        state.occurred[self.id] = t.cause
        made = self.cond is None or bool(self.cond(state, None, t.due))
        if made:
            moment.append(run.candidate(state, self, 0, self.then, t.cause, "", t.due, cause))
        run.arm_recurring(state, self, t.due)
        return made


class SeriesRule(CompiledRule):
    """A journey: step 0 on the event, each further step `after` the previous one's send time."""

    kind = Kind.SERIES
    __slots__ = ("steps",)

    def __init__(self, rule: Rule, cond: Fn | None, steps: tuple[CompiledStep, ...],
                 ctx_props: tuple[str, ...] = ()) -> None:
        super().__init__(rule, cond, ctx_props)
        self.steps = steps

    def actions(self) -> tuple[CompiledAction, ...]:
        return tuple(s.then for s in self.steps)

    def action_for_step(self, step: int) -> CompiledAction | None:
        return self.steps[step].then if step < len(self.steps) else None

    def unless_for_step(self, step: int) -> CompiledUnless | None:
        return self.steps[step].unless if step < len(self.steps) else None

    def unlesses(self) -> tuple[CompiledUnless, ...]:
        return tuple(s.unless for s in self.steps if s.unless is not None)

    def accepts(self, timer: Timer) -> bool:
        return 0 < timer.step < len(self.steps)

    def matched(self, run: Evaluator, state: CustomerState, ev: Event, moment: list[Candidate]) -> None:
        run.start_series(state, self, ev, moment)

    def fired(self, run: Evaluator, state: CustomerState, t: Timer, cause: Event, moment: list[Candidate]) -> bool:
        step = self.steps[t.step]
        made = step.cond is None or bool(step.cond(state, cause, t.due))
        if made:
            moment.append(run.candidate(state, self, t.step, step.then, f"{t.cause}#{t.step + 1}", t.cause, t.due,
                                        cause))
        run.arm_step(state, self, cause, t.step + 1, t.due)
        return made
