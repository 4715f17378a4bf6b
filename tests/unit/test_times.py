"""engine.core.times: the RFC 3339 stamp every trigger carries, against datetime's own."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import times
from engine.core.times import format_ts, parse_ts

FIRST_MS = -62_135_596_800_000          # 0001-01-01T00:00:00.000Z
LAST_MS = 253_402_300_799_999           # 9999-12-31T23:59:59.999Z


def by_datetime(ms: int) -> str:
    d = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{ms % 1000:03d}Z"


@settings(max_examples=2000, deadline=None)
@given(st.integers(FIRST_MS, LAST_MS))
def test_format_ts_is_datetime_s_stamp_and_parses_back(ms: int) -> None:
    assert format_ts(ms) == by_datetime(ms)
    assert parse_ts(format_ts(ms)) == ms


def test_format_ts_at_the_edges_of_days_and_of_the_calendar() -> None:
    edges = [0, -1, 999, 1000, 59_999, 3_599_999, 86_399_999, 86_400_000, -86_400_000, -86_400_001,
             FIRST_MS, LAST_MS, 951_782_400_000 - 1, 951_782_400_000]   # 2000-02-29's eve
    assert [format_ts(ms) for ms in edges] == [by_datetime(ms) for ms in edges]


def test_the_cache_of_dates_stays_bounded_and_right_after_it_is_cleared() -> None:
    day = 86_400_000
    for i in range(times._DAY_PREFIXES_MAX * 2 + 7):
        ms = FIRST_MS + i * 400 * day + i   # 8,199 days apart, all in the calendar
        assert format_ts(ms) == by_datetime(ms)
        assert len(times._DAY_PREFIXES) <= times._DAY_PREFIXES_MAX
