"""Time in the engine: epoch milliseconds (UTC) everywhere, durations as milliseconds.

Event time is the clock of a backtest; the wall clock is the clock of a live run. Both are
plain ints here so that deadline arithmetic on the hot path is integer addition.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")

MAX_DURATION_MS = 3650 * _UNITS_MS["d"]
"""The longest duration a rule may give (10 years). Deadlines are event time plus durations, and
event times end at the year 9000 (engine.events.decode), so no deadline can leave datetime's range
(year 9999) and fail when a backtest formats it; no campaign waits longer than this."""


def parse_duration(text: str) -> int:
    """`"30m"`, `"7d"`, `"1h30m"`, `"500ms"` -> milliseconds, from 1 ms to `MAX_DURATION_MS`.

    Raises ValueError with the accepted form.
    """
    if not isinstance(text, str) or not _DURATION_WHOLE.fullmatch(text.strip()):
        raise ValueError(
            f"bad duration {_shown(text)}: write a number and a unit, e.g. 30m, 24h, 7d, 1h30m "
            "(units: ms, s, m, h, d, w)"
        )
    total = 0.0
    for number, unit in _DURATION.findall(text.strip()):
        total += float(number) * _UNITS_MS[unit]   # float: a huge number becomes inf, never an error
    if total <= 0:
        raise ValueError(f"bad duration {_shown(text)}: must be longer than zero")
    if total < 1:
        raise ValueError(f"bad duration {_shown(text)}: must be at least 1ms")
    if total > MAX_DURATION_MS:
        raise ValueError(f"bad duration {_shown(text)}: at most 3650d (10 years)")
    return int(total)


def _shown(text: object) -> str:
    """The text as written, for a message; a hostile file can hold megabytes of digits."""
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:36] + "…" + shown[-3:]


def format_duration(ms: int) -> str:
    """The shortest exact spelling of a duration, for messages and reports."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


_DAY_PREFIXES: dict[int, str] = {}   # day since the epoch -> "YYYY-MM-DDT"
_DAY_PREFIXES_MAX = 4096
_TWO_DIGITS = [f"{i:02d}" for i in range(60)]
_THREE_DIGITS = [f"{i:03d}" for i in range(1000)]


def _day_prefix(day: int) -> str:
    prefix = _DAY_PREFIXES.get(day)
    if prefix is None:
        if len(_DAY_PREFIXES) >= _DAY_PREFIXES_MAX:   # hostile times spread over millennia: stay bounded
            _DAY_PREFIXES.clear()
        d = datetime.fromtimestamp(day * 86_400, tz=UTC)
        prefix = _DAY_PREFIXES[day] = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T"   # strftime's %Y drops the zeros of years before 1000
    return prefix


def format_ts(ms: int) -> str:
    """Epoch ms -> RFC 3339 UTC with milliseconds, e.g. `2026-11-20T14:33:11.250Z`.

    Every trigger is stamped with it, so the date part is cached per day and the time of day
    is integer arithmetic and table lookups (strftime per call costs several microseconds, and
    even a format spec such as `:02d` costs a microsecond compiled).
    """
    day, in_day = divmod(ms, 86_400_000)
    seconds, milli = divmod(in_day, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    two = _TWO_DIGITS
    return f"{_day_prefix(day)}{two[hours]}:{two[minutes]}:{two[seconds]}.{_THREE_DIGITS[milli]}Z"


def parse_ts(value: str | int | float) -> int:
    """RFC 3339 (a zone is required; `Z` accepted) or epoch milliseconds -> epoch ms.

    Raises ValueError naming the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, (int, float)):
        return int(value)
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"ts {value!r} is not RFC 3339 (e.g. 2026-11-20T14:03:11.250Z) nor epoch ms") from None
    if dt.tzinfo is None:
        raise ValueError(f"ts {value!r} has no time zone: add Z or an offset such as +01:00")
    return int(dt.timestamp() * 1000 + (0.5 if dt.timestamp() >= 0 else -0.5))


def now_ms() -> int:
    """The wall clock, for live runs."""
    return int(datetime.now(UTC).timestamp() * 1000)
