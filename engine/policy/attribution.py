"""Response tracking: events that follow a trigger within its attribution window count as
its response or conversion, for sent and held-out triggers alike, so the contacted group can
be compared with the control group (lift).

Each sent or held-out trigger stays open in the customer's state for the window
(`CustomerState.open_triggers`); a response or conversion event marks every open trigger
it follows (strictly later in time) once. Revenue sums every conversion in the window, each
conversion once per rule however many of the rule's triggers are open (per customer and rule,
as lift counts it: engine.policy.customers).
"""

from __future__ import annotations

from engine.events.model import Event, amount
from engine.policy.outcomes import RuleOutcome
from engine.rules.model import Attribution
from engine.state.customer import CustomerState, OpenTrigger

MAX_OPEN = 16   # open triggers kept per customer; the oldest close first


class Attributor:
    def __init__(self, settings: Attribution, windows: dict[str, int]) -> None:
        self.responses = frozenset(settings.responses)
        self.conversions = frozenset(settings.conversions)
        self.revenue_field = settings.revenue
        self.default_window = settings.window
        self.windows = windows   # rule id -> window ms, where a rule overrides the default
        self.watched = self.responses | self.conversions

    def open(self, state: CustomerState, rule_id: str, at: int, held_out: bool) -> None:
        until = at + self.windows.get(rule_id, self.default_window)
        entries = [e for e in state.open_triggers if e.until >= at]
        entries.append(OpenTrigger(rule_id, at, held_out, False, False, until))
        if len(entries) > MAX_OPEN:
            del entries[0]
        state.open_triggers = entries

    def observe(self, state: CustomerState, ev: Event, outcomes: dict[str, RuleOutcome]) -> None:
        """Attribute a response/conversion event to the open triggers it follows."""
        ts = ev.ts
        entries = [e for e in state.open_triggers if e.until >= ts]
        is_response = ev.type in self.responses
        is_conversion = ev.type in self.conversions
        revenue = 0.0
        credited: set[str] | None = None   # rules this conversion's revenue already went to
        if is_conversion:
            revenue = float(amount(ev.properties.get(self.revenue_field)))
            credited = set()
        for e in entries:
            rule_id, at, held = e.rule, e.at, e.held_out
            if ts <= at:
                continue
            o = outcomes.get(rule_id)
            if o is None:
                o = outcomes[rule_id] = RuleOutcome(suppressed={})
            if is_response and not e.responded:
                e.responded = True
                if held:
                    o.held_out_responded += 1
                else:
                    o.responded += 1
            if credited is not None:
                if not e.converted:
                    e.converted = True
                    if held:
                        o.held_out_converted += 1
                    else:
                        o.converted += 1
                if rule_id in credited:
                    continue
                credited.add(rule_id)
                if held:
                    o.held_out_revenue += revenue
                else:
                    o.revenue += revenue
        state.open_triggers = entries
