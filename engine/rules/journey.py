"""A compiled journey (SPEC §3a): the kind that walks a customer through a graph of steps.

The customer's place is one `Position` per journey in their state (by step id, so an edit
keeps it); the wait it is in is a `Timer` of the journey, so deadlines, pending counts, drains
and restarts treat it like any other. A walk moves on at once through conditions and splits,
pauses at a send until the contact policy decided it (`decided`: sent or held out goes on,
suppressed ends the walk unless `if_suppressed: continue`, deferred waits for the send), and
stops at a wait: a delay's deadline, or a wait-for-event, answered `yes` by the event in time
(`observes`) or `no` by its deadline (`fired`).

Held-out customers are drawn once, at entry, and walk the same steps: every send is decided
as usual (consent, caps and quiet hours still apply) and recorded `held_out` instead of sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.core.funnel import Exit, Funnel, NotEntered
from engine.core.times import format_duration, format_ts
from engine.events.model import Event
from engine.policy.contact import DEFERRED, Candidate, Decision, draw
from engine.rules.journey_schema import successors
from engine.rules.kinds import CompiledAction, CompiledRule, CompiledUnless, Kind
from engine.rules.model import END, JourneyStep, Reenter, Rule, StepKind
from engine.state.customer import CustomerState, Deferred, Position, Timer

if TYPE_CHECKING:
    from engine.actions.trigger import Trigger
    from engine.core.evaluate import Evaluator
    from engine.rules.kinds import Fn

END_AT = -1   # the index of `end`
_SEP = "\x1f"   # between the values of a wait's key (engine.rules.kinds.CompiledUnless)
_EMPTY: dict = {}


class CompiledJourneyStep:
    """One step, its targets resolved to indices (`END_AT`: the end)."""

    __slots__ = ("id", "kind", "then", "next", "wait", "wait_for", "yes", "no", "cond", "split")

    def __init__(self, id: str, kind: StepKind, then: CompiledAction | None = None, next: int = END_AT,
                 wait: int = 0, wait_for: CompiledUnless | None = None, yes: int = END_AT, no: int = END_AT,
                 cond: Fn | None = None, split: tuple[tuple[float, int, str], ...] = ()) -> None:
        self.id = id
        self.kind = kind
        self.then = then
        self.next = next
        self.wait = wait            # ms: a delay, or a wait-for-event's `within`
        self.wait_for = wait_for
        self.yes = yes
        self.no = no
        self.cond = cond
        self.split = split          # (cumulative share, target index, target id), shares in file order


class JourneyRule(CompiledRule):
    kind = Kind.JOURNEY
    __slots__ = ("steps", "index", "exit_on", "watches", "reenter", "reenter_after", "continue_if_suppressed")

    def __init__(self, rule: Rule, cond: Fn | None, steps: tuple[CompiledJourneyStep, ...],
                 ctx_props: tuple[str, ...] = ()) -> None:
        super().__init__(rule, cond, ctx_props)
        journey = rule.journey
        assert journey is not None
        self.steps = steps
        self.index = {s.id: i for i, s in enumerate(steps)}
        self.exit_on = frozenset(journey.exit_on)
        # every type the journey reacts to besides its entry: exits, and the events its waits await
        self.watches = self.exit_on | frozenset(t for s in steps if s.wait_for is not None for t in s.wait_for.events)
        self.reenter = journey.reenter
        self.reenter_after = journey.reenter_after
        self.continue_if_suppressed = journey.continue_if_suppressed

    # -- the kind's interface -----------------------------------------------------------------

    def actions(self) -> tuple[CompiledAction, ...]:
        return tuple(s.then for s in self.steps if s.then is not None)

    def action_for_step(self, step: int) -> CompiledAction | None:
        return self.steps[step].then if 0 <= step < len(self.steps) else None

    def accepts(self, timer: Timer) -> bool:
        return True   # the position decides what a due wait means (`fired`), whatever the edit did

    def funnel(self, run: Evaluator) -> Funnel:
        f = run.funnels.get(self.id)
        if f is None:
            f = run.funnels[self.id] = Funnel(self.id, [s.id for s in self.steps])
        return f

    def position(self, state: CustomerState) -> Position | None:
        """The customer's walk in progress, if any."""
        pos = state.journeys.get(self.id) if state.journeys else None
        return pos if pos is not None and pos.step else None

    def matched(self, run: Evaluator, state: CustomerState, ev: Event, moment: list[Candidate]) -> None:
        """An entry event whose `if:` held: enter, unless `reenter` says otherwise."""
        pos = state.journeys.get(self.id)
        if pos is not None:
            why = self._refused(pos, ev)
            if why is not None:
                self.funnel(run).skip(why)
                if why is NotEntered.LATE:
                    run.counters.late_causes += 1
                if run.observer is not None:
                    run.observer.journey(self, ev.ts, "not entered", f"{ev.type} {ev.event_id}: {why.value}")
                return
            if pos.step:
                self._end(run, state, pos, Exit.RESTARTED, ev.ts)
        held_out = run.policy.held_out(ev.customer_id, self)
        pos = Position("", ev.event_id, ev.ts, held_out, ev.ts, run.ctx(self, ev), ev.type, "", {})
        state.journeys[self.id] = pos
        self.funnel(run).entered.add(held_out)
        if run.observer is not None:
            run.observer.journey(self, ev.ts, "entered", f"{ev.type} {ev.event_id}" + (" (held out)" if held_out
                                                                                         else ""))
        self._walk(run, state, ev.customer_id, pos, 0, ev.ts, moment)

    def _refused(self, pos: Position, ev: Event) -> NotEntered | None:
        if ev.ts < pos.entry_ts:
            return NotEntered.LATE
        if pos.step:
            return None if self.reenter is Reenter.RESTART and ev.event_id != pos.entry else NotEntered.INSIDE
        if self.reenter is Reenter.NEVER:
            return NotEntered.NEVER
        if self.reenter is Reenter.AFTER and ev.ts - pos.entry_ts < self.reenter_after:
            return NotEntered.TOO_SOON
        return None

    def observes(self, run: Evaluator, state: CustomerState, ev: Event, out: list[Trigger]) -> None:
        """An exit event ends the walk; the awaited event, in time and matching, takes `yes` at its ts."""
        pos = self.position(state)
        if pos is None or ev.ts < pos.entry_ts:
            return
        if ev.type in self.exit_on:
            self._end(run, state, pos, Exit.EXIT_EVENT, ev.ts, ev.type, ev)
            return
        i = self.index.get(pos.step)
        if i is None:
            return   # its step was removed by an edit: the wait's deadline ends the walk (`fired`)
        s = self.steps[i]
        if s.wait_for is None or ev.type not in s.wait_for.events or ev.ts < pos.since:
            return
        timer = next((t for t in state.timers if t.rule == self.id), None)
        if timer is None or ev.ts > timer.due or s.wait_for.key_of_candidate(ev) != timer.key:
            if timer is not None and run.observer is not None:
                why = (f"it came after the wait's deadline {format_ts(timer.due)}" if ev.ts > timer.due else
                       f"{'/'.join(s.wait_for.match_props)} {s.wait_for.key_of_candidate(ev).replace(_SEP, '/')!r}, "
                       f"not {timer.key.replace(_SEP, '/')!r}")
                run.observer.journey(self, ev.ts, "ignored", f"{s.id}: {ev.type} {ev.event_id} does not answer it: "
                                     f"{why}", s.id)
            return   # too late (its deadline fired first), or about another campaign
        state.timers.remove(timer)
        self.funnel(run).branch(s.id, "yes", pos.held_out)
        if run.observer is not None:
            run.observer.journey(self, ev.ts, "yes", f"{s.id}: {ev.type} {ev.event_id} came in time (wait until"
                                 f" {format_ts(timer.due)})", s.id)
        moment: list[Candidate] = []
        self._walk(run, state, ev.customer_id, pos, s.yes, ev.ts, moment)
        if moment:
            run.decide(state, ev.customer_id, moment, out)

    def fired(self, run: Evaluator, state: CustomerState, t: Timer, cause: Event, moment: list[Candidate]) -> bool:
        """The wait's deadline: a delay goes on to `next`, a wait-for-event takes `no`."""
        pos = self.position(state)
        if pos is None or pos.entry != t.cause or pos.entry_ts != t.cause_ts:
            return False   # a wait of a walk that ended meanwhile
        i = self.index.get(pos.step)
        if i is None:
            self._end(run, state, pos, Exit.STEP_REMOVED, t.due)
            return False
        s = self.steps[i]
        if s.kind is StepKind.DELAY:
            if run.observer is not None:
                run.observer.journey(self, t.due, "next", f"{s.id}: the {format_duration(s.wait)} delay is over", s.id)
            target = s.next
        elif s.kind is StepKind.WAIT:
            self.funnel(run).branch(s.id, "no", pos.held_out)
            if run.observer is not None:
                events = "/".join(sorted(s.wait_for.events)) if s.wait_for is not None else "the event"
                run.observer.journey(self, t.due, "no", f"{s.id}: no {events} by {format_ts(t.due)}", s.id)
            target = s.no
        else:
            target = i   # an edit made the step another kind: it runs now
        before = len(moment)
        self._walk(run, state, cause.customer_id, pos, target, t.due, moment)
        return len(moment) > before

    def resumed(self, run: Evaluator, state: CustomerState, send: Deferred) -> Candidate | None:
        """A send deferred out of quiet hours: the walk still at that send step goes on from it."""
        pos = self.position(state)
        if pos is None or pos.entry != send.cause_event_id:
            return None
        i = self.index.get(pos.step)
        if i is None:
            self._end(run, state, pos, Exit.STEP_REMOVED, send.due)
            return None
        action = self.steps[i].then
        if action is None:
            return None
        return Candidate(self, i, action, send.cause, send.cause_event_id, send.due, send.payload, send.cause_ts,
                         pos.step, pos.held_out, send.deferred_at)

    def decided(self, run: Evaluator, state: CustomerState, customer_id: str, decision: Decision,
                out: list[Trigger]) -> None:
        """After a send: sent or held out goes on at the send's time; suppressed ends the walk."""
        c = decision.candidate
        pos = self.position(state)
        if pos is None or pos.step != c.step_id or pos.entry != c.cause_event_id or decision.status is DEFERRED:
            return   # deferred: the walk waits at the send until it goes out
        funnel = self.funnel(run)
        outcome = decision.status.value if decision.reason is None else f"{decision.status.value}:{decision.reason}"
        funnel.send(pos.step, outcome)
        if decision.reason is not None and not self.continue_if_suppressed:
            self._end(run, state, pos, Exit.SUPPRESSED, c.at, str(decision.reason))
            return
        i = self.index[pos.step]
        moment: list[Candidate] = []
        self._walk(run, state, customer_id, pos, self.steps[i].next, c.at, moment)
        if moment:
            run.decide(state, customer_id, moment, out)

    # -- the walk -------------------------------------------------------------------------------

    def _walk(self, run: Evaluator, state: CustomerState, customer_id: str, pos: Position, i: int, at: int,
              moment: list[Candidate]) -> None:
        """From step `i` at `at`, through conditions and splits, to a send, a wait or the end."""
        funnel = self.funnel(run)
        observer = run.observer
        for _ in range(len(self.steps) + 1):   # validation rejects loops without a wait: never spins
            if i == END_AT:
                self._end(run, state, pos, Exit.COMPLETED, at)
                return
            s = self.steps[i]
            pos.step = s.id
            pos.since = at
            funnel.reach(s.id, pos.held_out)
            kind = s.kind
            if kind is StepKind.SEND:
                assert s.then is not None
                entry = self._entry(pos, customer_id)
                n = pos.sends.get(s.id, 0)   # a loop back to a send: the n-th visit has an id of its own
                pos.sends[s.id] = n + 1
                cause = f"{pos.entry}#{s.id}" if not n else f"{pos.entry}#{s.id}#{n}"
                c = run.candidate(state, self, i, s.then, cause, pos.entry, at, entry)
                c.step_id = s.id
                c.held_out = pos.held_out
                moment.append(c)
                return
            if kind is StepKind.DELAY or kind is StepKind.WAIT:
                key = ""
                if s.wait_for is not None:
                    key = s.wait_for.key_for_cause(state, self._entry(pos, customer_id), at)
                state.timers = [t for t in state.timers if t.rule != self.id]   # one wait per walk
                run.add_timer(state, self, Timer(at + s.wait, self.id, i, key, pos.entry, pos.entry_ts, _EMPTY,
                                                 pos.entry_type))
                return
            if kind is StepKind.CONDITION:
                assert s.cond is not None
                value = s.cond(state, self._entry(pos, customer_id), at)
                branch = "yes" if value else "no"
                if observer is not None:
                    observer.journey(self, at, branch, f"{s.id}: {self._condition_text(i)} was {value!r}", s.id)
                i = s.yes if value else s.no
            else:
                place = draw(customer_id, f"{self.id}\x1f{s.id}", "split")
                share, i, branch = next((x for x in s.split if place < x[0]), s.split[-1])
                if observer is not None:
                    observer.journey(self, at, "split", f"{s.id}: split, this customer's draw {place:.3f} falls in"
                                     f" '{branch}' (up to {share * 100:g}%)", s.id, branch)
            funnel.branch(s.id, branch, pos.held_out)
        self._end(run, state, pos, Exit.COMPLETED, at)   # unreachable for a validated journey

    def _condition_text(self, i: int) -> str:
        journey = self.rule.journey
        return (journey.steps[i].condition if journey is not None and i < len(journey.steps) else None) or "if"

    def _entry(self, pos: Position, customer_id: str) -> Event:
        """The entry event as the walk's templates read it (`event.*` is the entry event)."""
        return Event(pos.entry, pos.entry_type, customer_id, pos.entry_ts, pos.ctx)

    def _end(self, run: Evaluator, state: CustomerState, pos: Position, why: Exit, at: int,
             detail: str | None = None, ev: Event | None = None) -> None:
        """End the walk: its wait and its deferred send go; the position keeps why, and the entry time."""
        if state.timers:
            state.timers = [t for t in state.timers if t.rule != self.id]
        if state.deferred:
            state.deferred = [d for d in state.deferred if d.rule != self.id]
        key = why.value if detail is None else f"{why.value}:{detail}"
        self.funnel(run).exit(key, pos.held_out)
        if run.observer is not None:
            where = f" at step '{pos.step}'" if why is not Exit.COMPLETED else ""
            by = f" ({ev.type} {ev.event_id})" if ev is not None else ""
            run.observer.journey(self, at, "ended", f"{key}{where}{by}", pos.step)
        pos.step = ""
        pos.ended = key
        pos.ctx = _EMPTY
        pos.sends = {}


def compile_targets(steps: tuple[JourneyStep, ...], i: int, index: dict[str, int]) -> dict[str, int]:
    """The resolved targets of step `i` of a `Journey`, by YAML key (`next`, `yes`, `no`, `split.<id>`)."""
    return {key: index[target] if target != END else END_AT for key, target in successors(steps, i)}
