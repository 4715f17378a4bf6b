"""`explain_customer`: one customer's explanation, from a backtest of its events or from a live
state, assembled from the trace (what the evaluator told) and the views.

Customers are independent, so replaying only this customer's events gives what a full
`triggers backtest` computes for them; an events file is pre-filtered on its raw bytes, so only
the lines that can be the customer's are decoded. The one exception is the population's best
hour (`send_time: best`, SPEC §3b), which counts every customer's responses: with such a rule
the whole input is replayed once first to count them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from engine.core.times import format_ts, now_ms, parse_ts
from engine.events.decode import decode_jsonl
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.offline.explain.conditions import condition_env
from engine.offline.explain.model import ExplainError, Explanation, UnknownCustomer
from engine.offline.explain.trace import Trace
from engine.offline.explain.views import explain_rule, state_view, timer_views
from engine.policy.timing import Population
from engine.rules.compiler import CompiledRules, load_and_compile
from engine.rules.errors import did_you_mean
from engine.state.customer import CustomerState


def explain_customer(
    rules: CompiledRules | str | Path,
    customer_id: str,
    *,
    events: str | Path | Iterable[Event] | None = None,
    state: CustomerState | None = None,
    rule_id: str | None = None,
    until: int | str | None = None,
    at: int | str | None = None,
    where: str | None = None,
) -> Explanation:
    """Explain one customer, from a backtest of `events` (a JSONL file or decoded events) or
    from a live `state` (e.g. loaded with `RedisStore.load_many`); exactly one of them.

    `until`: backtest only, events after it are not replayed (as in `triggers backtest`).
    `at`: the explain time (epoch ms or RFC 3339); default: the customer's last event (or
    `until`) for a backtest, the wall clock for a live state.
    Raises UnknownCustomer when the customer has no event / no state, ExplainError when a
    `rule_id` does not exist or the arguments do not fit, RulesInvalid for invalid rules.
    """
    compiled = rules if isinstance(rules, CompiledRules) else load_and_compile(rules)
    if (events is None) == (state is None):
        raise ExplainError("give either events (a backtest) or a state (live), not both or neither")
    if rule_id is not None and rule_id not in compiled.by_id:
        raise ExplainError(f"no rule '{rule_id}' in the rules{did_you_mean(rule_id, compiled.by_id)}; "
                           f"the rules are: {', '.join(compiled.by_id)}")
    until_ms = _ms(until, "until")
    at_ms = _ms(at, "at")
    selected = [compiled.by_id[rule_id]] if rule_id else list(compiled.rules)
    trace: Trace | None
    if events is not None:
        where = where or (str(events) if isinstance(events, (str, Path)) else "events")
        trace, at_ms, basis = _replay(compiled, customer_id, events, until_ms, at_ms, where)
        st = trace.state if trace.state is not None else CustomerState()   # --at before the first event
        source, n_events = "backtest", trace.events
    else:
        if until_ms is not None:
            raise ExplainError("--until applies to a backtest (--events), not to a live state")
        assert state is not None
        trace = None
        st = state
        basis = "--at" if at_ms is not None else "now"
        if at_ms is None:
            at_ms = now_ms()
        source, n_events = "live", 0
        where = where or "state"
    env = condition_env(compiled)
    timers = timer_views(compiled, st, at_ms, live=trace is None)
    return Explanation(
        customer_id=customer_id, source=source, where=where, at=format_ts(at_ms), at_basis=basis,
        events=n_events, state=state_view(compiled, st, at_ms),
        timers=timers,
        rules=[explain_rule(compiled, env, r, st, at_ms, timers, trace) for r in selected],
    )


def _replay(rules: CompiledRules, customer_id: str, events: str | Path | Iterable[Event], until: int | None,
            at: int | None, where: str) -> tuple[Trace, int, str]:
    """The customer's events replayed up to the explain time; (trace, explain time, its basis)."""
    if not isinstance(events, (str, Path)):
        events = list(events)   # read twice when the population is counted
    elif str(events) == "-" and rules.uses_population:
        events = [e for batch in decode_jsonl(events) for e in batch.events]
    evs = _customer_events(events, customer_id)
    if until is not None:
        evs = _before(evs, until)
    if not evs:
        raise UnknownCustomer(_no_events(events, customer_id, until))
    basis = "--at" if at is not None else ("--until" if until is not None else "last event")
    if at is None:
        at = until if until is not None else max(e.ts for e in evs)
    evs = _before(evs, at)
    population = _population(rules, events, at) if rules.uses_population else None
    trace = Trace(rules, customer_id, where, population)
    trace.replay(evs, at)
    return trace, at, basis


def _population(rules: CompiledRules, events: str | Path | list[Event], at: int) -> Population:
    """`send_time: best` falls back on every customer's responses, not only this one's: the whole
    input is replayed up to the explain time (as the backtest does) to count them."""
    replay = Replay(rules, lambda _triggers: None, until=at)   # only its counts matter
    if isinstance(events, (str, Path)):
        replay.feed_file(events)
    else:
        replay.feed(events)
    counts = replay.session.population.counts
    frozen = Population(shared=True)   # read only: the customer's replay records nothing more into it
    frozen.add_final(counts, 2**62)
    return frozen


def _ms(value: int | str | None, what: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_ts(value)
    except ValueError as e:
        raise ExplainError(f"--{what}: {e}") from None


def _before(events: list[Event], cutoff: int) -> list[Event]:
    """Events in file order up to the first one after `cutoff` (as a backtest's --until stops)."""
    for i, ev in enumerate(events):
        if ev.ts > cutoff:
            return events[:i]
    return events


def _customer_events(events: str | Path | Iterable[Event], customer_id: str) -> list[Event]:
    """This customer's events, in file order. A file is pre-filtered on the raw bytes (a line
    that does not contain the id cannot be the customer's), so only candidate lines are decoded."""
    if not isinstance(events, (str, Path)):
        return [e for e in events if e.customer_id == customer_id]
    if str(events) != "-" and not Path(events).is_file():
        raise ExplainError(f"no such events file: {events}")
    needle = customer_id.encode()
    # An id that JSON may write with escapes cannot be pre-filtered on bytes: decode every line.
    prefilter = customer_id.isascii() and customer_id.isprintable() and not any(c in customer_id for c in '"\\/')
    found: list[Event] = []
    for batch in decode_jsonl(events, containing=needle if prefilter else None):
        found += [e for e in batch.events if e.customer_id == customer_id]
    return found


def _no_events(events: str | Path | Iterable[Event], customer_id: str, until: int | None) -> str:
    upto = f" up to {format_ts(until)}" if until is not None else ""
    if not isinstance(events, (str, Path)) or str(events) == "-":
        return f"customer '{customer_id}' has no events{upto}"
    ids: set[str] = set()
    for batch in decode_jsonl(events):   # the error path only: find a close id to suggest
        ids.update(e.customer_id for e in batch.events)
    return f"customer '{customer_id}' has no events in {events}{upto}{did_you_mean(customer_id, ids)}"

