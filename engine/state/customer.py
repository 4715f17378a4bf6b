"""The compact per-customer state the rules read and the engine keeps in Redis.

Encoded as msgpack arrays (`array_like`): no field names on the wire, about half the bytes
of a map (hot-path-measurements §2). The inner records are `array_like` structs too, so a
record is the same msgpack array the engine wrote when they were plain lists: a field is
renamed freely (its position is its identity) and only ever appended at the end, with a
default, so states written by an older engine still decode (tests/unit/test_state_wire.py).
"""

from __future__ import annotations

from typing import Any

import msgspec


class Timer(msgspec.Struct, array_like=True):
    """A pending deadline, kept as data inside the state so it survives restarts with it.

    A rule has at most one pending timer per `key` ("" unless the rule's `unless.match`
    makes several concurrent waits distinct, e.g. one per coupon code).
    """

    due: int                   # epoch ms, UTC
    rule: str
    step: int                  # journey step index; 0 for single-shot deadlines
    key: str                   # distinguishes concurrent timers of one rule
    cause: str                 # event id (or occurrence) that armed it; part of the trigger id
    cause_ts: int              # epoch ms of the cause
    ctx: dict[str, Any] = {}   # the cause event's properties that the rule's templates read
    cause_type: str = ""       # the cause event's type, for `event.type` when the deadline fires


class Deferred(msgspec.Struct, array_like=True):
    """A send the policy deferred out of quiet hours: decided and rendered, it goes out at `due`
    (re-checked against consent, cooldown and caps then, never deferred twice)."""

    due: int                   # epoch ms, UTC: when quiet hours end
    rule: str
    step: int                  # the series step whose action it sends; 0 otherwise
    cause: str                 # the trigger's cause (part of its id)
    cause_ts: int              # epoch ms of the cause (part of its id)
    cause_event_id: str        # the trigger's `cause_event_id`
    payload: dict[str, Any]    # the rendered payload, as it was when deferred
    deferred_at: int           # epoch ms the send was first due


class Consent(msgspec.Struct, array_like=True):
    """A channel's latest consent decision (wire: [granted, at])."""

    granted: bool
    at: int                    # epoch ms of the decision (event time)


class Contact(msgspec.Struct, array_like=True):
    """A recent contact, for frequency caps (wire: [at, channel])."""

    at: int                    # epoch ms of the send
    channel: str


class OpenTrigger(msgspec.Struct, array_like=True):
    """A sent or held-out trigger whose attribution window is still open
    (wire: [rule, at, held_out, responded, converted, until])."""

    rule: str
    at: int                    # epoch ms the trigger fired
    held_out: bool             # in the control group: not sent, still attributed (lift)
    responded: bool
    converted: bool
    until: int                 # epoch ms the attribution window closes


class Position(msgspec.Struct, array_like=True):
    """Where a customer is in one journey (SPEC §3a), or how their latest walk ended.

    One per customer and journey: a new walk replaces it. Inside, `step` is the current step's
    id (kept by id, so an edited journey keeps positions whose step still exists); the wait it
    is in, if any, is a `Timer` of the journey. Ended, `step` is "" and `ended` says why; the
    entry time is kept for `reenter`.
    """

    step: str                  # the current step's id; "" once the walk ended
    entry: str                 # the entry event's id (part of every trigger id of the walk)
    entry_ts: int              # epoch ms of the entry event
    held_out: bool             # in the control group, drawn once at entry: every send is `held_out`
    since: int                 # epoch ms the current step began (a wait's start)
    ctx: dict[str, Any] = {}   # the entry event's properties the journey's templates read
    entry_type: str = ""       # the entry event's type
    ended: str = ""            # why the walk ended (engine.core.funnel.Exit); "" while inside
    sends: dict[str, int] = {}  # send step id -> times this walk reached it (a loop's second send gets its own id)


class CustomerState(msgspec.Struct, array_like=True):
    aggs: dict[str, Any] = {}       # aggregate name -> value (shape depends on the kind)
    profile: dict[str, Any] = {}    # profile attributes from identify/profile events
    armed: list[str] = []           # threshold rules whose condition is currently true
    last_contact: dict[str, int] = {}   # rule id -> epoch ms of its latest contact (cooldown)
    timers: list[Timer] = []        # pending deadlines, any order
    last_ts: int = 0                # epoch ms of the latest event applied
    seen: list[int] = []            # 64-bit hashes of the latest event ids (de-duplication)
    consent: dict[str, Consent] = {}    # channel -> its latest decision
    contacts: list[Contact] = []    # recent contacts, for frequency caps
    open_triggers: list[OpenTrigger] = []   # triggers awaiting responses
    idle_fired: list[str] = []      # inactivity rules already fired since the latest event
    occurred: dict[str, str] = {}   # recurring rule id -> local date of its latest occurrence fired
    deferred: list[Deferred] = []   # sends deferred out of quiet hours, any order
    latest_of: dict[str, int] = {}  # event type -> epoch ms of its latest event, for the types an
    #                                 `inactive: D, of: TYPES` rule names (only those: it stays small)
    journeys: dict[str, Position] = {}   # journey rule id -> the customer's position (or latest walk's end)
    engagement: bytes = b""         # responses per channel and local hour, sends per channel (engine.state.engagement)
    fence: int = 0                  # a store whose commits are not atomic (Redis Cluster): the source offset
    #                                 the state was committed at; a re-read event before it is in it already

    def next_due(self) -> int | None:
        """The earliest stored deadline or deferred send; inactivity deadlines are implicit
        (`Evaluator.next_due`)."""
        best = None
        for t in self.timers:
            if best is None or t.due < best:
                best = t.due
        for d in self.deferred:
            if best is None or d.due < best:
                best = d.due
        return best


# Engines before `CustomerState.deferred` kept a deferred send as a timer under this key, its
# send in `Timer.ctx`; `decode_state` moves them to `deferred`, so only decoding knows the key.
LEGACY_DEFER_KEY = "\x00defer"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CustomerState)


def encode_state(state: CustomerState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> CustomerState:
    state = _decoder.decode(data)
    if state.timers:
        for t in state.timers:
            if t.key == LEGACY_DEFER_KEY:
                _lift_legacy_deferred(state)
                break
    return state


def _lift_legacy_deferred(state: CustomerState) -> None:
    """Move the deferred sends an older engine stored among the timers to `deferred`."""
    timers = []
    for t in state.timers:
        if t.key != LEGACY_DEFER_KEY:
            timers.append(t)
            continue
        ctx = t.ctx
        state.deferred.append(Deferred(t.due, t.rule, t.step, t.cause, t.cause_ts, ctx.get("cause_event_id", ""),
                                       ctx.get("payload", {}), ctx.get("deferred_at", t.due)))
    state.timers = timers
