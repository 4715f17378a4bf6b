"""Decode stage: raw message bytes -> `Event`, or a `DeadLetter` that says why not (SPEC §2).

The contract of this stage is that a bad message never stops the engine and is never
silently dropped: every input becomes exactly one `Event` or one `DeadLetter`, and
`EventDecoder.decode` never raises, whatever the bytes.

Two layers, for speed:

- the fast path decodes the native form with one cached, typed `msgspec.json.Decoder`
  (6x faster than an uncached decode, see docs/hot-path-measurements.md §1);
- only when that fails does the slow path decode to plain builtins, tell a Segment message
  from a native one, map Segment messages, and otherwise find the exact field that is
  wrong for the dead letter's reason. The slow path applies the same rules as the fast path,
  so an input is never accepted by one and rejected by the other.

A message that decodes as a complete native event is native, even if it also carries
Segment keys; only messages that are not valid native events are looked at as Segment.

Every accepted event is normalised so that any state built from it can be stored (msgpack)
and read back: properties nest at most `MAX_DEPTH` levels, integers beyond ±2^53 become
floats (larger than a float can hold: a dead letter), and the special `consent` event must
carry a string `channel` and a boolean `granted`. The decoder is the one place where the
outside world's values are checked; the core after it can rely on them.
"""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import msgspec

from engine.events.model import CONSENT_EVENT, MAX_EXACT, Event

__all__ = ["DeadLetter", "DecodedBatch", "EventDecoder", "Stage", "MAX_DEPTH", "JSONL_BATCH", "decode_jsonl",
           "read_jsonl", "segment_event_type", "SEGMENT_EVENT_TYPES"]

RAW_KEEP_BYTES = 4096
"""An oversized message keeps only this much of its text in the dead letter, so that one
huge message cannot blow up the dead-letter output."""


MAX_DEPTH = 16
"""Levels of objects and arrays allowed inside `properties` (`{"a": {"b": 1}}` is 2): real
shop data nests 2 or 3 deep; the bound keeps every state walkable without recursion limits."""

MAX_EXACT_INT = MAX_EXACT
"""Integers beyond ±2^53 are not exact in JSON for most producers (JavaScript) and cannot be
stored as msgpack beyond 64 bits: they become floats."""


class Stage(enum.StrEnum):
    """Where a message was stopped on its way to the customer's state."""

    DECODE = "decode"       # not a usable event (syntax, fields, values)
    KEY = "key"             # a Kafka message whose key is not its customer_id
    EVALUATE = "evaluate"   # the rules could not be applied to it (an engine bug: logged loudly)
    STORE = "store"         # the state it produced cannot be stored (an engine bug: logged loudly)


class DeadLetter(msgspec.Struct):
    """A message the engine could not use, kept with enough context to fix and replay it.

    `reason` names the field and the problem; `source` says where the message came from
    (`events.jsonl:17`, `kafka customer-events/3@1234`); `raw` is the original text
    (utf-8, undecodable bytes replaced), cut to the first 4 KiB when the message was too
    large, which the reason then says. `stage` says which step refused it. Whatever the
    stage, the customer's state is as it was before the message.
    """

    reason: str
    source: str
    raw: str
    stage: Stage = Stage.DECODE


# Segment e-commerce spec v2 names -> native event types. Names not in the table become
# the snake_case of the name, so a shop's own events still arrive under a predictable type.
SEGMENT_EVENT_TYPES: dict[str, str] = {
    "Product Viewed": "product_view",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Checkout Started": "checkout_started",
    "Order Completed": "purchase",
    "Order Refunded": "refund",
    "Signed Up": "signup",
    "Coupon Applied": "coupon_redeemed",
    "Email Opened": "email_opened",
    "Email Link Clicked": "email_clicked",
}

_SEGMENT_TYPES = frozenset({"track", "identify", "page", "group", "alias", "screen"})
_SEGMENT_KEYS = ("userId", "anonymousId", "messageId")
_PURCHASE_AMOUNT_KEYS = ("amount", "revenue", "total")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# datetime's own range (years 1..9999): anything outside cannot be formatted back to
# RFC 3339 by the rest of the engine, and is a unit mistake anyway (e.g. epoch µs).
_MIN_TS_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
# The upper bound leaves room for deadlines: a timestamp plus a rule's wait must still be a date.
_MAX_TS_MS = (datetime(9000, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_NO_TS = _MAX_TS_MS + 1   # a ts without a zone: out of range, for the slow path to explain

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


# A property value the fast path takes as it is: checked by msgspec in C. Anything else (an
# object, an array, an integer beyond ±2^53) takes the slow path, which normalises it.
_Scalar = str | Annotated[int, msgspec.Meta(ge=-MAX_EXACT_INT, le=MAX_EXACT_INT)] | float | bool | None


class _NativeWire(msgspec.Struct):
    """The native event as it is on the wire: ids may be ints, ts a string or epoch ms, and
    flat properties (what the fast path takes).

    Unknown keys are ignored, so producers can add fields without breaking the engine.
    """

    event_id: _NonEmpty | int
    type: _NonEmpty
    customer_id: _NonEmpty | int
    ts: datetime | int
    properties: dict[str, _Scalar] | None = None


_fast_decoder = msgspec.json.Decoder(_NativeWire)
_any_decoder = msgspec.json.Decoder()


def _datetime_ms(dt: datetime) -> int:
    """Aware datetime -> epoch ms, exact integer arithmetic, sub-millisecond rounded half up
    (as `engine.times.parse_ts` does, without its float rounding)."""
    return ((dt - _EPOCH) // _MICROSECOND + 500) // 1000


class _Invalid(Exception):
    """Internal: carries a dead-letter reason out of the slow path."""


_JSON_KINDS = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object"}


def _kind(value: object) -> str:
    """JSON's name for a decoded value's type, for reasons a producer can act on."""
    return _JSON_KINDS.get(type(value)) or type(value).__name__


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ts_ms(value: object, field: str) -> int:
    """Wire ts -> epoch ms with the fast path's rules: an RFC 3339 string with a zone, or an
    int of epoch milliseconds."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid(
            f"field {field!r}: expected an RFC 3339 string or epoch milliseconds (integer), "
            f"got {_kind(value)} {_show(value)}"
        )
    if isinstance(value, str):
        try:
            dt = msgspec.convert(value, datetime)
        except msgspec.ValidationError:
            raise _Invalid(
                f"field {field!r}: {_show(value)} is not RFC 3339 "
                "(e.g. 2026-11-20T14:03:11.250Z or 2026-11-20T15:03:11+01:00)"
            ) from None
        if dt.tzinfo is None:
            raise _Invalid(f"field {field!r}: {_show(value)} has no time zone: add Z or an offset such as +01:00")
        ms = _datetime_ms(dt)
        if not _MIN_TS_MS <= ms <= _MAX_TS_MS:
            raise _Invalid(f"field {field!r}: {_show(value)} is after the year 9000")
        return ms
    if not _MIN_TS_MS <= value <= _MAX_TS_MS:
        raise _Invalid(f"field {field!r}: {value} is out of range for epoch milliseconds")
    return value


def _id(value: object, field: str) -> str:
    """Ids are strings; integer ids (common in shop databases) are accepted as their decimal text."""
    if isinstance(value, str):
        if not value:
            raise _Invalid(f"field {field!r} is an empty string")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Invalid(f"field {field!r}: expected a string or integer, got {_kind(value)} {_show(value)}")


def _properties(value: object, field: str) -> dict[str, Any]:
    """Absent or null means no properties; anything else must be an object (normalised)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"field {field!r}: expected an object, got {_kind(value)} {_show(value)}")
    if value:
        _normalize(value, 1, field)
    return value


def _normalize(container: dict[str, Any] | list[Any], depth: int, field: str) -> None:
    """Make decoded JSON storable, in place: bounded depth, integers within ±2^53 (else floats).

    Strings, floats (JSON has no NaN or infinity), booleans and null need nothing. Called on
    every event with properties, so the common flat case is one pass of class checks.
    """
    items = container.items() if container.__class__ is dict else enumerate(container)
    for key, value in items:
        cls = value.__class__
        if cls is str or cls is float or cls is bool or value is None:
            continue
        if cls is int:
            if -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
                continue
            try:
                container[key] = float(value)  # type: ignore[index]
            except OverflowError:
                raise _Invalid(f"field {field!r}: an integer of over 308 digits is too large for a number") from None
        elif depth >= MAX_DEPTH:
            raise _Invalid(f"field {field!r}: nested too deep (more than {MAX_DEPTH} levels of objects and arrays)")
        else:
            _normalize(value, depth + 1, field)


def _check_consent(props: dict[str, Any]) -> None:
    """`consent` events decide per channel: a channel that is not a string could never match one."""
    channel = props.get("channel")
    if channel.__class__ is not str or not channel:
        raise _Invalid(f"consent event: 'channel' must be a non-empty string such as \"email\", "
                       f"got {_kind(channel)} {_show(channel)}")
    granted = props.get("granted")
    if granted.__class__ is not bool:
        raise _Invalid(f"consent event: 'granted' must be true or false, got {_kind(granted)} {_show(granted)}")


_REQUIRED = ("event_id", "type", "customer_id", "ts")


def _native(obj: dict[str, Any]) -> Event:
    missing = [f for f in _REQUIRED if f not in obj]
    if missing:
        names = ", ".join(repr(f) for f in missing)
        raise _Invalid(f"missing field{'s' if len(missing) > 1 else ''} {names}")
    for field in _REQUIRED:
        if obj[field] is None:
            raise _Invalid(f"field {field!r} is null")
    event_id = _id(obj["event_id"], "event_id")
    etype = obj["type"]
    if not isinstance(etype, str):
        raise _Invalid(f"field 'type': expected a string, got {_kind(etype)} {_show(etype)}")
    if not etype:
        raise _Invalid("field 'type' is an empty string")
    customer_id = _id(obj["customer_id"], "customer_id")
    ts = _ts_ms(obj["ts"], "ts")
    properties = _properties(obj.get("properties"), "properties")
    if etype == CONSENT_EVENT:
        _check_consent(properties)
    return Event(event_id, etype, customer_id, ts, properties)


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_ALNUM = re.compile(r"[^0-9a-zA-Z]+")


@lru_cache(maxsize=4096)
def segment_event_type(name: str) -> str:
    """A Segment track event name -> native event type ("" when the name has no letters or
    digits). Cached because a shop has few names; bounded because names come from outside."""
    mapped = SEGMENT_EVENT_TYPES.get(name)
    if mapped is not None:
        return mapped
    return _NOT_ALNUM.sub("_", _CAMEL_BOUNDARY.sub("_", name)).strip("_").lower()


def _segment(obj: dict[str, Any]) -> Event:
    """Segment spec message -> native event. The customer is `userId`, else `anonymousId`
    (anonymous traffic: a visitor's state of its own, not merged into the known customer's
    when they log in); a message with neither is a dead letter, not an event."""
    stype = obj.get("type")
    if stype is None:
        raise _Invalid("segment message: missing field 'type'")
    if not isinstance(stype, str):
        raise _Invalid(f"segment message: field 'type': expected a string, got {_kind(stype)} {_show(stype)}")
    if stype not in ("track", "identify", "page"):
        raise _Invalid(f"unsupported Segment message type {_show(stype)}")

    for id_field in ("userId", "anonymousId"):
        if obj.get(id_field) is not None and obj[id_field] != "":
            customer_id = _id(obj[id_field], id_field)
            break
    else:
        raise _Invalid("segment message has no userId and no anonymousId")
    if obj.get("messageId") is None:
        raise _Invalid("segment message: missing field 'messageId'")
    event_id = _id(obj["messageId"], "messageId")

    for ts_field in ("timestamp", "originalTimestamp", "sentAt"):
        if obj.get(ts_field) is not None:
            ts = _ts_ms(obj[ts_field], ts_field)
            break
    else:
        raise _Invalid("segment message: missing field 'timestamp' (and no 'originalTimestamp' or 'sentAt')")

    if stype == "identify":
        return Event(event_id, "identify", customer_id, ts, _properties(obj.get("traits"), "traits"))
    properties = _properties(obj.get("properties"), "properties")
    if stype == "page":
        return Event(event_id, "page_view", customer_id, ts, properties)

    name = obj.get("event")
    if name is None:
        raise _Invalid("segment track message: missing field 'event'")
    if not isinstance(name, str):
        raise _Invalid(f"segment track message: field 'event': expected a string, got {_kind(name)} {_show(name)}")
    etype = segment_event_type(name)
    if not etype:
        raise _Invalid(f"segment track message: field 'event': {_show(name)} has no letters or digits")
    if etype == "purchase" and properties.get("amount") is None:
        for key in _PURCHASE_AMOUNT_KEYS[1:]:
            if properties.get(key) is not None:
                properties["amount"] = properties[key]
                break
    elif etype == CONSENT_EVENT:
        _check_consent(properties)
    return Event(event_id, etype, customer_id, ts, properties)


def _is_segment(obj: dict[str, Any]) -> bool:
    if any(key in obj for key in _SEGMENT_KEYS):
        return True
    stype = obj.get("type")
    return isinstance(stype, str) and stype in _SEGMENT_TYPES and "event_id" not in obj


def _raw_text(raw: bytes | bytearray | memoryview | str, limit: int | None = None) -> str:
    if isinstance(raw, str):
        return raw if limit is None else raw[:limit]
    data = bytes(raw) if limit is None else bytes(raw[:limit])
    return data.decode("utf-8", errors="replace")


def _fast(raw: bytes) -> Event | None:
    """The native form through the typed decoder, or None when the slow path must look: at
    anything unusual, and at `consent` events, whose properties it checks.

    Every check here is one the slow path makes too (with a precise reason), so an input is
    never accepted by one path and refused by the other. `EventDecoder.decode_batch` inlines it.
    """
    try:
        w = _fast_decoder.decode(raw)
        ts: Any = w.ts   # datetime | int, told apart by __class__ (which mypy does not narrow on)
        if ts.__class__ is not int:
            ts = ((ts - _EPOCH) // _MICROSECOND + 500) // 1000 if ts.tzinfo is not None else _NO_TS
        etype = w.type
        if not _MIN_TS_MS <= ts <= _MAX_TS_MS or etype == CONSENT_EVENT:
            return None
        eid = w.event_id
        cid = w.customer_id
        return Event(eid if eid.__class__ is str else str(eid), etype, cid if cid.__class__ is str else str(cid),
                     ts, w.properties or {})
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, ValueError):
        return None   # ValueError: an integer id beyond Python's int-to-text limit


def _key_reason(key: bytes | None, customer_id: str) -> str | None:
    """Why a message cannot be applied on the partition it came from, or None when it can."""
    if key is not None and key == customer_id.encode("utf-8", "surrogatepass"):
        return None
    shown = "no key" if key is None else f"key {_show(key.decode('utf-8', 'replace'))}"
    return (f"message has {shown}, but its customer_id is {_show(customer_id)}: events must be keyed by "
            "customer_id, so that all of a customer's events are in one partition (fix the producer, or "
            "turn on the repartition stage: kafka.repartition_from)")


class EventDecoder:
    """Turns raw messages into events; every input yields one `Event` or one `DeadLetter`.

    `max_bytes` bounds the size of one message: a larger one is a dead letter before any
    parsing, so a runaway producer cannot stall the hot path or exhaust memory.
    """

    def __init__(self, max_bytes: int = 65536) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes

    def decode(self, raw: bytes, source: str) -> Event | DeadLetter:
        """One message -> `Event` or `DeadLetter`. Never raises on bad input."""
        if raw is None:
            return DeadLetter("empty message: no value (a tombstone?)", source, "")
        if len(raw) > self.max_bytes:
            return self._too_large(raw, source)
        event = _fast(raw)
        return event if event is not None else self._slow(raw, source)

    def decode_batch(self, items: Iterable[tuple[bytes | None, str]],
                     keys: Sequence[bytes | None] | None = None,
                     positions: list[int] | None = None) -> tuple[list[Event], list[DeadLetter]]:
        """A batch of `(raw, source)` -> (events in input order, dead letters in input order).

        With `keys` (the Kafka message keys, aligned with `items`), an event whose key is not
        its customer_id is a dead letter (stage `key`): applied on this partition, it would
        update a copy of the customer's state that another partition also updates.
        `positions`, when given, gets the index in `items` of each event returned.
        """
        events: list[Event] = []
        dead: list[DeadLetter] = []
        add_event = events.append
        add_dead = dead.append
        max_bytes = self.max_bytes
        fast = _fast_decoder.decode
        # `_fast`, inlined: a call per message is a measurable share of decoding. Keep the two alike.
        for i, (raw, source) in enumerate(items):
            if raw is None:   # a Kafka tombstone: a key with no value
                add_dead(DeadLetter("empty message: no value (a tombstone?)", source, ""))
                continue
            if len(raw) > max_bytes:
                add_dead(self._too_large(raw, source))
                continue
            result = None
            try:
                w = fast(raw)
                ts: Any = w.ts   # datetime | int, told apart by __class__ (which mypy does not narrow on)
                if ts.__class__ is not int:
                    ts = ((ts - _EPOCH) // _MICROSECOND + 500) // 1000 if ts.tzinfo is not None else _NO_TS
                etype = w.type
                if _MIN_TS_MS <= ts <= _MAX_TS_MS and etype != CONSENT_EVENT:
                    eid = w.event_id
                    cid = w.customer_id
                    result = Event(eid if eid.__class__ is str else str(eid), etype,
                                   cid if cid.__class__ is str else str(cid), ts, w.properties or {})
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, ValueError):
                pass
            if result is None:   # anything unusual (and consent events): the slow path says what
                slow: Any = self._slow(raw, source)   # Event | DeadLetter, told apart by __class__
                if slow.__class__ is not Event:
                    add_dead(slow)
                    continue
                result = slow
            if keys is not None:
                why = _key_reason(keys[i], result.customer_id)
                if why is not None:
                    add_dead(DeadLetter(why, source, _raw_text(raw), Stage.KEY))
                    continue
            add_event(result)
            if positions is not None:
                positions.append(i)
        return events, dead

    def _too_large(self, raw: bytes, source: str) -> DeadLetter:
        try:
            size = len(raw) if not isinstance(raw, str) else len(raw.encode("utf-8", errors="replace"))
            text = _raw_text(raw, RAW_KEEP_BYTES)
        except Exception:  # never raise on bad input, whatever its type
            size, text = len(raw), ""
        return DeadLetter(
            f"too large: {size} bytes > {self.max_bytes} (raw keeps the first {RAW_KEEP_BYTES} bytes)",
            source,
            text,
        )

    def _slow(self, raw: bytes, source: str) -> Event | DeadLetter:
        """Decode to builtins to map Segment messages or name exactly what is wrong."""
        try:
            try:
                obj = _any_decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise _Invalid(f"not JSON: {exc}") from None
            except RecursionError:
                raise _Invalid("nested too deep: the message exceeds the JSON decoder's depth limit") from None
            if not isinstance(obj, dict):
                raise _Invalid(f"not a JSON object: got {_kind(obj)}")
            return _segment(obj) if _is_segment(obj) else _native(obj)
        except _Invalid as exc:
            reason = str(exc)
        except Exception as exc:  # a bug here must cost one message, not the engine
            reason = f"cannot decode: {type(exc).__name__}: {exc}"
        try:
            text = _raw_text(raw)
        except Exception:
            text = repr(raw)[:RAW_KEEP_BYTES]
        return DeadLetter(reason, source, text)


def read_jsonl(path: str | Path) -> Iterator[tuple[bytes, str]]:
    """Stream `(line, "file:line_number")` for each non-blank line of a JSONL file.

    The file is read line by line, so a backtest over a large file runs in constant memory.
    `-` reads stdin (source `<stdin>:N`). The line number counts every line, blank ones
    included, so it matches what an editor shows. A UTF-8 byte-order mark on the first line
    is dropped, since spreadsheet exports add one and it is not part of the JSON.
    """
    if str(path) == "-":
        yield from lines_of(sys.stdin.buffer, "<stdin>")
        return
    with open(path, "rb") as fh:
        yield from lines_of(fh, str(path))


def lines_of(fh: Any, name: str) -> Iterator[tuple[bytes, str]]:
    """`read_jsonl` of an open binary file named `name` in the sources."""
    for number, line in enumerate(fh, 1):
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line, f"{name}:{number}"


JSONL_BATCH = 2000
"""Lines of an event file decoded per step: the per-batch cost vanishes, memory holds one batch."""


class DecodedBatch(msgspec.Struct):
    """One step through an event file: what decoded, what did not, and how many bytes it took."""

    events: list[Event]          # in file order
    dead: list[DeadLetter]       # in file order, each with its `file:line`
    size: int                    # bytes of the batch's lines, newlines included (for a progress bar)


def decode_jsonl(path: str | Path, batch_size: int = JSONL_BATCH,
                 decoder: EventDecoder | None = None, containing: bytes | None = None) -> Iterator[DecodedBatch]:
    """Decode a JSONL event file (`-`: stdin) batch by batch, in constant memory.

    The one loop the offline tools share (backtest, diff, explain): every non-blank line ends
    up in exactly one batch, as an event or a dead letter. A caller that stops iterating stops
    the reading; no line after the last batch it took is decoded. `containing`: only the lines
    that hold these bytes are decoded (a cheap filter, e.g. one customer's id); the others are
    skipped, and not counted in `size`.
    """
    decoder = decoder if decoder is not None else EventDecoder()
    batch: list[tuple[bytes, str]] = []
    for item in read_jsonl(path):
        if containing is not None and containing not in item[0]:
            continue
        batch.append(item)
        if len(batch) >= batch_size:
            yield _decoded(decoder, batch)
            batch = []
    if batch:
        yield _decoded(decoder, batch)


def _decoded(decoder: EventDecoder, batch: list[tuple[bytes, str]]) -> DecodedBatch:
    events, dead = decoder.decode_batch(batch)
    return DecodedBatch(events, dead, sum(len(raw) + 1 for raw, _ in batch))
