"""What the evaluator and the contact policy tell an observer as they work: the conditions they
evaluated with their values, the timers they armed, cancelled, fired or let lapse, the sends
they deferred, and each policy decision with the detail that decided it.

`triggers explain` is an observer: it is told what happened instead of reconstructing it
from the state afterwards, so a change to the evaluator cannot silently make explanations
wrong. The hot path passes `None`: each hook site costs one `is not None` test. Every hook
has a no-op default, so an observer implements only what it needs; hooks must not mutate the
state, the timer or the decision they are handed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.actions.trigger import Trigger
    from engine.events.model import Event
    from engine.policy.contact import Decision
    from engine.rules.kinds import CompiledRule
    from engine.state.customer import Deferred, Timer


class TimerEnd:
    """Why a stored timer left the state without firing a candidate (`Observer.timer_ended`)."""

    CANCELLED = "cancelled"          # an `unless` event came before the deadline
    REPLACED = "replaced"            # a newer cause re-armed the rule's wait with the same key
    RESTARTED = "restarted"          # a new start restarted the series, a profile change the recurring date
    CONDITION_FALSE = "condition_false"   # due, but the rule's (or the step's) `if:` was false then
    #                                       (inactivity deadlines too, as transient timers)
    RULE_GONE = "rule_gone"          # its rule was removed or reshaped by a reload: it lapses


class Observer:
    """No-op defaults: subclass it and override what you need."""

    def event_applied(self, ev: Event) -> None:
        """A (non-duplicate) event reached the rules; its duplicates are not told."""

    def condition(self, rule: CompiledRule, ev: Event, value: Any) -> None:
        """A rule of the event's type evaluated its `if:` on `ev` to `value` (what the rule then
        tests for truth); a rule without `if:` is told `True`. Conditions read at a deadline
        (series steps, recurring, inactivity) are told through `timer_ended` / `timer_fired`."""

    def timer_armed(self, rule: CompiledRule, timer: Timer) -> None:
        """A deadline was added to the state (a deferred send is told by `decision`)."""

    def timer_ended(self, rule: CompiledRule | None, timer: Timer, why: str, ev: Event | None) -> None:
        """A timer left the state without making a candidate (`TimerEnd`); `ev` caused it, if an event did."""

    def timer_fired(self, rule: CompiledRule, timer: Timer) -> None:
        """A deadline came due and made a candidate: the policy decides next.
        Inactivity deadlines, implicit in the state, come as transient timers."""

    def deferred_due(self, rule: CompiledRule | None, send: Deferred, made: bool) -> None:
        """A send deferred out of quiet hours came due: `made` if it became a candidate again
        (the policy decides it next, never deferring it twice); otherwise it lapsed, its rule
        (None: removed) changed by a reload since."""

    def journey(self, rule: CompiledRule, at: int, what: str, detail: str, step: str = "", to: str = "") -> None:
        """A journey moved (engine.rules.journey): `what` is "entered", "not entered", a branch
        taken ("yes", "no", "split": to the step `to`), "next" (a delay is over), "ignored" (an
        event of an awaited type that does not answer the wait: another `match`, or late) or
        "ended"; `detail` says why, in words; `step` is the step id it happened at ("" for an
        entry): the wait, condition, split or delay answered, or the step the walk ended at."""

    def decision(self, decision: Decision, trigger: Trigger | None) -> None:
        """The policy decided a candidate; `trigger` is what it became (None: deferred by quiet
        hours, to `decision.until`). `decision.detail` holds the fact that decided it
        (`engine.policy.contact.Decision`): which cap, which winner, which previous contact,
        the consent record, the time zone of quiet hours, the control group."""


__all__ = ["Observer", "TimerEnd"]
