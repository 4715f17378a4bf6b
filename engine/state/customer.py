"""The compact per-customer state the rules read and the engine keeps in Redis.

Encoded as msgpack arrays (`array_like`): no field names on the wire, about half the bytes
of a map (hot-path-measurements §2). Fields are only ever appended at the end, with
defaults, so states written by an older engine still decode.
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


class CustomerState(msgspec.Struct, array_like=True):
    aggs: dict[str, Any] = {}       # aggregate name -> value (shape depends on the kind)
    profile: dict[str, Any] = {}    # profile attributes from identify/profile events
    armed: list[str] = []           # threshold rules whose condition is currently true
    sent: dict[str, int] = {}       # rule id -> epoch ms of its last sent trigger (cooldown)
    timers: list[Timer] = []        # pending deadlines, any order
    last_ts: int = 0                # epoch ms of the latest event applied
    seen: list[int] = []            # 64-bit hashes of the latest event ids (de-duplication)
    consent: dict[str, list] = {}   # channel -> [granted: bool, epoch ms of the decision]
    contacts: list[list] = []       # [epoch ms, channel] of recent contacts, for frequency caps
    open_triggers: list[list] = []  # [rule id, epoch ms, held out?, responded?, converted?] awaiting responses
    idle_fired: list[str] = []      # inactivity rules already fired since the latest event
    occurred: dict[str, str] = {}   # recurring rule id -> local date of its latest occurrence fired

    def next_due(self) -> int | None:
        """The earliest stored deadline; inactivity deadlines are implicit (`Evaluator.next_due`)."""
        best = None
        for t in self.timers:
            if best is None or t.due < best:
                best = t.due
        return best


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CustomerState)


def encode_state(state: CustomerState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> CustomerState:
    return _decoder.decode(data)
