"""Decode stage (SPEC §2): native and Segment messages in, events or dead letters out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.times import parse_ts
from engine.events.decode import DeadLetter, EventDecoder, read_jsonl
from engine.events.model import Event

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
SRC = "events.jsonl:17"


def dec(obj: object, max_bytes: int = 65536) -> Event | DeadLetter:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return EventDecoder(max_bytes).decode(raw, SRC)


def native(**overrides: object) -> dict:
    msg = {
        "event_id": "e-81723",
        "type": "add_to_cart",
        "customer_id": "c-1029",
        "ts": "2026-11-20T14:03:11.250Z",
        "properties": {"sku": "A-77", "cart_value": 129.8},
    }
    msg.update(overrides)
    return {k: v for k, v in msg.items() if v is not _DROP}


_DROP = object()


def segment(**overrides: object) -> dict:
    msg = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "anonymousId": "a-1",
        "messageId": "m-1",
        "timestamp": "2026-11-20T14:03:11.250Z",
        "properties": {"order_id": "o-1"},
    }
    msg.update(overrides)
    return {k: v for k, v in msg.items() if v is not _DROP}


# --- native ---------------------------------------------------------------------------


def test_native_rfc3339_z() -> None:
    ev = dec(native())
    assert ev == Event("e-81723", "add_to_cart", "c-1029", 1795183391250, {"sku": "A-77", "cart_value": 129.8})


def test_native_rfc3339_offset() -> None:
    ev = dec(native(ts="2026-11-20T15:03:11.250+01:00"))
    assert isinstance(ev, Event)
    assert ev.ts == 1795183391250 == parse_ts("2026-11-20T14:03:11.250Z")


def test_native_epoch_ms() -> None:
    ev = dec(native(ts=1795183391250))
    assert isinstance(ev, Event) and ev.ts == 1795183391250


def test_native_microseconds_round_to_ms_like_parse_ts() -> None:
    for ts in ("2026-11-20T14:03:11.250499Z", "2026-11-20T14:03:11.250500Z", "2026-11-20T14:03:11.999999Z"):
        ev = dec(native(ts=ts))
        assert isinstance(ev, Event) and ev.ts == parse_ts(ts), ts


def test_native_integer_ids_become_strings() -> None:
    ev = dec(native(event_id=81723, customer_id=1029))
    assert isinstance(ev, Event)
    assert (ev.event_id, ev.customer_id) == ("81723", "1029")


def test_native_properties_optional_and_unknown_keys_ignored() -> None:
    ev = dec(native(properties=_DROP, extra="ignored"))
    assert isinstance(ev, Event) and ev.properties == {}
    ev = dec(native(properties=None))
    assert isinstance(ev, Event) and ev.properties == {}


def test_native_identify_type_is_not_taken_for_segment() -> None:
    ev = dec(native(type="identify", properties={"birthday": "1990-05-01"}))
    assert isinstance(ev, Event) and ev.type == "identify"


# --- Segment --------------------------------------------------------------------------

SEGMENT_NAMES = [
    ("Product Viewed", "product_view"),
    ("Product Added", "add_to_cart"),
    ("Product Removed", "remove_from_cart"),
    ("Checkout Started", "checkout_started"),
    ("Order Completed", "purchase"),
    ("Order Refunded", "refund"),
    ("Signed Up", "signup"),
    ("Coupon Applied", "coupon_redeemed"),
    ("Email Opened", "email_opened"),
    ("Email Link Clicked", "email_clicked"),
    ("Wishlist Created", "wishlist_created"),
    ("Product List Viewed", "product_list_viewed"),
    ("productShared", "product_shared"),
    ("  Cart -- Viewed!  ", "cart_viewed"),
]


@pytest.mark.parametrize(("name", "expected"), SEGMENT_NAMES)
def test_segment_track_names(name: str, expected: str) -> None:
    ev = dec(segment(event=name))
    assert isinstance(ev, Event), ev
    assert ev.type == expected
    assert (ev.event_id, ev.customer_id, ev.ts) == ("m-1", "u-1", 1795183391250)


def test_segment_track_keeps_properties() -> None:
    ev = dec(segment(event="Product Viewed", properties={"sku": "A-77", "category": "shoes"}))
    assert isinstance(ev, Event) and ev.properties == {"sku": "A-77", "category": "shoes"}


@pytest.mark.parametrize(
    ("props", "amount"),
    [
        ({"amount": 10, "revenue": 20, "total": 30}, 10),
        ({"revenue": 20, "total": 30}, 20),
        ({"total": 30}, 30),
        ({"revenue": None, "total": 30}, 30),
    ],
)
def test_segment_purchase_amount(props: dict, amount: float) -> None:
    ev = dec(segment(properties=props))
    assert isinstance(ev, Event) and ev.type == "purchase"
    assert ev.properties["amount"] == amount


def test_segment_purchase_without_any_amount_has_none() -> None:
    ev = dec(segment(properties={"order_id": "o-1"}))
    assert isinstance(ev, Event) and "amount" not in ev.properties


def test_segment_amount_only_for_purchase() -> None:
    ev = dec(segment(event="Order Refunded", properties={"total": 30}))
    assert isinstance(ev, Event) and "amount" not in ev.properties


def test_segment_integer_user_id_and_timestamp_fallbacks() -> None:
    ev = dec(segment(userId=42, timestamp=_DROP, originalTimestamp="2026-11-20T14:03:11.250Z", sentAt="2030-01-01T00:00:00Z"))
    assert isinstance(ev, Event) and ev.customer_id == "42" and ev.ts == 1795183391250
    ev = dec(segment(timestamp=None, sentAt="2026-11-20T14:03:11.250Z"))
    assert isinstance(ev, Event) and ev.ts == 1795183391250


def test_segment_anonymous_id_alone_is_the_customer() -> None:
    """Anonymous traffic (no userId yet) gets a state of its own, under the anonymousId."""
    ev = dec(segment(userId=_DROP, anonymousId="anon-7f3c"))
    assert ev == Event("m-1", "purchase", "anon-7f3c", 1795183391250, {"order_id": "o-1"})
    for user_id in (None, ""):
        ev = dec(segment(userId=user_id, anonymousId="anon-7f3c"))
        assert isinstance(ev, Event) and ev.customer_id == "anon-7f3c"
    ev = dec({"type": "identify", "anonymousId": 99, "messageId": "m-2", "timestamp": "2026-11-20T14:03:11Z",
              "traits": {"timezone": "Europe/Berlin"}})
    assert isinstance(ev, Event) and ev.customer_id == "99" and ev.type == "identify"


def test_segment_user_id_wins_over_anonymous_id() -> None:
    ev = dec(segment(userId="u-1", anonymousId="anon-7f3c"))
    assert isinstance(ev, Event) and ev.customer_id == "u-1"


def test_segment_identify_traits_become_properties() -> None:
    msg = {
        "type": "identify",
        "userId": "u-1",
        "messageId": "m-2",
        "timestamp": "2026-11-20T14:03:11Z",
        "traits": {"email": "a@example.com", "birthday": "1990-05-01"},
        "context": {"ip": "1.2.3.4"},
    }
    ev = dec(msg)
    assert ev == Event("m-2", "identify", "u-1", 1795183391000, {"email": "a@example.com", "birthday": "1990-05-01"})


def test_segment_page_is_page_view() -> None:
    ev = dec({"type": "page", "userId": "u-1", "messageId": "m-3", "timestamp": "2026-11-20T14:03:11Z", "properties": {"path": "/"}})
    assert isinstance(ev, Event) and ev.type == "page_view" and ev.properties == {"path": "/"}


# --- bad input ------------------------------------------------------------------------

BAD = [
    pytest.param(b"{not json", "not JSON", id="not-json"),
    pytest.param(b"", "not JSON", id="empty"),
    pytest.param(b"\xff\xfe\x00garbage", "not JSON", id="binary"),
    pytest.param(b'[{"event_id": "e"}]', "not a JSON object: got array", id="array"),
    pytest.param(b'"just a string"', "not a JSON object: got string", id="string"),
    pytest.param(native(event_id=_DROP), "missing field 'event_id'", id="missing-event_id"),
    pytest.param(native(type=_DROP), "missing field 'type'", id="missing-type"),
    pytest.param(native(customer_id=_DROP), "missing field 'customer_id'", id="missing-customer_id"),
    pytest.param(native(ts=_DROP), "missing field 'ts'", id="missing-ts"),
    pytest.param(native(ts=_DROP, customer_id=_DROP), "missing fields 'customer_id', 'ts'", id="missing-two"),
    pytest.param(native(customer_id=None), "field 'customer_id' is null", id="null-customer_id"),
    pytest.param(native(event_id=1.5), "field 'event_id': expected a string or integer, got number 1.5", id="float-id"),
    pytest.param(native(customer_id=True), "field 'customer_id': expected a string or integer, got boolean", id="bool-id"),
    pytest.param(native(customer_id={"id": 1}), "field 'customer_id': expected a string or integer, got object", id="object-id"),
    pytest.param(native(type=7), "field 'type': expected a string, got integer 7", id="int-type"),
    pytest.param(native(ts="2026-13-01"), "field 'ts': '2026-13-01' is not RFC 3339", id="bad-ts"),
    pytest.param(native(ts="yesterday"), "field 'ts': 'yesterday' is not RFC 3339", id="word-ts"),
    pytest.param(native(ts="2026-11-20T14:03:11"), "field 'ts': '2026-11-20T14:03:11' has no time zone", id="ts-no-zone"),
    pytest.param(native(ts=1.7e12), "field 'ts': expected an RFC 3339 string or epoch milliseconds (integer), got number", id="float-ts"),
    pytest.param(native(ts=True), "field 'ts': expected an RFC 3339 string or epoch milliseconds (integer), got boolean", id="bool-ts"),
    pytest.param(native(ts=10**30), "field 'ts': 1000000000000000000000000000000 is out of range", id="huge-ts"),
    pytest.param(native(properties=[1, 2]), "field 'properties': expected an object, got array", id="properties-array"),
    pytest.param(native(properties="x"), "field 'properties': expected an object, got string", id="properties-string"),
    pytest.param(native(customer_id=""), "field 'customer_id' is an empty string", id="empty-customer_id"),
    pytest.param(native(event_id=""), "field 'event_id' is an empty string", id="empty-event_id"),
    pytest.param(native(type=""), "field 'type' is an empty string", id="empty-type"),
    pytest.param(segment(userId=_DROP, anonymousId=_DROP), "segment message has no userId and no anonymousId",
                 id="segment-no-id"),
    pytest.param(segment(userId=None, anonymousId=""), "segment message has no userId and no anonymousId",
                 id="segment-null-ids"),
    pytest.param(segment(userId=_DROP, anonymousId=True),
                 "field 'anonymousId': expected a string or integer, got boolean", id="segment-bool-anonymousId"),
    pytest.param(segment(type="alias"), "unsupported Segment message type 'alias'", id="segment-alias"),
    pytest.param(segment(type="group"), "unsupported Segment message type 'group'", id="segment-group"),
    pytest.param(segment(type="screen"), "unsupported Segment message type 'screen'", id="segment-screen"),
    pytest.param(segment(messageId=_DROP), "segment message: missing field 'messageId'", id="segment-no-messageId"),
    pytest.param(segment(timestamp=_DROP), "segment message: missing field 'timestamp'", id="segment-no-timestamp"),
    pytest.param(segment(timestamp="2026-11-20"), "field 'timestamp': '2026-11-20' is not RFC 3339", id="segment-bad-timestamp"),
    pytest.param(segment(event=_DROP), "segment track message: missing field 'event'", id="segment-no-event"),
    pytest.param(segment(event="!!!"), "field 'event': '!!!' has no letters or digits", id="segment-event-no-name"),
    pytest.param(segment(properties=[]), "field 'properties': expected an object, got array", id="segment-properties"),
    pytest.param({"type": "identify", "userId": "u", "messageId": "m", "timestamp": "2026-11-20T14:03:11Z", "traits": "x"},
                 "field 'traits': expected an object, got string", id="segment-traits"),
]


@pytest.mark.parametrize(("msg", "reason"), BAD)
def test_bad_input_is_a_dead_letter_with_reason_and_source(msg: object, reason: str) -> None:
    raw = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    dl = EventDecoder().decode(raw, SRC)
    assert isinstance(dl, DeadLetter), dl
    assert reason in dl.reason
    assert dl.source == SRC
    assert dl.raw == raw.decode("utf-8", errors="replace")


def test_too_large_is_truncated_and_says_so() -> None:
    raw = json.dumps(native(properties={"blob": "x" * 70_000})).encode()
    dl = EventDecoder().decode(raw, "kafka customer-events/3@1234")
    assert isinstance(dl, DeadLetter)
    assert dl.reason.startswith(f"too large: {len(raw)} bytes > 65536")
    assert "first 4096 bytes" in dl.reason
    assert dl.source == "kafka customer-events/3@1234"
    assert dl.raw == raw[:4096].decode()


def test_max_bytes_is_configurable_and_inclusive() -> None:
    raw = json.dumps(native()).encode()
    assert isinstance(EventDecoder(max_bytes=len(raw)).decode(raw, SRC), Event)
    assert isinstance(EventDecoder(max_bytes=len(raw) - 1).decode(raw, SRC), DeadLetter)


def test_truncation_inside_a_multibyte_character_is_replaced_not_raised() -> None:
    raw = b"\xc3\xa9" * 40_000
    dl = EventDecoder().decode(raw, SRC)
    assert isinstance(dl, DeadLetter) and dl.reason.startswith("too large")
    assert dl.raw.startswith("é" * 2047)


# --- batches and files ----------------------------------------------------------------


def test_decode_batch_keeps_order_and_separates_dead_letters() -> None:
    items = [
        (json.dumps(native(event_id="e1")).encode(), "f:1"),
        (b"garbage", "f:2"),
        (json.dumps(segment(messageId="e2")).encode(), "f:3"),
        (json.dumps(native(event_id="e3", ts="2026-11-20T14:03:11")).encode(), "f:4"),
        (json.dumps(native(event_id="e4", ts=1)).encode(), "f:5"),
        (b"x" * 70_000, "f:6"),
        (json.dumps(native(event_id=5)).encode(), "f:7"),
    ]
    events, dead = EventDecoder().decode_batch(items)
    assert [e.event_id for e in events] == ["e1", "e2", "e4", "5"]
    assert [d.source for d in dead] == ["f:2", "f:4", "f:6"]
    assert dead[0].reason.startswith("not JSON")
    assert "has no time zone" in dead[1].reason
    assert dead[2].reason.startswith("too large")


def test_decode_batch_agrees_with_decode() -> None:
    items = [(json.dumps(m).encode() if not isinstance(m, bytes) else m, f"f:{i}") for i, (m, _) in enumerate(p.values for p in BAD)]
    items += [(json.dumps(native(event_id=f"e{i}")).encode(), f"g:{i}") for i in range(5)]
    d = EventDecoder()
    single = [d.decode(raw, src) for raw, src in items]
    events, dead = d.decode_batch(items)
    assert events == [r for r in single if isinstance(r, Event)]
    assert dead == [r for r in single if isinstance(r, DeadLetter)]


def test_read_jsonl_streams_non_blank_lines_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n   \n{"b": 2}\n{"c": 3}')
    assert list(read_jsonl(path)) == [
        (b'{"a": 1}', f"{path}:1"),
        (b'{"b": 2}', f"{path}:4"),
        (b'{"c": 3}', f"{path}:5"),
    ]


def test_read_jsonl_dash_is_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    fake = io.TextIOWrapper(io.BytesIO(b'{"a": 1}\n\n{"b": 2}\n'))
    monkeypatch.setattr(sys, "stdin", fake)
    assert list(read_jsonl("-")) == [(b'{"a": 1}', "<stdin>:1"), (b'{"b": 2}', "<stdin>:3")]


@pytest.mark.parametrize("name", ["online-retail-orders.jsonl", "rees46-clickstream-sample.jsonl"])
def test_real_data_files_decode_without_dead_letters(name: str) -> None:
    path = DATA_DIR / name
    if not path.exists():
        pytest.skip(f"real data file {path} not present (shared/data lives next to the repo checkout)")
    lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    events, dead = EventDecoder().decode_batch(read_jsonl(path))
    assert dead == []
    assert len(events) == lines
    assert all(e.ts > 0 and e.event_id and e.customer_id and e.type for e in events)


# --- property -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises_for_arbitrary_bytes(raw: bytes) -> None:
    result = EventDecoder(max_bytes=200).decode(raw, "fuzz:1")
    assert isinstance(result, (Event, DeadLetter))
    if isinstance(result, DeadLetter):
        assert result.source == "fuzz:1" and result.reason


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
_field_values = st.one_of(
    _json,
    st.sampled_from(["", "e-1", "2026-11-20T14:03:11Z", "2026-11-20T14:03:11", "track", "identify", "alias", "Order Completed"]),
    st.integers(),
)
_messages = st.dictionaries(
    st.sampled_from(
        ["event_id", "type", "customer_id", "ts", "properties", "userId", "anonymousId", "messageId",
         "timestamp", "originalTimestamp", "sentAt", "event", "traits"]
    ),
    _field_values,
    max_size=10,
)


@settings(max_examples=500, deadline=None)
@given(_messages)
def test_decode_never_raises_for_json_shaped_messages(msg: dict) -> None:
    raw = json.dumps(msg).encode()
    result = EventDecoder().decode(raw, "fuzz:2")
    assert isinstance(result, (Event, DeadLetter))
    if isinstance(result, DeadLetter):
        assert not result.reason.startswith("cannot decode"), result.reason  # the last-resort catch
    if isinstance(result, Event):
        assert result.event_id and result.customer_id and result.type
        assert isinstance(result.ts, int) and isinstance(result.properties, dict)
    # the slow path (reasons, Segment) applies the fast path's rules: same verdict, same event
    if not any(k in msg for k in ("userId", "anonymousId", "messageId")) and not (
        isinstance(msg.get("type"), str) and msg["type"] in _SEGMENT_TYPES
    ):
        assert EventDecoder()._slow(raw, "fuzz:2") == result


_SEGMENT_TYPES = {"track", "identify", "page", "group", "alias", "screen"}
