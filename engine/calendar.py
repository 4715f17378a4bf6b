"""Recurring dates (birthday, anniversary) at a local time in the customer's time zone.

The local wall time is converted to UTC per occurrence, so 09:00 stays 09:00 on both sides
of a daylight-saving change. Unknown or invalid zones fall back to UTC (SPEC §3).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc


@lru_cache(maxsize=1024)
def zone(name: str | None) -> ZoneInfo | timezone:
    if not name or not isinstance(name, str):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def parse_date(value: object) -> date | None:
    """`YYYY-MM-DD` or an RFC 3339 timestamp (its calendar date); None when unusable."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _clamped(year: int, month: int, day: int) -> date:
    """Feb 29 becomes Feb 28 in other years; the 31st becomes the month's last day."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def next_occurrence(
    anchor: date, every: str, at: tuple[int, int], tz_name: str | None, after_ms: int
) -> tuple[int, str]:
    """The first occurrence strictly after `after_ms`: (due epoch ms, local date `YYYY-MM-DD`).

    The local date is the occurrence's identity: it goes into the trigger id, so one
    birthday fires once however often the profile is re-sent.
    """
    tz = zone(tz_name)
    local_now = datetime.fromtimestamp(after_ms / 1000, tz)
    year, month = local_now.year, local_now.month
    for _ in range(30):   # at most a couple of iterations; the bound only guards bad input
        if every == "year":
            day = _clamped(year, anchor.month, anchor.day)
        else:
            day = _clamped(year, month, anchor.day)
        if day > anchor:   # an anniversary starts the year after its date
            local = datetime(day.year, day.month, day.day, at[0], at[1], tzinfo=tz)
            due = int(local.timestamp() * 1000)
            if due > after_ms:
                return due, day.isoformat()
        if every == "year":
            year += 1
        else:
            month += 1
            if month > 12:
                year, month = year + 1, 1
    raise ValueError(f"no occurrence found for {anchor} every {every}")
