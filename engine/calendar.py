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


def quiet_until(at_ms: int, tz_name: str | None, start: tuple[int, int], end: tuple[int, int]) -> int | None:
    """When `at_ms` falls inside the daily quiet hours [start, end) in the customer's zone,
    the epoch ms at which they end; otherwise None. Quiet hours may span midnight
    (21:00-08:00); the end is computed as a local wall time, so it stays 08:00 across DST.
    """
    tz = zone(tz_name)
    local = datetime.fromtimestamp(at_ms / 1000, tz)
    now_min = local.hour * 60 + local.minute
    start_min, end_min = start[0] * 60 + start[1], end[0] * 60 + end[1]
    day = local.date()
    if start_min < end_min:
        if not start_min <= now_min < end_min:
            return None
    elif now_min >= start_min:
        day = date.fromordinal(day.toordinal() + 1)   # evening part: quiet until tomorrow morning
    elif now_min >= end_min:
        return None
    end_local = datetime(day.year, day.month, day.day, end[0], end[1], tzinfo=tz)
    return int(end_local.timestamp() * 1000)
