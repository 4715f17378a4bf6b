"""Triggers out (SPEC §4): the record every fired, held-out or suppressed trigger becomes."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

SENT = "sent"
HELD_OUT = "held_out"
SUPPRESSED = "suppressed"
STATUSES = (SENT, HELD_OUT, SUPPRESSED)


class Trigger(msgspec.Struct, omit_defaults=False):
    trigger_id: str
    rule_id: str
    customer_id: str
    action: str
    channel: str
    status: str
    reason: str | None
    fired_at: str          # RFC 3339, UTC, millisecond precision
    cause_event_id: str
    payload: dict[str, Any] = {}


def trigger_id(rule_id: str, customer_id: str, cause: str) -> str:
    """A stable id, so a replay after a crash yields the same id and receivers can de-duplicate.

    `cause` names what made the rule fire (event id plus journey step, or the date of a
    recurring occurrence): the same rule, customer and cause always give the same id.
    """
    h = hashlib.blake2b(f"{rule_id}\x1f{customer_id}\x1f{cause}".encode(), digest_size=16)
    return h.hexdigest()
