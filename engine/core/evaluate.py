"""The evaluation core: a customer's state, an event or the clock, and the compiled rules in;
the updated state and the triggers out (sent, held out or suppressed, per the contact policy).

Pure Python with no I/O, shared by the backtest and the live dataflow so that they cannot
disagree. Time is whatever clock the caller passes: event time in a backtest, the wall
clock live. Deadlines are event time (the cause's `ts` plus the rule's duration), and a
trigger fired by a deadline carries the deadline as `fired_at`, so both runs produce the
same triggers with the same ids.

States are updated in place (they are per-customer and owned by one worker); functions
return the state so that a new customer's fresh state reaches the caller. Timers are data
in the state (`CustomerState.timers`), except inactivity deadlines, which follow from the
latest event time (`last_ts` + the rule's wait) and so cost nothing per event, and sends
deferred out of quiet hours, which have their own list (`CustomerState.deferred`): the session
(engine.core.session), which schedules wake-ups, asks `Evaluator.next_due(state)`.

What a rule does when its condition holds on an event or one of its deadlines comes is its
kind's (engine.rules.kinds: `matched`, `fired`); the evaluator holds the mechanics the kinds
call (`candidate`, `arm`, `start_series`, `arm_step`, `arm_recurring`) and no branch on kind.

An observer (engine.core.observe), when given, is told each condition with its value, each
timer armed, ended or fired and each policy decision with its trigger; None on the hot path.
"""

from __future__ import annotations

import zlib

from msgspec import UNSET

from engine.actions.trigger import HELD_OUT, SENT, Trigger, trigger_id
from engine.core.calendar import next_occurrence, parse_date
from engine.core.funnel import Funnel
from engine.core.observe import Observer, TimerEnd
from engine.core.times import format_ts
from engine.events.model import Event
from engine.policy.attribution import Attributor, RuleOutcome
from engine.policy.contact import DEFERRED, Candidate, ContactPolicy, Decision
from engine.policy.timing import Population
from engine.rules.compiler import MAX_TIMERS_PER_RULE, CompiledRules
from engine.rules.kinds import CompiledAction, CompiledRule, InactiveRule, RecurringRule, SeriesRule
from engine.rules.plan import EventPlan
from engine.state.customer import Consent, CustomerState, Deferred, Timer
from engine.state.engagement import local_hour

SEEN_IDS = 4            # recent event ids remembered per customer for de-duplication
_EMPTY: dict = {}       # shared, never mutated: the ctx of timers whose rule reads no event property


class Counters:
    """Per-run counts the CLI and metrics report; plain ints, no per-event allocation."""

    __slots__ = ("events", "duplicates", "late_causes", "timers_fired", "timers_dropped")

    def __init__(self) -> None:
        self.events = self.duplicates = self.timers_fired = self.timers_dropped = 0
        self.late_causes = 0   # late events that would have replaced or restarted a newer wait: not armed


def new_state() -> CustomerState:
    return CustomerState(aggs={}, profile={}, armed=[], last_contact={}, timers=[], seen=[], consent={}, contacts=[],
                         open_triggers=[], idle_fired=[], occurred={}, deferred=[], latest_of={}, journeys={},
                         engagement=b"")


class Evaluator:
    """Applies compiled rules to one customer at a time. Not thread-safe: one per worker."""

    def __init__(self, rules: CompiledRules, observer: Observer | None = None,
                 population: Population | None = None, due_fired_before: bool = False) -> None:
        """`population`: the responses over all customers, for the best hour's fallback (kept
        across reloads by the `Session`; live, shared by all partitions through the store).
        `due_fired_before`: the caller (a `Session`, from its deadline index) fires every
        customer's deadlines due before an event before applying it, so `on_event` need not look
        for them again; callers of the bare evaluator (tests, the naive benchmark) keep the look."""
        self.rules = rules
        self.observer = observer   # told what happens (explain); None on the hot path
        self.counters = Counters()
        self.policy = ContactPolicy(rules.ruleset.policy, population)
        self.late_event = False    # the event being applied arrived behind the frontier (set by the `Session`)
        self.attributor = Attributor(rules.attribution, rules.attribution_windows)
        self.outcomes: dict[str, RuleOutcome] = {r.id: RuleOutcome(suppressed={}) for r in rules.rules}
        self.funnels: dict[str, Funnel] = {}   # journey id -> its funnel over the run (engine.core.funnel)
        # Set by any call that may have made a customer's next deadline earlier (a new timer, a
        # new customer, a new stretch of inactivity); the `Session`, and only it, re-reads
        # `next_due` then and clears it (re-reading after every event costs ~6% of the hot path).
        # Deadlines that only move later need no update: a stale, earlier wake-up finds nothing
        # due and is re-indexed then.
        self.earlier_deadline = False
        self.due_fired_before = due_fired_before
        self._idle_min_wait = min((r.wait for r in rules.inactive if not r.of), default=0)
        self._idle_of = rules.inactive_of   # their stretch starts at the latest event of their types
        self._idle_of_ids = frozenset(r.id for r in self._idle_of)
        self._plans: dict[str, EventPlan] = {}   # the rules' plans, read here without a call (compiled: natively)

    def next_due(self, state: CustomerState, recurring_until: int | None = None) -> int | None:
        """The customer's earliest deadline, stored or implicit (inactivity), for wake-up indexes.

        With `recurring_until`, recurring dates after it do not count (a backtest's end).
        """
        best = None
        by_id = self.rules.by_id
        for t in state.timers:
            if recurring_until is not None and t.due > recurring_until:
                rule = by_id.get(t.rule)
                if rule is not None and rule.dated:
                    continue
            if best is None or t.due < best:
                best = t.due
        for d in state.deferred:
            if best is None or d.due < best:
                best = d.due
        if state.last_ts:
            for rule in self.rules.inactive:
                due = rule.due(state)
                if due is not None and (best is None or due < best):
                    best = due
        return best

    def pending(self, state: CustomerState) -> list[str]:
        """The rule of each one-shot deadline the state still has (stored, deferred or implicit
        inactivity), one entry per deadline: what a backtest's end leaves pending and a drain
        would fire. Recurring dates are not counted: they recur for ever and never drain."""
        by_id = self.rules.by_id
        rules = [t.rule for t in state.timers if t.rule in by_id and not by_id[t.rule].dated]
        rules += [d.rule for d in state.deferred if d.rule in by_id]
        if state.last_ts:
            rules += [r.id for r in self.rules.inactive if r.due(state) is not None]
        return rules

    def _idle_due(self, state: CustomerState, now: int) -> list[Timer]:
        """Inactivity deadlines due by `now`, as transient timers (never stored)."""
        if not state.last_ts:
            return []
        timers = []
        for r in self.rules.inactive:
            due = r.due(state)
            if due is not None and due <= now:
                since = due - r.wait
                timers.append(Timer(due, r.id, 0, "", f"@{since}", since, _EMPTY))
        return timers

    # -- events ---------------------------------------------------------------------------

    def on_event(self, state: CustomerState | None, ev: Event, out: list[Trigger]) -> CustomerState:
        """Apply one event; append the triggers it fires (and those of deadlines before it) to `out`."""
        if state is None:
            state = new_state()
            self.earlier_deadline = True
        counters = self.counters
        counters.events += 1
        raw_id = ev.event_id.encode()
        seen_hash = (zlib.crc32(raw_id) << 32) | zlib.adler32(raw_id)   # two unrelated 32-bit sums: 64 bits
        seen = state.seen
        if seen_hash in seen:
            counters.duplicates += 1
            return state
        seen.append(seen_hash)
        if len(seen) > SEEN_IDS:
            del seen[0]
        ts = ev.ts
        last_ts = state.last_ts
        if not self.due_fired_before:
            self._fire_before(state, ev.customer_id, ts, out)
        # An older event (a late one, counted by the Session) leaves the customer's last time.
        if ts > last_ts:
            state.last_ts = ts
            if state.idle_fired:   # a new event starts a new stretch of inactivity: a new deadline
                # (for the rules with `of`, only an event of their types does: `_mark_idle_of`)
                of_ids = self._idle_of_ids
                if not of_ids:
                    state.idle_fired = []
                    self.earlier_deadline = True
                elif not of_ids.issuperset(state.idle_fired):   # else nothing changes: no re-index
                    state.idle_fired = [r for r in state.idle_fired if r in of_ids]
                    self.earlier_deadline = True
        if self.observer is not None:
            self.observer.event_applied(ev)

        plan = self._plans.get(ev.type)
        if plan is None:
            plan = self._plans[ev.type] = self.rules.plan(ev.type)
        aggs = state.aggs
        for update in plan.updates:
            update(aggs, ev)
        if plan.filtered:
            for filtered in plan.filtered:
                filtered(state, ev)
        if plan.special:
            if plan.profile:
                self._update_profile(state, ev)
            elif plan.consent:
                self._update_consent(state, ev.properties, ts, self.rules.channels)
            if plan.responds and state.open_triggers:
                self.attributor.observe(state, ev, self.outcomes)
            if plan.cancels and state.timers:
                self._cancel(state, ev)
            if plan.idle_of:
                self._mark_idle_of(state, ev, plan.idle_of)
            if plan.engagement >= 0:   # a response on a channel: the customer's hours and the population's
                self.policy.timing.response(state, ev.customer_id, plan.engagement, ts,
                                            local_hour(ts, state.profile.get("timezone")), self.late_event)
            if plan.journeys and state.journeys:
                for journey in plan.journeys:   # exits and answered waits, before new entries
                    journey.observes(self, state, ev, out)
        if plan.rules:
            self._run_rules(state, ev, plan.rules, out)
        return state

    def _fire_before(self, state: CustomerState, customer_id: str, ts: int, out: list[Trigger]) -> None:
        """Deadlines strictly before an event fire first."""
        last_ts = state.last_ts
        due_before = self._idle_min_wait and last_ts and last_ts + self._idle_min_wait < ts
        if not due_before and state.timers:
            for t in state.timers:
                if t.due < ts:
                    due_before = True
                    break
        if not due_before and state.deferred:
            for d in state.deferred:
                if d.due < ts:
                    due_before = True
                    break
        if not due_before and self._idle_of:
            due_before = self._idle_of_due(state, ts)
        if due_before:
            self.on_time(state, customer_id, ts - 1, out)

    def _run_rules(self, state: CustomerState, ev: Event, rules: tuple[CompiledRule, ...], out: list[Trigger]) -> None:
        """The rules of the event's type: conditions, then what the rule's kind does (`matched`)."""
        moment: list[Candidate] = []
        ts = ev.ts
        observer = self.observer
        for rule in rules:
            cond = rule.cond
            if rule.crossing and cond is not None:
                value = cond(state, ev, ts)
                if observer is not None:
                    observer.condition(rule, ev, value)
                true = bool(value)
                armed = state.armed
                if true == (rule.id in armed):
                    continue
                if not true:
                    armed.remove(rule.id)
                    continue
                armed.append(rule.id)
                rule.matched(self, state, ev, moment)
                continue
            if cond is not None:
                value = cond(state, ev, ts)
                if observer is not None:
                    observer.condition(rule, ev, value)
                if not value:
                    continue
            elif observer is not None:
                observer.condition(rule, ev, True)
            rule.matched(self, state, ev, moment)
        if moment:
            self.decide(state, ev.customer_id, moment, out)

    def _idle_of_due(self, state: CustomerState, ts: int) -> bool:
        """Whether an `inactive … of:` deadline falls strictly before `ts` (one not fired yet)."""
        for rule in self._idle_of:
            due = rule.due(state)
            if due is not None and due < ts:
                return True
        return False

    def _mark_idle_of(self, state: CustomerState, ev: Event, rules: tuple[InactiveRule, ...]) -> None:
        """An event of a type some `inactive … of:` rule names: a newer one starts their new stretch."""
        latest = state.latest_of
        if ev.ts <= latest.get(ev.type, 0):
            return   # a late event: the stretch started at a newer one
        before = [r.since(state) for r in rules]
        latest[ev.type] = ev.ts
        # only a rule whose stretch this event moved starts a new one: a late event of one of its
        # types, older than its newest event of another, leaves its fired stretch fired
        moved = {r.id for r, since in zip(rules, before) if r.since(state) > since}
        if not moved:
            return
        if any(not since for since in before):
            self.earlier_deadline = True   # the first such event makes a deadline where there was none
        if state.idle_fired:
            kept = [r for r in state.idle_fired if r not in moved]
            if len(kept) != len(state.idle_fired):
                state.idle_fired = kept
                self.earlier_deadline = True   # fired, now due again later: a deadline where there was none

    def _update_profile(self, state: CustomerState, ev: Event) -> None:
        """Keep only the profile attributes some rule reads: the state stays small."""
        profile = state.profile
        wanted = self.rules.profile_attrs
        changed = False
        for key, value in ev.properties.items():
            if key in wanted and profile.get(key) != value:
                profile[key] = value
                changed = True
        consent = ev.properties.get("consent")
        if isinstance(consent, dict):   # traits {consent: {email: true, push: false}}
            for channel, granted in consent.items():
                if isinstance(granted, bool):
                    self._update_consent(state, {"channel": channel, "granted": granted}, ev.ts, self.rules.channels)
        if changed and self.rules.recurring:
            for rule in self.rules.recurring:   # an occurrence due exactly now is kept, not skipped
                self.arm_recurring(state, rule, ev.ts - 1, ev)

    @staticmethod
    def _update_consent(state: CustomerState, props: dict, ts: int, channels: frozenset[str]) -> None:
        """A `consent` event: {channel, granted}. The latest decision in event time wins; only
        channels some rule sends on are kept (the state stays bounded)."""
        channel, granted = props.get("channel"), props.get("granted")
        if channel not in channels or not isinstance(granted, bool):
            return
        current = state.consent.get(channel)
        if current is None or current.at <= ts:
            state.consent[channel] = Consent(granted, ts)

    def _cancel(self, state: CustomerState, ev: Event) -> None:
        by_id = self.rules.by_id
        keep = []
        for t in state.timers:
            rule = by_id.get(t.rule)
            unless = rule.unless_for_step(t.step) if rule is not None else None
            if (unless is not None and ev.type in unless.events and ev.ts >= t.cause_ts
                    and unless.key_of_candidate(ev) == t.key):
                if self.observer is not None:
                    self.observer.timer_ended(rule, t, TimerEnd.CANCELLED, ev)
                continue
            keep.append(t)
        if len(keep) != len(state.timers):
            state.timers = keep

    # -- timers ---------------------------------------------------------------------------

    def ctx(self, rule: CompiledRule, ev: Event) -> dict:
        if not rule.ctx_props:
            return _EMPTY
        props = ev.properties
        return {p: props[p] for p in rule.ctx_props if p in props}

    def arm(self, state: CustomerState, rule: CompiledRule, ev: Event, due: int, step: int, key: str, replace: bool) -> None:
        """Add a deadline. `replace`: a new cause re-arms the rule's pending wait with the same key.

        An older cause (a late event) never replaces a newer wait: in event-time order the newer
        cause came second and replaced it. A late cause whose wait ended before the newer cause
        came is armed on its own (in time order it would have fired before the newer one)."""
        timers = state.timers
        mine = [t for t in timers if t.rule == rule.id]
        same = [t for t in mine if t.key == key] if replace else []
        if same and any(t.cause_ts > ev.ts for t in same):
            if due >= min(t.cause_ts for t in same if t.cause_ts > ev.ts):
                self.counters.late_causes += 1
                return
            same = []
        for t in same:
            timers.remove(t)
            if self.observer is not None:
                self.observer.timer_ended(rule, t, TimerEnd.REPLACED, ev)
        if len(mine) - len(same) >= MAX_TIMERS_PER_RULE:
            self.counters.timers_dropped += 1   # bounded state beats unbounded waits; counted, never silent
            return
        self.add_timer(state, rule, Timer(due, rule.id, step, key, ev.event_id, ev.ts, self.ctx(rule, ev), ev.type))

    def add_timer(self, state: CustomerState, rule: CompiledRule, timer: Timer) -> None:
        """Every timer enters the state here: the one place a customer's next deadline can move
        earlier (besides a new state or a new stretch of inactivity), hence the flag the
        `Session` reads and clears to re-index the customer."""
        state.timers.append(timer)
        self.earlier_deadline = True
        if self.observer is not None:
            self.observer.timer_armed(rule, timer)

    def _restart(self, state: CustomerState, rule: CompiledRule, ev: Event | None) -> None:
        """Drop the rule's pending timers (deferred sends stay: they still go out)."""
        if self.observer is not None:
            for t in state.timers:
                if t.rule == rule.id:
                    self.observer.timer_ended(rule, t, TimerEnd.RESTARTED, ev)
        state.timers = [t for t in state.timers if t.rule != rule.id]

    def arm_recurring(self, state: CustomerState, rule: RecurringRule, after: int, ev: Event | None = None) -> None:
        """Arm the next occurrence after `after`, never one already fired: a profile re-sent or a
        time zone changed on the day must not fire the same birthday twice. `ev`: the profile
        event that moved it (None: the occurrence just fired)."""
        self._restart(state, rule, ev)
        anchor = parse_date(state.profile.get(rule.date_attr))
        if anchor is None:
            return
        r = rule.rule
        tz = state.profile.get("timezone")
        found = next_occurrence(anchor, r.every or "year", r.at, tz, after)
        if found is not None and found[1] == state.occurred.get(rule.id):
            found = next_occurrence(anchor, r.every or "year", r.at, tz, found[0])
        if found is None:
            return
        due, occurrence = found
        self.add_timer(state, rule, Timer(due, rule.id, 0, "", occurrence, due, _EMPTY))

    def start_series(self, state: CustomerState, rule: SeriesRule, ev: Event, moment: list[Candidate]) -> None:
        if any(t.rule == rule.id and t.cause_ts > ev.ts for t in state.timers):
            self.counters.late_causes += 1   # an older start (a late event) never restarts a newer series
            return
        self._restart(state, rule, ev)   # a new start restarts the series
        first = rule.steps[0]
        if first.cond is None or first.cond(state, ev, ev.ts):
            moment.append(self.candidate(state, rule, 0, first.then, f"{ev.event_id}#1", ev.event_id, ev.ts, ev))
        self.arm_step(state, rule, ev, 1, ev.ts)

    def arm_step(self, state: CustomerState, rule: SeriesRule, cause: Event, step: int, start: int) -> None:
        if step >= len(rule.steps):
            return
        s = rule.steps[step]
        key = s.unless.key_for_cause(state, cause, start) if s.unless else ""
        self.add_timer(state, rule, Timer(start + s.after, rule.id, step, key, cause.event_id, cause.ts,
                                           self.ctx(rule, cause), cause.type))

    def on_time(self, state: CustomerState, customer_id: str, now: int, out: list[Trigger],
                recurring_until: int | None = None) -> CustomerState:
        """Fire every deadline of this customer due at or before `now`, in deadline order.

        Deadlines due at the same instant form one moment for the policy (priority).
        `recurring_until` (a backtest's end of period) keeps recurring dates after it from
        firing while one-shot deadlines still do.
        """
        by_id = self.rules.by_id
        while True:
            due = [t for t in state.timers if t.due <= now]
            if due and recurring_until is not None:
                due = [t for t in due if t.due <= recurring_until or t.rule not in by_id
                       or not by_id[t.rule].dated]
            if self.rules.inactive and state.last_ts:
                due += self._idle_due(state, now)
            sends = [d for d in state.deferred if d.due <= now] if state.deferred else None
            if sends:
                first = min(d.due for d in sends)
                if due:
                    first = min(first, min(t.due for t in due))
                    due = [t for t in due if t.due == first]
                sends = sorted((d for d in sends if d.due == first), key=lambda d: (d.rule, d.step))
                state.deferred = [d for d in state.deferred if d not in sends]
            elif not due:
                return state
            if len(due) <= 1:   # the common case: one deadline
                batch = due
            else:
                first = min(t.due for t in due)
                batch = sorted((t for t in due if t.due == first), key=lambda t: (t.rule, t.step, t.key))
            if batch and state.timers:
                state.timers = [t for t in state.timers if t not in batch]
            moment: list[Candidate] = []
            for t in batch:
                rule = by_id.get(t.rule)
                if rule is None:   # a rule removed by a reload leaves its timers to lapse
                    if self.observer is not None:
                        self.observer.timer_ended(None, t, TimerEnd.RULE_GONE, None)
                    continue
                self.counters.timers_fired += 1
                self._fire(state, rule, t, customer_id, moment)
            if moment:
                self.decide(state, customer_id, moment, out)
            if sends:
                self._send_deferred(state, customer_id, sends, out)

    def _send_deferred(self, state: CustomerState, customer_id: str, sends: list[Deferred],
                       out: list[Trigger]) -> None:
        """Deferred sends due at one instant: each decided alone, after the deadlines of that
        instant, and never deferred again."""
        for d in sends:
            rule = self.rules.by_id.get(d.rule)
            if rule is not None:
                self.counters.timers_fired += 1
            candidate = rule.resumed(self, state, d) if rule is not None else None
            if self.observer is not None:
                self.observer.deferred_due(rule, d, candidate is not None)
            if candidate is not None:
                self.decide(state, customer_id, [candidate], out, allow_defer=False)

    def _fire(self, state: CustomerState, rule: CompiledRule, t: Timer, customer_id: str,
              moment: list[Candidate]) -> None:
        if not rule.accepts(t):   # left by a reload that changed the rule's shape: it lapses
            if self.observer is not None:
                self.observer.timer_ended(rule, t, TimerEnd.RULE_GONE, None)
            return
        made = rule.fired(self, state, t, Event(t.cause, t.cause_type, customer_id, t.cause_ts, t.ctx), moment)
        if self.observer is not None:
            self._tell_fired(rule, t, made)

    def _tell_fired(self, rule: CompiledRule, t: Timer, made: bool) -> None:
        assert self.observer is not None
        if made:
            self.observer.timer_fired(rule, t)
        else:
            self.observer.timer_ended(rule, t, TimerEnd.CONDITION_FALSE, None)

    # -- triggers -------------------------------------------------------------------------

    @staticmethod
    def candidate(state: CustomerState, rule: CompiledRule, step: int, action: CompiledAction, cause: str,
                  cause_event_id: str, at: int, ev: Event) -> Candidate:
        payload = {key: fn(state, ev, at) for key, fn in action.payload} if action.payload else {}
        return Candidate(rule, step, action, cause, cause_event_id, at, payload, ev.ts)

    @staticmethod
    def deferred_candidate(rule: CompiledRule, d: Deferred) -> Candidate | None:
        """The candidate of a deferred send; None if a reload left the rule without its action."""
        action = rule.action_for_step(d.step)
        if action is None:
            return None
        return Candidate(rule, d.step, action, d.cause, d.cause_event_id, d.due, d.payload, d.cause_ts,
                         first_at=d.deferred_at)

    def decide(self, state: CustomerState, customer_id: str, moment: list[Candidate], out: list[Trigger],
                allow_defer: bool = True) -> None:
        for d in self.policy.decide(state, customer_id, moment, allow_defer):
            c = d.candidate
            if d.status is DEFERRED:
                if self.observer is not None:
                    self.observer.decision(d, None)
                state.deferred.append(Deferred(d.until, c.rule.id, c.step, c.cause, c.cause_ts, c.cause_event_id,
                                               c.payload, c.at))
                self.earlier_deadline = True
                continue   # a journey waits at the send until it goes out
            self._count(d)
            if d.status is SENT or d.status is HELD_OUT:
                self.attributor.open(state, c.rule.id, c.at, d.status is HELD_OUT)
            trigger = Trigger(
                trigger_id(c.rule.id, customer_id, c.cause, c.cause_ts), c.rule.id, customer_id, c.action.action,
                d.channel, d.status, d.reason, format_ts(c.at), c.cause_event_id, c.payload,
                UNSET if c.step_id is None else c.step_id,
            )
            out.append(trigger)
            if self.observer is not None:
                self.observer.decision(d, trigger)
            if c.step_id is not None:   # a journey goes on from its send
                c.rule.decided(self, state, customer_id, d, out)

    def _count(self, d: Decision) -> None:
        o = self.outcomes.get(d.candidate.rule.id)
        if o is None:
            o = self.outcomes[d.candidate.rule.id] = RuleOutcome(suppressed={})
        if d.status is SENT:
            o.sent += 1
        elif d.status is HELD_OUT:
            o.held_out += 1
        elif d.reason is not None:   # suppressed: the policy always says why
            o.suppressed[d.reason] = o.suppressed.get(d.reason, 0) + 1
