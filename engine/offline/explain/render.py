"""The readable report of `triggers explain`: an `Explanation` as text for people (the
`--json` output is the struct itself). Only formatting: every fact comes from the struct.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

import msgspec

from engine.actions.numbers import without_float_noise
from engine.offline.explain.model import (
    ConditionCheck,
    Explanation,
    JourneyView,
    RuleExplanation,
    StateView,
    TimerView,
)

Print = Callable[..., None]


_WORDS = {None: "missing", True: "true", False: "false"}


def fmt(value: Any, amount: bool = False) -> str:
    """A value for people: numbers without float noise, null as `missing`, JSON otherwise.
    Floats show 6 significant digits, an `amount` (a `sum` aggregate) every one a payload shows
    (`engine.actions.numbers`): a spend of 17096.92 is not 17096.9."""
    if value is None or value is True or value is False:
        return _WORDS[value]
    if isinstance(value, float):
        if amount:
            return repr(without_float_noise(value))
        return f"{value:.6g}" if abs(value) < 1e15 else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: (-kv[1], str(kv[0]))) if all(
            isinstance(v, (int, float)) for v in value.values()) else list(value.items())
        return "{" + ", ".join(f"{fmt(str(k))}: {fmt(v, amount)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v, amount) for v in value) + "]"
    return str(value)




def print_explanation(e: Explanation, stream: TextIO) -> None:
    """The readable report: state, pending timers, then one block per rule."""
    def p(text: str = "") -> None:
        print(text, file=stream)

    basis = f"{e.at} ({e.at_basis})"
    if e.source == "backtest":
        p(f"customer {e.customer_id}: backtest of {e.where}, {e.events:,} of its events, explained at {basis}")
    else:
        p(f"customer {e.customer_id}: live state from {e.where}, explained at {basis}")
    _print_state(e.state, p)
    _print_timers(e.timers, e.source == "backtest", p)
    for r in e.rules:
        _print_rule(r, e.source, p)


def _print_state(s: StateView, p: Print) -> None:
    p()
    p("state")
    p(f"  last event     {s.last_event_at or '-'}")
    width = max([0] + [len(a.name) for a in s.aggregates])
    for i, a in enumerate(s.aggregates):
        label = "aggregates" if i == 0 else ""
        p(f"  {label:<13}  {a.name:<{width}} = {a.display}    ({a.definition})")
    profile = ", ".join(f"{k} = {fmt(v)}" for k, v in sorted(s.profile.items())) or "-"
    p(f"  profile        {profile}")
    for i, c in enumerate(s.consent):
        label = "consent" if i == 0 else ""
        decided = "no decision" if c.granted is None else (
            f"opted in at {c.at}" if c.granted else f"opted out at {c.at}")
        p(f"  {label:<13}  {c.channel}: {decided} → {c.effect}")
    contacts = ", ".join(f"{c.at} {c.channel}" for c in s.contacts) or "-"
    p(f"  contacts       {contacts}")
    last = ", ".join(f"{r} {ts}" for r, ts in sorted(s.last_contact.items())) or "-"
    p(f"  last contact   {last}")
    if s.open_triggers:
        for i, o in enumerate(s.open_triggers):
            label = "open triggers" if i == 0 else ""
            flags = ", ".join(x for x, on in (("held out", o.held_out), ("responded", o.responded),
                                               ("converted", o.converted)) if on) or "no response yet"
            p(f"  {label:<13}  {o.rule_id} at {o.at}, awaiting responses until {o.until} ({flags})")
    else:
        p("  open triggers  -")
    if s.armed:
        p(f"  armed          {', '.join(s.armed)}  (threshold conditions currently true)")


def _print_timers(timers: list[TimerView], backtest: bool, p: Print) -> None:
    p()
    p("pending timers" + ("" if timers else "  -"))
    if not timers:
        return
    rw = max(len(t.rule_id) for t in timers)
    for t in timers:
        over = "  OVERDUE" if t.overdue else ""
        cause = "" if t.what.startswith("occurrence") else f", cause {t.cause} at {t.cause_at}"
        p(f"  {t.rule_id:<{rw}}  step {t.step}  due {t.due}  {t.what}{cause}{over}")
    if backtest:
        p("  (a `triggers backtest` ending here leaves these pending, not fired; --drain fires the one-shot ones, "
          "--at a later time shows them fired)")


def _print_rule(r: RuleExplanation, source: str, p: Print) -> None:
    p()
    p(f"{r.rule_id}  ({r.type}: {r.shape})")
    p(f"  → {r.summary}")
    if r.condition is not None:
        _print_condition(r.condition, p)
    if r.journey is not None:
        _print_journey(r.journey, p)
    if r.last_contact and source == "live":
        p(f"  last contact {r.last_contact}")
    if r.triggers:
        p("  triggers")
        for t in r.triggers:
            step = f"step {t.step}, " if t.step is not None else ""
            p(f"    {t.fired_at}  {t.action} ({t.channel})  {t.why}  [{step}cause {t.cause_event_id}]")
    elif source == "backtest":
        p("  triggers: none")
    if r.journey is not None and r.notes:
        p("  walk")
    for note in r.notes:
        p(f"    · {note}")


def _print_journey(j: JourneyView, p: Print) -> None:
    """The position, the wait it is in and where it leads, then the steps with the current one marked."""
    if j.entered_at is None:
        p("  position   never entered")
    else:
        group = "held out (control group, drawn at entry: its sends are recorded, not sent)" if j.held_out \
            else "contacted"
        entry = f"entered {j.entered_at} on {j.entry_type or 'event'} {j.entry_event}, {group}"
        laps = f", {j.repeats} repeated send(s) through a loop" if j.repeats else ""
        if j.inside:
            kind = f" ({j.step_kind})" if j.step_kind else " (no longer in the journey)"
            p(f"  position   at '{j.step}'{kind} since {j.since}; {entry}{laps}")
        else:
            at = f" at {j.ended_at}" if j.ended_at else ""
            p(f"  position   ended: {j.ended}{at}; latest walk {entry}{laps}")
    w = j.wait
    if w is not None:
        over = "  OVERDUE" if w.overdue else ""
        if w.kind == "wait":
            match = " with " + " and ".join(f"{k} {fmt(v)}" for k, v in w.match.items()) if w.match else ""
            p(f"  waiting    for {' or '.join(w.awaits)}{match} until {w.due}{over}")
            p(f"             yes → {j.leads.get('yes', '?')} when it comes in time, "
              f"no → {j.leads.get('no', '?')} at {w.due}")
        else:
            p(f"  waiting    a delay until {w.due}{over}, then → {j.leads.get('next', '?')}")
    elif j.deferred_until is not None:
        p(f"  waiting    its send, deferred by quiet hours to {j.deferred_until}")
    if j.steps:
        p("  steps")
        for line in j.steps:
            mark = "▸" if j.inside and j.step is not None and line.startswith(f"{j.step}: ") else " "
            p(f"    {mark} {line}")


def _print_condition(c: ConditionCheck, p: Print) -> None:
    src = "" if not c.reads_event else (
        f"with event {c.event_id}, " if c.event_id else "with no event: event.* read as missing, ")
    p(f"  if {c.expression}  → {fmt(c.holds)} now ({src}at {c.at})")
    if len(c.parts) > 1 or c.parts and c.parts[0].operands:
        tw = max(len(x.text) for x in c.parts)
        for i, part in enumerate(c.parts):
            join = f"{c.joiner} " if i and c.joiner else "    " if c.joiner else ""
            values = "; ".join(f"{o.text} = {fmt(o.value)}" for o in part.operands)
            if not values and not isinstance(part.value, bool):
                values = f"= {fmt(part.value)}"
            shown = f"{values} → {fmt(part.holds)}" if values else f"→ {fmt(part.holds)}"
            p(f"    {join}{part.text:<{tw}}    {shown}")
    if c.note:
        p(f"    ({c.note})")
