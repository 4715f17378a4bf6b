"""Events in: the native event struct (SPEC §2)."""

from __future__ import annotations

from typing import Any

import msgspec


class Event(msgspec.Struct):
    """One customer event, normalised to the native form.

    `ts` is event time in epoch milliseconds, UTC: every duration in the rules is added
    to it, so it is an int, not a datetime, on the hot path.
    """

    event_id: str
    type: str
    customer_id: str
    ts: int
    properties: dict[str, Any] = {}
