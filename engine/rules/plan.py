"""What an event of one type does (the compiler's `EventPlan`), in a module of its own so that it
is compiled with the core (setup.py): the evaluator reads a plan's fields on every event, and a
compiled class's fields are read directly, a plain class's by a generic attribute lookup each."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.rules.aggregates import StateUpdate, Update
    from engine.rules.journey import JourneyRule
    from engine.rules.kinds import CompiledRule, InactiveRule


class EventPlan:
    """What an event of one type does: aggregates to update, rules to run, timers it may cancel."""

    __slots__ = ("updates", "filtered", "rules", "cancels", "profile", "consent", "responds", "idle_of", "journeys",
                 "engagement", "special")

    def __init__(self, updates: tuple[Update, ...], filtered: tuple[StateUpdate, ...], rules: tuple[CompiledRule, ...],
                 cancels: bool, profile: bool, consent: bool, responds: bool,
                 idle_of: tuple[InactiveRule, ...] = (), journeys: tuple[JourneyRule, ...] = (),
                 engagement: int = -1) -> None:
        self.updates = updates
        self.filtered = filtered      # aggregates with a `where:`: they read the state (its profile)
        self.rules = rules
        self.cancels = cancels
        self.profile = profile
        self.consent = consent
        self.responds = responds      # a response or conversion: attribute it to open triggers
        self.idle_of = idle_of        # `inactive … of:` rules this type re-arms
        self.journeys = journeys      # journeys this type exits or answers a wait of
        self.engagement = engagement  # a response of the policy's channel of this index (SPEC §3b); -1: none
        self.special = (cancels or profile or consent or responds or bool(idle_of) or bool(journeys)
                        or engagement >= 0)   # one test on the common path
