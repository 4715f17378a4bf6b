"""Events in: the native event struct (SPEC §2), and how the core reads amounts from it."""

from __future__ import annotations

import re
from typing import Any

import msgspec

CONSENT_EVENT = "consent"     # properties: {channel: "email", granted: true|false}, checked at decode

MAX_EXACT = 2**53   # integers beyond it are not exact in JSON for most producers, nor in a float
# Plain ASCII decimal notation, as JSON writes numbers: "12.50", "-3", "1e3". Python's own
# float() also takes "5_000", " 12 ", "NaN", "inf" and digits of any script ("٥٠٠٠").
_NUMERIC_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


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


def amount(value: Any) -> int | float:
    """A property as an amount (sums, revenue): a JSON number, or a string in plain ASCII
    number notation; anything else (booleans, null, `"5_000"`, `"NaN"`, other scripts'
    digits, objects) counts as 0, so one odd event cannot fail or distort a sum."""
    cls = value.__class__
    if cls is int or cls is float:   # decoded JSON: finite, integers within ±2^53 (engine.events.decode)
        return value
    if cls is str and len(value) < 400 and _NUMERIC_TEXT.fullmatch(value):
        number = float(value)
        return number if number - number == 0 else 0   # "1e999" is not a number either
    return 0


def add_amount(total: int | float, value: int | float) -> int | float:
    """`total + value`, kept storable: exact integers up to ±2^53, then floats; a sum that
    would overflow to infinity keeps its old value."""
    result = total + value
    if result.__class__ is int:
        return result if -MAX_EXACT <= result <= MAX_EXACT else float(result)
    return result if result - result == 0 else total
