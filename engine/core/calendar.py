"""Recurring dates (birthday, anniversary) at a local time in the customer's time zone.

The local wall time is converted to UTC per occurrence, so 09:00 stays 09:00 on both sides
of a daylight-saving change. Unknown or invalid zones fall back to UTC (SPEC §3).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = UTC


def zone(name: object) -> ZoneInfo | timezone:
    """A profile's time zone; anything that is not a known IANA name (a typo, a list sent by
    a broken integration) is UTC rather than an error."""
    if not name or not isinstance(name, str):
        return UTC
    return _zone(name)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | timezone:
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
    anchor: date, every: str, at: tuple[int, int], tz_name: object, after_ms: int
) -> tuple[int, str] | None:
    """The first occurrence strictly after `after_ms`: (due epoch ms, local date `YYYY-MM-DD`),
    or None when there is none to find (a date far in the future, a clock past year 9000).

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
        if year > 9000:
            break
    return None


def quiet_until(at_ms: int, tz_name: object, start: tuple[int, int], end: tuple[int, int]) -> int | None:
    """When `at_ms` falls inside the daily quiet hours [start, end) in the customer's zone,
    the epoch ms at which they end; otherwise None. Quiet hours may span midnight
    (21:00-08:00); the end is computed as a local wall time, so it stays 08:00 across DST.

    Every trigger asks this, so the quiet intervals are computed once per zone and UTC day
    (a zone-aware datetime per call would cost microseconds).
    """
    if not isinstance(tz_name, str):
        tz_name = None
    for lo, hi in _quiet_intervals(tz_name, at_ms // 86_400_000, start, end):
        if lo <= at_ms < hi:
            return hi
    return None


@lru_cache(maxsize=8192)
def _quiet_intervals(tz_name: str | None, utc_day: int, start: tuple[int, int],
                     end: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """The quiet intervals (UTC epoch ms, end exclusive) that overlap one UTC day."""
    tz = zone(tz_name)
    first = datetime.fromtimestamp(utc_day * 86_400, tz).date()
    intervals = []
    for offset in (-1, 0, 1):   # local days around the UTC day, whatever the zone's offset
        d = date.fromordinal(first.toordinal() + offset)
        begin = datetime(d.year, d.month, d.day, start[0], start[1], tzinfo=tz)
        end_day = date.fromordinal(d.toordinal() + 1) if start >= end else d
        finish = datetime(end_day.year, end_day.month, end_day.day, end[0], end[1], tzinfo=tz)
        intervals.append((int(begin.timestamp() * 1000), int(finish.timestamp() * 1000)))
    return tuple(intervals)
