"""`triggers explain`: why a customer got (or did not get) each trigger.

Two sources of a customer's state:
- a backtest: only this customer's events are replayed, through the same `Session` as the
  backtest and the live engine, with an observer the evaluator tells what it does: each
  evaluation of a rule's `if:`, waits cancelled or re-armed, sends deferred by quiet hours,
  each policy decision with the fact that decided it. The explain time is the customer's last
  event (or `until` / `at`); deadlines due by then fire, later ones are shown as waiting (as
  a backtest leaves them pending at its end of data, unless drained; `at` moves the clock on);
- live: the state the engine keeps in Redis, read once and never written; the explain time
  is now (or `at`). There is no trigger history then, only what the state remembers (last
  contact per rule, open triggers, armed thresholds, pending deadlines).

Conditions are shown as the rules read them at the explain time (`conditions`).

Modules: `model` (the result structs and errors), `customer` (`explain_customer`), `trace`
(the backtest replay and observer), `views` (state, timers, rules), `journey` (a journey's
position, its wait and its steps), `conditions`, `render` (the text report). The command line is `engine.cli.explain`.
"""

from engine.offline.explain.conditions import check_condition, condition_env
from engine.offline.explain.customer import explain_customer
from engine.offline.explain.model import (
    AggregateValue,
    ConditionCheck,
    ConditionPart,
    ExplainError,
    Explanation,
    JourneyMove,
    JourneyView,
    JourneyWait,
    Operand,
    RuleExplanation,
    StateView,
    TimerView,
    TriggerView,
    UnknownCustomer,
)
from engine.offline.explain.render import print_explanation

__all__ = [
    "AggregateValue", "ConditionCheck", "ConditionPart", "Explanation", "ExplainError", "JourneyMove", "JourneyView",
    "JourneyWait", "Operand",
    "RuleExplanation", "StateView", "TimerView", "TriggerView", "UnknownCustomer", "check_condition",
    "condition_env", "explain_customer", "print_explanation",
]
