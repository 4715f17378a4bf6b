"""A customer's profile: their state as the rules read it at one moment, for other systems.

What the profile API (`GET /customers/{id}`, `engine.operators.profile_api`) answers and what
`triggers export` writes, one JSON object per customer. Built from the same readers as
`triggers explain` (`engine.offline.explain.views`: `read_aggregates`, `timer_views`), so the
three show the same values for a state and a moment. Times are RFC 3339 (UTC); values are read
at `at`: a windowed sum over the window ending then, a decayed count decayed to then.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from engine.core.times import format_ts
from engine.offline.explain.views import Unreadable, read_aggregates, timer_views
from engine.rules.compiler import CompiledRules
from engine.state.customer import CustomerState


class Source(enum.Enum):
    """Where a profile's state came from."""

    CACHE = "cache"   # the live worker's memory: every event evaluated so far, committed or not
    REDIS = "redis"   # the last commit


class Interest(msgspec.Struct):
    key: str
    weight: float     # the decayed count at `at`


class ConsentEntry(msgspec.Struct):
    granted: bool
    at: str           # when the decision was made (event time)


class Deadline(msgspec.Struct):
    rule: str
    due: str
    what: str         # "absence deadline", "delay", "inactivity (30d after the latest event)", …
    step: int         # 1-based step of a series or journey; 1 otherwise
    overdue: bool     # due before `at`, not fired yet (the engine fires it at its next look)


class JourneyPosition(msgspec.Struct):
    step: str | None  # the current step's id; None once the walk ended
    entered_at: str
    since: str        # when the current step began (a wait's start)
    held_out: bool    # in the control group: every send of the walk is recorded, not sent
    ended: str | None  # why the latest walk ended (None while inside)


class CustomerProfile(msgspec.Struct):
    customer_id: str
    at: str                                 # the moment the values are read at
    source: Source
    last_event_at: str | None
    aggregates: dict[str, Any]              # name -> value as the rules read it at `at` (null: unreadable)
    interests: dict[str, list[Interest]]    # per decayed count, its keys by weight, highest first
    profile: dict[str, Any]
    consent: dict[str, ConsentEntry]        # channel -> the latest decision
    last_contact: dict[str, str]            # channel -> the latest send on it the caps still count
    last_contact_by_rule: dict[str, str]    # rule id -> its latest sent or held-out trigger (cooldown)
    deadlines: list[Deadline]               # pending, earliest first (inactivity ones included)
    journeys: dict[str, JourneyPosition]    # journey id -> the customer's position or latest walk's end


def customer_profile(rules: CompiledRules, customer_id: str, state: CustomerState, at: int,
                     source: Source = Source.REDIS, top: int = 5) -> CustomerProfile:
    """The profile of `state` at `at` (epoch ms). `top`: interests kept per decayed count. The
    state is read as the engine reads it: values a redefined aggregate's older definition left
    are dropped from it first (`CompiledRules.conform`; the callers pass a decoded copy)."""
    rules.conform(state, customer_id)
    values = read_aggregates(rules, state, at)
    interests: dict[str, list[Interest]] = {}
    for agg in rules.ruleset.aggregates.values():
        value = values.get(agg.name)
        if agg.kind == "decayed_count" and isinstance(value, dict):
            ranked = sorted(value.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            interests[agg.name] = [Interest(k, w) for k, w in ranked]
    last: dict[str, int] = {}
    for c in state.contacts:
        if c.at > last.get(c.channel, -1):
            last[c.channel] = c.at
    return CustomerProfile(
        customer_id=customer_id, at=format_ts(at), source=source,
        last_event_at=format_ts(state.last_ts) if state.last_ts else None,
        aggregates={name: None if isinstance(v, Unreadable) else v for name, v in values.items()},
        interests=interests,
        profile=dict(state.profile),
        consent={ch: ConsentEntry(d.granted, format_ts(d.at)) for ch, d in sorted(state.consent.items())},
        last_contact={ch: format_ts(ts) for ch, ts in sorted(last.items())},
        last_contact_by_rule={r: format_ts(ts) for r, ts in sorted(state.last_contact.items())},
        deadlines=[Deadline(t.rule_id, t.due, t.what, t.step, t.overdue)
                   for t in timer_views(rules, state, at, live=True)],
        journeys={j: JourneyPosition(p.step or None, format_ts(p.entry_ts), format_ts(p.since), p.held_out,
                                     p.ended or None) for j, p in state.journeys.items()},
    )


_encoder = msgspec.json.Encoder()


def encode_profile(profile: CustomerProfile) -> bytes:
    """The profile as one line of JSON (no newline)."""
    return _encoder.encode(profile)
