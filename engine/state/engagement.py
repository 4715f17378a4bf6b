"""A customer's engagement per channel (SPEC §3b), in bytes: in which hour of their local day
they respond on each channel, and how many sends they got there (for response rates).

The per-customer state budget is a few hundred bytes, so this is one blob per customer
(`CustomerState.engagement`), every channel together, not a mapping of lists:

    int32        the hour the values were last decayed to (hours since the epoch, UTC; negative
                 before 1970: event times run from year 1 to 9000, about ±70 million hours)
    per channel, in no particular order:
    uint8        the channel's index (in the policy's `responses_by_channel` order)
    uint8        scale exponent e: a stored hour byte q is worth q * 2**e / 16 responses
    uint16       decayed sends on the channel, in 1/16ths (saturating at 4,095.9)
    uint8        responses counted, not decayed (saturating at 255): `min_responses` reads it
    24 x uint8   decayed responses per local hour, 00-23

Two channels take 4 + 2 * 29 = 62 bytes. Every value halves each `half_life`: an update first
decays everything to its hour; an update older than that hour (a late event) is added with the
weight its age gives it instead, so order barely matters and no value is ever decayed
backwards. The same events in the same order give the same bytes, in a backtest and live.
"""

from __future__ import annotations

import math
import struct
from datetime import datetime
from functools import lru_cache

from engine.core.calendar import zone

HOUR_MS = 3_600_000
_HEAD = struct.Struct(">i")
_CHANNEL = struct.Struct(">BBHB24B")
_CHANNEL_HEAD = struct.Struct(">BBHB")   # _CHANNEL without its 24 hour bytes, which are read and written as bytes
_MAX_SENDS = 0xFFFF


class ChannelStats:
    """One channel's decayed responses per local hour and decayed sends, as floats, and its
    responses counted (not decayed, at most 255)."""

    __slots__ = ("hours", "sends", "count")

    def __init__(self, hours: list[float] | None = None, sends: float = 0.0, count: int = 0) -> None:
        self.hours = hours if hours is not None else [0.0] * 24
        self.sends = sends
        self.count = count

    @property
    def responses(self) -> float:
        return sum(self.hours)

    def best_hour(self) -> int:
        """The hour with the most responses; ties go to the earliest hour."""
        hours = self.hours
        return max(range(24), key=lambda h: (hours[h], -h))

    def top_hours(self, n: int = 3) -> list[tuple[int, float]]:
        return sorted(((h, v) for h, v in enumerate(self.hours) if v > 0), key=lambda x: (-x[1], x[0]))[:n]


def decode(blob: bytes, factor: float = 1.0) -> tuple[int, dict[int, ChannelStats]]:
    """(the hour the values are decayed to, channel index -> stats), each value times `factor`
    (a decay: `(q * unit) * factor`, the same float operations as decoding, then decaying)."""
    if not blob:
        return 0, {}
    (at,) = _HEAD.unpack_from(blob, 0)
    out = {}
    for offset in range(_HEAD.size, len(blob) - _CHANNEL.size + 1, _CHANNEL.size):
        index, exp, sends, count = _CHANNEL_HEAD.unpack_from(blob, offset)
        hours = blob[offset + _CHANNEL_HEAD.size:offset + _CHANNEL.size]
        unit = _UNITS[exp]
        if factor == 1.0:
            out[index] = ChannelStats([q * unit for q in hours], sends / 16, count)
        else:
            out[index] = ChannelStats([q * unit * factor for q in hours], sends / 16 * factor, count)
    return at, out


_UNITS = [2.0 ** e / 16 for e in range(256)]   # what a stored hour byte is worth, per scale exponent


def encode(at: int, channels: dict[int, ChannelStats]) -> bytes:
    parts = [_HEAD.pack(at)]
    for index in sorted(channels):
        s = channels[index]
        top = 0.0   # the values are never negative
        for v in s.hours:
            if v > top:
                top = v
        exp = max(0, math.ceil(math.log2(top * 16 / 255))) if top > 255 / 16 else 0
        scale = 16 / 2.0 ** exp   # v / unit, exactly: the unit is a power of two
        hours = [_round(v * scale) for v in s.hours]
        if top * scale > 255:   # float rounding at the scale's edge: the byte saturates
            hours = [min(255, q) for q in hours]
        sends = min(_MAX_SENDS, _round(s.sends * 16))
        parts.append(_CHANNEL_HEAD.pack(index, exp, sends, min(255, s.count)))
        parts.append(bytes(hours))
    return b"".join(parts)


def _round(x: float) -> int:
    """`round(x)` of a float that is not negative, bit for bit (ties to even), as plain
    arithmetic: compiled, the built-in is a generic call, and a send or a response rounds 25
    values per channel. `x - r` is exact: it is the fraction's bits of `x`."""
    r = int(x)
    d = x - r
    if d > 0.5 or (d == 0.5 and r & 1):
        r += 1
    return r


def _update(blob: bytes, ts: int, half_life: int) -> tuple[int, dict[int, ChannelStats], float]:
    """Decayed to `ts`'s hour when it is newer; else the weight an older update counts with."""
    hour = ts // HOUR_MS
    if len(blob) < _HEAD.size + _CHANNEL.size:   # no channel yet
        return hour, {}, 1.0
    (at,) = _HEAD.unpack_from(blob, 0)
    half_life_h = max(1.0, half_life / HOUR_MS)
    if hour >= at:
        factor = 0.5 ** ((hour - at) / half_life_h)
        return hour, decode(blob, factor if factor < 1.0 else 1.0)[1], 1.0
    return at, decode(blob)[1], 0.5 ** ((at - hour) / half_life_h)


def record_response(blob: bytes, channel: int, local_hour: int, ts: int, half_life: int) -> bytes:
    """A response on `channel` at `ts`, in local hour `local_hour` (0-23)."""
    at, channels, weight = _update(blob, ts, half_life)
    stats = channels.get(channel)
    if stats is None:
        stats = channels[channel] = ChannelStats()
    stats.hours[local_hour] += weight
    stats.count += 1
    return encode(at, channels)


def record_send(blob: bytes, channel: int, ts: int, half_life: int) -> bytes:
    """A send on `channel` at `ts`: the denominator of the channel's response rate."""
    at, channels, weight = _update(blob, ts, half_life)
    stats = channels.get(channel)
    if stats is None:
        stats = channels[channel] = ChannelStats()
    stats.sends += weight
    return encode(at, channels)


def read(blob: bytes, now: int, half_life: int) -> dict[int, ChannelStats]:
    """Every channel's stats decayed to `now` (read-only: the blob is not changed)."""
    if not blob:
        return {}
    (at,) = _HEAD.unpack_from(blob, 0)
    factor = 0.5 ** ((now // HOUR_MS - at) / max(1.0, half_life / HOUR_MS)) if now // HOUR_MS > at else 1.0
    return decode(blob, factor if factor < 1.0 else 1.0)[1]


def peek(blob: bytes, channel: int) -> tuple[int, tuple[int, ...]] | None:
    """(responses counted, the 24 stored hour bytes) of one channel, without decoding the rest:
    a uniform decay changes no hour's rank, so the best hour needs no arithmetic."""
    for offset in range(_HEAD.size, len(blob) - _CHANNEL.size + 1, _CHANNEL.size):
        if blob[offset] == channel:
            _, _, _, count, *hours = _CHANNEL.unpack_from(blob, offset)
            return count, tuple(hours)
    return None


def local_hour(ts: int, tz_name: object) -> int:
    """The hour of the day (0-23) at `ts` in the customer's zone (UTC when unknown, and at the
    edges of the calendar, where a zone's offset would leave datetime's range)."""
    try:
        return datetime.fromtimestamp(ts / 1000, zone(tz_name)).hour
    except (OverflowError, ValueError, OSError):
        return ts // HOUR_MS % 24


_QUARTER_MS = 15 * 60_000   # every zone's offset is a multiple of 15 minutes: local hours start on these


def next_hour_start(ts: int, tz_name: object, hour: int) -> int:
    """The start of local hour `hour` at or after `ts`: `ts` itself when it falls in that hour.

    Built as a local wall time, so 10:00 stays 10:00 across daylight-saving changes; a local
    hour that a change skips (02:00 on a spring-forward night) is the instant the clocks jump.
    Computed once per zone, quarter of an hour and target hour (every send asks).
    """
    try:
        due = _next_start(tz_name if isinstance(tz_name, str) else None, ts // _QUARTER_MS, hour)
    except (OverflowError, ValueError, OSError):   # the edges of the calendar: no deferral
        return ts
    return ts if due is None else due


@lru_cache(maxsize=65536)
def _next_start(tz_name: str | None, quarter: int, hour: int) -> int | None:
    """None: the quarter of an hour lies in local hour `hour`; else when that hour next starts."""
    tz = zone(tz_name)
    ts = quarter * _QUARTER_MS
    local = datetime.fromtimestamp(ts / 1000, tz)
    if local.hour == hour:
        return None
    for days in (0, 1, 2):
        d = datetime.fromordinal(local.toordinal() + days).date()
        start = datetime(d.year, d.month, d.day, hour, tzinfo=tz)
        due = int(start.timestamp() * 1000)
        if due > ts:
            return due
    return None   # unreachable: a local hour recurs within two days


__all__ = ["ChannelStats", "decode", "encode", "local_hour", "next_hour_start", "peek", "read", "record_response",
           "record_send"]
