"""Aggregates: how each declared per-customer value is updated by an event and read by a rule.

Each aggregate compiles to two closures over its own parameters, so the hot path does no
lookups of the declaration: `update(aggs, event)` and `read(state, now_ms)`. Values live in
`CustomerState.aggs[name]`; their shape depends on the kind (kept small for Redis):

- sum / count: a number.
- sum / count with `window`: a list of `[bucket, value]` pairs, at most WINDOW_BUCKETS + 1.
  The window slides in steps of `window / WINDOW_BUCKETS`: a read counts the buckets that
  overlap the last `window`, so an event is counted for at least `window` and at most
  `window + window / WINDOW_BUCKETS`. That resolution bounds the state size.
- amounts are read with `engine.events.amount` (JSON numbers and plain ASCII numeric text;
  anything else counts as 0) and added with `add_amount`, so a sum stays storable: exact up to
  ±2^53, a float beyond, never infinite. One bad event must not poison a lifetime sum for good.
- sum / count with `by`: `{key: value}`, in order of the keys' latest events (the latest last):
  only the BY_KEYS most recent keys are kept, so one customer's state stays bounded.
- last: the value itself (the event time in epoch ms for `last: ts`).
- decayed_count: `[ref_ms, {key: score}]` where score = sum of 2^((ts - ref) / half_life)
  over the key's events; the value at time t is score * 2^(-(t - ref) / half_life). Storing
  scores against one reference keeps one float per key, exact, with no per-key timestamps.
  Only the DECAYED_KEYS highest keys are kept, so a stale interest eventually drops out.

A value another definition of the same name stored (rules edited) is read as this one's if it
has this one's shape (`value_fits`), and dropped otherwise (`CompiledRules.conform`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from engine.events.model import MAX_EXACT, Event, add_amount, amount
from engine.rules.model import Aggregate
from engine.state.customer import CustomerState

WINDOW_BUCKETS = 8
DECAYED_KEYS = 8
BY_KEYS = DECAYED_KEYS     # `count/sum … by:` keeps as many keys as a decayed count
_REBASE_AFTER = 256.0   # half-lives since ref before scores are rebased (2^256 is far from overflow)

Update = Callable[[dict[str, Any], Event], None]
StateUpdate = Callable[[CustomerState, Event], None]   # an update behind a `where:` (it may read the profile)
Read = Callable[[CustomerState, int], Any]
KeyedRead = Callable[[CustomerState, int, Any], Any]   # (state, now, key): `name[key]` of a by-aggregate
Where = Callable[[CustomerState, Event, int], Any]


def filtered(update: Update, where: Where) -> StateUpdate:
    """`update` for the events its `where:` holds for, at the event's time. The compiled
    expression never raises (a data error or a missing value is None): such an event is not
    counted, as `if:` does not fire."""

    def update_where(st: CustomerState, ev: Event) -> None:
        if where(st, ev, ev.ts):
            update(st.aggs, ev)

    return update_where


def compile_aggregate(agg: Aggregate) -> tuple[Update, Read]:
    name, field = agg.name, agg.field   # one assignment, so the closures keep the narrowing below
    if agg.kind in ("sum", "count") and agg.by:
        return _keyed(agg)
    if agg.kind in ("sum", "count") and agg.window:
        return _windowed(agg)
    if agg.kind == "sum":
        assert field is not None   # the schema always sets it: `sum: <field>`

        def update(aggs: dict[str, Any], ev: Event) -> None:
            # add_amount(aggs.get(name, 0), amount(value)), inlined for JSON numbers: a call costs
            # more than the addition on this path
            value = ev.properties.get(field)
            cls = type(value)
            if cls is not float and cls is not int:
                value = amount(value)
                if not value:
                    return
            total = aggs.get(name, 0) + value
            if type(total) is float:
                if total - total != 0:   # it would overflow to infinity: the amount is ignored
                    return
            elif not -MAX_EXACT <= total <= MAX_EXACT:
                total = float(total)
            aggs[name] = total

        def read(st: CustomerState, now: int) -> Any:
            return st.aggs.get(name, 0)

        return update, read
    if agg.kind == "count":

        def update(aggs: dict[str, Any], ev: Event) -> None:
            aggs[name] = aggs.get(name, 0) + 1

        def read(st: CustomerState, now: int) -> Any:
            return st.aggs.get(name, 0)

        return update, read
    if agg.kind == "last":
        assert field is not None   # the schema always sets it: `last: <field>`
        if field == "ts":

            def update(aggs: dict[str, Any], ev: Event) -> None:
                ts = ev.ts
                # typed: compiled, a native comparison; float, not int, so that a number another
                # kind of the same name left (a reload that changed it) compares as before
                last: float = aggs.get(name, 0)
                if ts > last:   # a late event does not move it back
                    aggs[name] = ts

        else:

            def update(aggs: dict[str, Any], ev: Event) -> None:
                value = ev.properties.get(field)
                if value is not None:
                    aggs[name] = value

        def read(st: CustomerState, now: int) -> Any:
            return st.aggs.get(name)

        return update, read
    if agg.kind == "decayed_count":
        return _decayed(agg)
    raise ValueError(f"unknown aggregate kind {agg.kind!r}")


def _windowed(agg: Aggregate) -> tuple[Update, Read]:
    name, window = agg.name, agg.window
    field = agg.field or ""   # read only when is_sum, and a sum always names its field (a checked cast when compiled)
    assert window
    bucket_ms = -(-window // WINDOW_BUCKETS)   # ceil
    is_sum = agg.kind == "sum"

    def update(aggs: dict[str, Any], ev: Event) -> None:
        value = amount(ev.properties.get(field)) if is_sum else 1
        bucket = ev.ts // bucket_ms
        buckets: list[list[Any]] | None = aggs.get(name)   # typed: compiled, native list calls
        if buckets is None:
            aggs[name] = [[bucket, value]]
            return
        last = buckets[-1]
        head: int = last[0]
        if head == bucket:
            last[1] = add_amount(last[1], value) if is_sum else last[1] + 1   # a count stays a small int
        elif head < bucket:
            buckets.append([bucket, value])
            oldest = bucket - WINDOW_BUCKETS
            if buckets[0][0] < oldest:
                buckets[:] = [b for b in buckets if b[0] >= oldest]
        else:   # a late event: add it to its own bucket if still inside the window
            for b in buckets:
                if b[0] == bucket:
                    b[1] = add_amount(b[1], value) if is_sum else b[1] + 1
                    return
            if bucket >= head - WINDOW_BUCKETS:
                buckets.append([bucket, value])
                buckets.sort()

    def read(st: CustomerState, now: int) -> Any:
        buckets: list[list[Any]] | None = st.aggs.get(name)
        if not buckets:
            return 0
        first = (now - window) // bucket_ms   # the bucket holding `now - window` still counts
        current = now // bucket_ms
        total: Any = 0
        for item in buckets:   # indexed, not unpacked: compiled, unpacking a list is a generic iteration
            b: int = item[0]
            if first <= b <= current:
                total += item[1]
        return total

    return update, read


def by_key(value: Any) -> str | None:
    """The key an event's property names: text as is, a number or boolean as Python writes it
    (`7`, `2.5`, `True`); an object, an array or a missing value names none."""
    if type(value) is str:
        return value
    if value is None or type(value) is dict or type(value) is list:
        return None
    return str(value)


def _keyed(agg: Aggregate) -> tuple[Update, Read]:
    name, by = agg.name, agg.by
    field = agg.field or ""   # read only when is_sum, and a sum always names its field (a checked cast when compiled)
    assert by is not None
    is_sum = agg.kind == "sum"

    def update(aggs: dict[str, Any], ev: Event) -> None:
        key = ev.properties.get(by)
        if type(key) is not str:   # (by_key inlined for text, the common case)
            key = by_key(key)
            if key is None:
                return
        value = amount(ev.properties.get(field)) if is_sum else 1
        if not value:
            return   # a sum's missing or bad amount adds nothing, and makes no key
        values = aggs.get(name)
        if values is None:
            aggs[name] = {key: value}
            return
        # re-inserted, so the dict's order is the keys' recency (msgpack keeps it)
        old = values.pop(key, 0)
        values[key] = add_amount(old, value) if is_sum else old + 1
        if len(values) > BY_KEYS:
            del values[next(iter(values))]   # the key whose latest event is the oldest

    def read(st: CustomerState, now: int) -> Any:
        return st.aggs.get(name) or {}

    return update, read


def keyed_read(agg: Aggregate) -> KeyedRead:
    """`name[key]` of a by-aggregate: a key it does not hold (never seen, or dropped as the
    least recent) is 0, since a count or a sum of no events is 0."""
    name = agg.name

    def item(st: CustomerState, now: int, key: Any) -> Any:
        values = st.aggs.get(name)
        if not values:
            return 0
        key = by_key(key)
        return values.get(key, 0) if key is not None else 0

    return item


def decayed_top(agg: Aggregate) -> Read:
    """`top(name)` of a decayed count without decaying: one factor scales every key alike, so the
    highest score is the highest value (ties: the smallest key, as `top` does)."""
    name = agg.name

    def top(st: CustomerState, now: int) -> Any:
        entry = st.aggs.get(name)
        if entry is None:
            return None
        scores: dict[str, float] = entry[1]   # typed: compiled, the comparisons are native
        best_key = ""
        best = -1.0
        for k, v in scores.items():
            if v > best or (v == best and k < best_key):
                best_key, best = k, v
        return best_key if best >= 0.0 else None

    return top


def _decayed(agg: Aggregate) -> tuple[Update, Read]:
    name, by, half_life = agg.name, agg.by, agg.half_life
    assert by is not None and half_life

    def update(aggs: dict[str, Any], ev: Event) -> None:
        key = ev.properties.get(by)
        if type(key) is not str:   # (by_key inlined for text, the common case)
            key = by_key(key)
            if key is None:
                return   # missing, or an object or array: names no single category
        ts = ev.ts
        # Typed locals: compiled (setup.py), the arithmetic, the list's and the dict's calls are native.
        entry: list[Any] | None = aggs.get(name)
        if entry is None:
            aggs[name] = [ts, {key: 1.0}]
            return
        ref: int = entry[0]
        scores: dict[str, float] = entry[1]
        exponent: float = (ts - ref) / half_life
        if exponent > _REBASE_AFTER:
            factor = math.pow(2.0, -exponent)   # math.pow: compiled, C's pow (as `**` calls it) without a generic call
            for k in scores:
                scores[k] *= factor
            entry[0] = ts
            exponent = 0.0
        score = scores.get(key)
        if score is not None:   # a key it holds: nothing to evict
            scores[key] = score + math.pow(2.0, exponent)
            return
        scores[key] = math.pow(2.0, exponent)
        if len(scores) > DECAYED_KEYS:   # the lowest score goes (ties: the smallest key)
            low = min(scores.values())
            del scores[min([k for k, v in scores.items() if v == low])]

    def read(st: CustomerState, now: int) -> Any:
        entry = st.aggs.get(name)
        if entry is None:
            return {}
        ref, scores = entry
        factor = math.pow(2.0, -(now - ref) / half_life)
        return {k: v * factor for k, v in scores.items()}

    return update, read


# -- stored values of another definition ---------------------------------------------------------

class Fit:
    """What a stored value of an aggregate must look like for its update and read to take it.
    `shape` names the check: definitions with the same shape keep each other's values."""

    __slots__ = ("shape", "check")

    def __init__(self, shape: tuple, check: Callable[[Any, int], bool]) -> None:
        self.shape = shape
        self.check = check   # (value, the customer's latest event time) -> whether it fits


def value_fits(agg: Aggregate) -> Fit | None:
    """The `Fit` of `agg`'s stored values (None: any value, the `last` of a property). A value
    stored under the same name by another definition (a reload or a restart with rules that
    changed the aggregate's kind, its `by` or its `window`) can have another shape: read as this
    one's, every event of the customer would fail, or a window's events be lost. A count read as
    a sum fits; so does a window's list of buckets of another width as long as no bucket lies
    after the customer's latest event in this width (a shorter width: the old buckets lie before
    this window and drop out; a longer one would put them in the future, where every new event
    counts as late and is lost)."""
    if agg.kind in ("sum", "count"):
        if agg.by:
            return Fit(("keyed",), _scores_fit)
        if agg.window:
            bucket_ms = -(-agg.window // WINDOW_BUCKETS)   # as `_windowed`

            def windowed_fits(value: Any, last_ts: int) -> bool:
                return _windowed_fits(value, last_ts // bucket_ms)

            return Fit(("windowed", bucket_ms), windowed_fits)
        return Fit(("number",), _is_number)
    if agg.kind == "last":
        return Fit(("number",), _is_number) if agg.field == "ts" else None
    if agg.kind == "decayed_count":
        return Fit(("decayed",), _decayed_fits)
    return None


def _is_number(value: Any, last_ts: int = 0) -> bool:
    """An int or a float other than NaN (which no update makes, and which `min` of the decayed
    count's eviction cannot order)."""
    cls = type(value)
    return cls is int or (cls is float and value == value)


def _windowed_fits(value: Any, latest: int) -> bool:
    """`[[bucket, value], ...]`, never empty (the update reads the latest bucket), no bucket after `latest`."""
    if type(value) is not list or not value:
        return False
    for item in value:
        if type(item) is not list or len(item) != 2 or not _is_number(item[1]):
            return False
        bucket = item[0]
        if type(bucket) is not int or bucket > latest:
            return False
    return True


def _scores_fit(scores: Any, last_ts: int = 0) -> bool:
    """`{key: number}`: a by-aggregate's value, a decayed count's scores."""
    if type(scores) is not dict:
        return False
    for key, score in scores.items():
        if type(key) is not str or not _is_number(score):
            return False
    return True


def _decayed_fits(value: Any, last_ts: int) -> bool:
    """`[ref_ms, {key: score}]`."""
    return type(value) is list and len(value) == 2 and type(value[0]) is int and _scores_fit(value[1])
