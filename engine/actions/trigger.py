"""Triggers out (SPEC §4): the record every fired, held-out or suppressed trigger becomes."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class Status(StrEnum):
    """What became of a fired trigger; the values are the wire format (a trigger's `status`)."""

    SENT = "sent"
    HELD_OUT = "held_out"         # in the control group: counted, not contacted
    SUPPRESSED = "suppressed"     # by the contact policy; the trigger's `reason` says why


SENT = Status.SENT
HELD_OUT = Status.HELD_OUT
SUPPRESSED = Status.SUPPRESSED
STATUSES = tuple(Status)


class Trigger(msgspec.Struct, omit_defaults=False):
    trigger_id: str
    rule_id: str
    customer_id: str
    action: str
    channel: str
    status: Status
    reason: str | None     # why it was suppressed (engine.policy.contact.Reason); None otherwise
    fired_at: str          # RFC 3339, UTC, millisecond precision
    cause_event_id: str
    payload: dict[str, Any] = {}
    step: str | UnsetType = UNSET   # a journey's trigger: the step id that sent it; absent otherwise


def trigger_id(rule_id: str, customer_id: str, cause: str, cause_ts: int | None = None) -> str:
    """A stable id, so a replay after a crash yields the same id and receivers can de-duplicate.

    `cause` names what made the rule fire (event id plus journey step, or the date of a
    recurring occurrence), `cause_ts` the cause's time (epoch ms): the same rule, customer
    and cause always give the same id. The time is part of it because producers re-use event
    ids (a counter reset, ids unique per day): an event id seen again at another time, beyond
    the de-duplication window, is another cause and must not give another trigger the id of
    the first. The same id at the same time is the same event re-delivered: the same id.
    """
    text = f"{rule_id}\x1f{customer_id}\x1f{cause}" if cause_ts is None else \
        f"{rule_id}\x1f{customer_id}\x1f{cause}\x1f{cause_ts}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
