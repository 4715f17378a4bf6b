"""A journey's funnel (SPEC §3a): customers entered, reaching each step, taking each branch,
each send's outcome and each way out, the held-out group counted beside the contacted one.

Counted by the evaluator as journeys move (engine.rules.journey), one `Funnel` per journey
and run; the backtest summary, `report` and the HTML report show it.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Exit(StrEnum):
    """Why a walk through a journey ended; the values are what the funnel and explain show."""

    COMPLETED = "completed"          # reached `end`
    EXIT_EVENT = "exit_on"           # an `exit_on` event came (the key names it: "exit_on:purchase")
    SUPPRESSED = "suppressed"        # the contact policy suppressed a send ("suppressed:no_consent")
    STEP_REMOVED = "step_removed"    # an edit removed the step the customer was at
    RESTARTED = "restarted"          # `reenter: restart` and a new entry event


class NotEntered(StrEnum):
    """Why an entry event did not start a walk."""

    INSIDE = "already_inside"        # still walking it (reenter: after_end, or a duration)
    NEVER = "reenter_never"          # walked it before, and `reenter: never`
    TOO_SOON = "reenter_too_soon"    # `reenter: 30d` and the previous entry is more recent
    LATE = "late_entry"              # older than the walk in progress (a late event)


class Pair(msgspec.Struct):
    """A count for the contacted group and one for the held-out group."""

    contacted: int = 0
    held_out: int = 0

    def add(self, held_out: bool) -> None:
        if held_out:
            self.held_out += 1
        else:
            self.contacted += 1

    @property
    def total(self) -> int:
        return self.contacted + self.held_out


class Funnel(msgspec.Struct):
    """One journey's counts over a run (walks, not distinct customers: a customer who re-enters counts again)."""

    journey: str
    steps: list[str]                                        # the step ids in file order
    entered: Pair = msgspec.field(default_factory=Pair)
    reached: dict[str, Pair] = {}                           # step id -> walks that reached it
    branches: dict[str, dict[str, Pair]] = {}               # step id -> "yes"/"no"/split target -> walks
    sends: dict[str, dict[str, int]] = {}                   # send step id -> status or "suppressed:reason" -> count
    exits: dict[str, Pair] = {}                             # Exit value (with its detail) -> walks
    not_entered: dict[str, int] = {}                        # NotEntered value -> entry events

    def reach(self, step: str, held_out: bool) -> None:
        pair = self.reached.get(step)
        if pair is None:
            pair = self.reached[step] = Pair()
        pair.add(held_out)

    def branch(self, step: str, branch: str, held_out: bool) -> None:
        by = self.branches.setdefault(step, {})
        pair = by.get(branch)
        if pair is None:
            pair = by[branch] = Pair()
        pair.add(held_out)

    def send(self, step: str, outcome: str) -> None:
        by = self.sends.setdefault(step, {})
        by[outcome] = by.get(outcome, 0) + 1

    def exit(self, why: str, held_out: bool) -> None:
        pair = self.exits.get(why)
        if pair is None:
            pair = self.exits[why] = Pair()
        pair.add(held_out)

    def skip(self, why: NotEntered) -> None:
        self.not_entered[why] = self.not_entered.get(why, 0) + 1

    @property
    def inside(self) -> Pair:
        """Walks still in progress at the end of the run: entered and not ended."""
        ended = Pair(sum(p.contacted for p in self.exits.values()), sum(p.held_out for p in self.exits.values()))
        return Pair(self.entered.contacted - ended.contacted, self.entered.held_out - ended.held_out)


__all__ = ["Exit", "Funnel", "NotEntered", "Pair"]
