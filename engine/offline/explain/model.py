"""What `triggers explain` returns: the explanation of one customer as typed structs (the
`--json` output is these, encoded), and the errors of a request that cannot be explained.

Times are RFC 3339 strings (UTC), values as the rules read them at the explain time.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.errors import EngineError


class ExplainError(EngineError):
    """A request that cannot be explained; `exit_code` follows the CLI's convention."""

    exit_code = 2


class UnknownCustomer(ExplainError):
    exit_code = 1


# -- the result ----------------------------------------------------------------------------------

class AggregateValue(msgspec.Struct, omit_defaults=False):
    name: str
    definition: str         # "sum of amount on purchase", "count of product_view over 7d", …
    value: Any              # as the rules read it at the explain time
    display: str            # the value for people (timestamps as RFC 3339, decayed counts rounded)


class ConsentView(msgspec.Struct, omit_defaults=False):
    channel: str
    granted: bool | None    # None: no decision recorded
    at: str | None          # when the decision was made (event time)
    effect: str             # "contacted", "suppressed (no_consent)"


class ContactView(msgspec.Struct, omit_defaults=False):
    at: str
    channel: str


class OpenTriggerView(msgspec.Struct, omit_defaults=False):
    rule_id: str
    at: str
    held_out: bool
    responded: bool
    converted: bool
    until: str              # end of its attribution window


class StateView(msgspec.Struct, omit_defaults=False):
    last_event_at: str | None
    aggregates: list[AggregateValue]
    profile: dict[str, Any]
    consent: list[ConsentView]            # every channel the rules use, and any other with a decision
    contacts: list[ContactView]           # recent contacts counted by frequency caps
    last_contact: dict[str, str]          # rule id -> its last sent or held-out trigger (cooldown)
    open_triggers: list[OpenTriggerView]  # sent/held-out triggers whose attribution window is still open
    armed: list[str]                      # threshold rules whose condition is currently true


class TimerView(msgspec.Struct, omit_defaults=False):
    rule_id: str
    step: int               # 1-based step of a series (of a journey: its place in the file); 1 otherwise
    due: str
    what: str               # "deadline", "deferred send (quiet hours)", "occurrence 2026-05-04",
    #                         "journey wait 'clicked' for email_clicked", "journey delay 'b'"
    cause: str              # event id that armed it (occurrence date for recurring)
    cause_at: str
    overdue: bool           # live: due before the explain time, not yet fired by the engine


class Operand(msgspec.Struct, omit_defaults=False):
    text: str
    value: Any


class ConditionPart(msgspec.Struct, omit_defaults=False):
    text: str
    holds: bool
    value: Any
    operands: list[Operand] = []   # comparisons: the values compared (constants left out)


class ConditionCheck(msgspec.Struct, omit_defaults=False):
    expression: str
    holds: bool
    value: Any
    joiner: str | None             # "and" / "or" between the parts; None: one part
    parts: list[ConditionPart]
    event_id: str | None           # the event the `event.*` reads came from (None: read as missing)
    at: str                        # the `now` it was evaluated at
    note: str | None = None        # when the parts disagree with the whole (a data error voids it all)
    reads_event: bool = False      # the expression reads event.* (else `event_id` does not matter)


class TriggerView(msgspec.Struct, omit_defaults=False):
    trigger_id: str
    action: str
    channel: str
    status: str
    reason: str | None
    fired_at: str
    cause_event_id: str
    payload: dict[str, Any]
    why: str                       # the status in words, with the policy detail that decided it
    step: str | None = None        # a journey's trigger: the step that sent it


class JourneyWait(msgspec.Struct, omit_defaults=False):
    """The wait a customer is in: a wait for an event (answered `yes` by it in time, `no` by the
    deadline) or a plain delay (`next` at the deadline)."""

    step: str
    kind: str                      # "wait" (for an event) or "delay"
    since: str                     # when the wait began
    due: str                       # its deadline
    awaits: list[str]              # wait: the event types that answer it; delay: []
    match: dict[str, str]          # wait: what the event's properties must be, rendered from the entry event
    overdue: bool                  # live: due before the explain time, not yet fired by the engine


class JourneyMove(msgspec.Struct, omit_defaults=False):
    """One move of a walk, as the evaluator told it (backtest)."""

    at: str
    step: str | None               # the step it happened at; None for an entry
    what: str                      # entered / not entered / yes / no / split / next / ended
    to: str | None                 # where the walk went: a step id or "end"; None when it stopped
    detail: str                    # why, in words (the answering event, the condition's value, the draw, …)


class JourneyView(msgspec.Struct, omit_defaults=False):
    """A journey rule's customer (SPEC §3a): where they are (from the state, backtest or live),
    the wait they are in, and, from a backtest, the moves that brought them there. The defaults
    are a customer who never entered."""

    inside: bool = False           # walking it now
    step: str | None = None        # inside: the current step's id
    step_kind: str | None = None   # send / delay / wait / condition / split; None: not in the journey (edited)
    leads: dict[str, str] = {}     # the current step's ways out: next / yes / no / split.<id> -> step id or "end"
    wait: JourneyWait | None = None   # inside a wait or a delay: its deadline and what answers it
    deferred_until: str | None = None   # inside a send deferred out of quiet hours: when it goes out
    ended: str | None = None       # why the latest walk ended ("completed", "exit_on:purchase", …); None inside
    ended_at: str | None = None    # backtest: when it ended (the state does not keep it)
    entered_at: str | None = None  # the latest walk's entry; None: never entered
    entry_event: str | None = None   # its entry event's id
    entry_type: str | None = None
    held_out: bool = False         # drawn at entry: every send of the walk recorded held_out
    since: str | None = None       # inside: when the current step began
    repeats: int = 0               # sends this walk made again, looping back to a step it sent before
    steps: list[str] = []          # the journey's steps in file order, one line each ("hello: send welcome-1 …")
    moves: list[JourneyMove] = []  # backtest: the latest moves (entries, branches with why, ends); live: []


class RuleExplanation(msgspec.Struct, omit_defaults=False):
    rule_id: str
    type: str                      # threshold / transactional / behavioral / recurring / journey
    kind: str                      # immediate / absence / delay / series / inactive / recurring / journey
    shape: str                     # how it fires, in words
    summary: str                   # the verdict in one line
    condition: ConditionCheck | None
    triggers: list[TriggerView]    # backtest: this customer's triggers of the rule
    timers: list[TimerView]
    last_contact: str | None
    notes: list[str]               # backtest: notable moments (cancelled waits, false conditions, a journey's walk, …)
    journey: JourneyView | None = None   # a journey rule: the customer's position; None for other kinds


class Explanation(msgspec.Struct, omit_defaults=False):
    customer_id: str
    source: str                    # "backtest" or "live"
    where: str                     # the events file, or the Redis URL and key
    at: str                        # the explain time
    at_basis: str                  # "last event", "--at", "--until", "now"
    events: int                    # backtest: this customer's events replayed
    state: StateView
    timers: list[TimerView]
    rules: list[RuleExplanation]

