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
    step: int               # 1-based step of a series; 1 otherwise
    due: str
    what: str               # "deadline", "deferred send (quiet hours)", "occurrence 2026-05-04"
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


class RuleExplanation(msgspec.Struct, omit_defaults=False):
    rule_id: str
    type: str                      # threshold / transactional / behavioral / recurring
    kind: str                      # immediate / absence / delay / series / inactive / recurring
    shape: str                     # how it fires, in words
    summary: str                   # the verdict in one line
    condition: ConditionCheck | None
    triggers: list[TriggerView]    # backtest: this customer's triggers of the rule
    timers: list[TimerView]
    last_contact: str | None
    notes: list[str]               # backtest: notable moments (cancelled waits, false conditions, …)


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

