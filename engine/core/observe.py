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
    from engine.events.model import Event
    from engine.policy.contact import Candidate, Decision
    from engine.rules.compiler import CompiledRule
    from engine.state.customer import Timer


class TimerEnd:
    """Why a stored timer left the state without firing a candidate (`Observer.timer_ended`)."""

    CANCELLED = "cancelled"          # an `unless` event came before the deadline
    REPLACED = "replaced"            # a newer cause re-armed the rule's wait with the same key
    RESTARTED = "restarted"          # a new start restarted the series, a profile change the recurring date
    CONDITION_FALSE = "condition_false"   # due, but the rule's (or the step's) `if:` was false then
    RULE_GONE = "rule_gone"          # its rule was removed or reshaped by a reload: it lapses


class Observer:
    """No-op defaults; subclass and override what you need."""

    def event_applied(self, ev: Event) -> None:
        """A (non-duplicate) event reached the rules; its duplicates are not told."""

    def condition(self, rule: CompiledRule, ev: Event | None, now: int, value: Any) -> None:
        """A rule's `if:` was evaluated (on `ev`, or on a deadline when None) to `value`.
        Also told, with `value` True, for a rule of the event's type that has no `if:`."""

    def timer_armed(self, rule: CompiledRule, timer: Timer) -> None:
        """A deadline (or a deferred send) was added to the state."""

    def timer_ended(self, rule: CompiledRule | None, timer: Timer, why: str, ev: Event | None) -> None:
        """A stored timer left the state without a candidate (`TimerEnd`); `ev` caused it, if an event did."""

    def timer_fired(self, rule: CompiledRule, timer: Timer) -> None:
        """A deadline came due and its rule made a candidate (the policy decides next)."""

    def inactivity_lapsed(self, rule: CompiledRule, due: int) -> None:
        """An inactivity deadline came due with the rule's `if:` false: nothing was sent."""

    def decision(self, decision: Decision, detail: dict[str, Any]) -> None:
        """The policy decided a candidate. `detail` says why, per outcome:
        `no_consent`: consent (the recorded [granted, ts] or None), required;
        `cooldown`: previous (epoch ms of the rule's last contact), cooldown (ms);
        `priority`: winner (the candidate that won the moment);
        `quiet_hours_dropped` / deferred: timezone, start, end, mode;
        `frequency_cap`: cap (the `FrequencyCap` reached), count;
        held out: share, scope ("rule" or "global")."""

    def deferred(self, candidate: Candidate, until: int) -> None:
        """A send was deferred by quiet hours to `until` (epoch ms)."""


__all__ = ["Observer", "TimerEnd"]
