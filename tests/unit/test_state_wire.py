"""States written by the engine of commit 8f464d8 (before the typed records and
`CustomerState.deferred`) still decode, field by field, and the new engine writes the same
bytes but for the fields it appended (`deferred`, an empty list unless a send is deferred, and
`latest_of`, an empty map unless an `inactive … of:` rule saw one of its types).

tests/fixtures/state_8f464d8/ holds that engine's state module verbatim (`customer.py`) and
the bytes it wrote (`state.msgpack`, with a deferred send under the old timer key, and
`state_no_deferred.msgpack`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from engine.state.customer import (
    LEGACY_DEFER_KEY,
    Consent,
    Contact,
    CustomerState,
    Deferred,
    OpenTrigger,
    Timer,
    decode_state,
    encode_state,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "state_8f464d8"
T = 1_700_000_000_000


@pytest.fixture(scope="module")
def old():
    """The state module of 8f464d8, imported under another name."""
    spec = importlib.util.spec_from_file_location("customer_8f464d8", FIXTURES / "customer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # msgspec resolves the annotations through the module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def old_state(old):
    """The state the fixtures hold, built with the old code."""
    return old.CustomerState(
        aggs={"lifetime_spend": 129.5, "purchases": 3, "interest": {"shoes": 0.5}, "views_7d": [[T, 2]]},
        profile={"email": "c1@example.com", "timezone": "Europe/London"},
        armed=["vip-5000"],
        sent={"cart-abandoned": T + 1, "welcome": T + 2},
        timers=[
            old.Timer(T + 3_600_000, "cart-abandoned", 0, "", "e-1", T, {"sku": "A-1", "cart_value": 9.5}, "add_to_cart"),
            old.Timer(T + 7_200_000, "tips", 1, "\x00defer", "e-2", T + 10, {
                "payload": {"subject": "Tips", "n": 2}, "cause_event_id": "e-2", "deferred_at": T + 20}),
            old.Timer(T + 9_000_000, "onboarding", 2, "c-9", "e-3", T + 30),
        ],
        last_ts=T + 40,
        seen=[123456789012345, 42],
        consent={"email": [True, T + 5], "push": [False, T + 6]},
        contacts=[[T + 1, "email"], [T + 2, "push"]],
        open_triggers=[["cart-abandoned", T + 1, False, True, False, T + 86_400_000],
                       ["welcome", T + 2, True, False, True, T + 90_000_000]],
        idle_fired=["winback"],
        occurred={"birthday": "2026-05-17"},
    )


def test_the_fixtures_are_what_the_old_engine_writes(old):
    st = old_state(old)
    assert old.encode_state(st) == (FIXTURES / "state.msgpack").read_bytes()
    st.timers = [t for t in st.timers if t.key != "\x00defer"]
    assert old.encode_state(st) == (FIXTURES / "state_no_deferred.msgpack").read_bytes()


def test_an_old_state_decodes_field_by_field():
    st = decode_state((FIXTURES / "state.msgpack").read_bytes())
    assert st.aggs == {"lifetime_spend": 129.5, "purchases": 3, "interest": {"shoes": 0.5}, "views_7d": [[T, 2]]}
    assert st.profile == {"email": "c1@example.com", "timezone": "Europe/London"}
    assert st.armed == ["vip-5000"]
    assert st.last_contact == {"cart-abandoned": T + 1, "welcome": T + 2}
    assert st.timers == [
        Timer(T + 3_600_000, "cart-abandoned", 0, "", "e-1", T, {"sku": "A-1", "cart_value": 9.5}, "add_to_cart"),
        Timer(T + 9_000_000, "onboarding", 2, "c-9", "e-3", T + 30, {}, ""),
    ]
    assert st.last_ts == T + 40
    assert st.seen == [123456789012345, 42]
    assert st.consent == {"email": Consent(True, T + 5), "push": Consent(False, T + 6)}
    assert st.consent["push"].granted is False and st.consent["push"].at == T + 6
    assert st.contacts == [Contact(T + 1, "email"), Contact(T + 2, "push")]
    assert [(c.at, c.channel) for c in st.contacts] == [(T + 1, "email"), (T + 2, "push")]
    first, second = st.open_triggers
    assert (first.rule, first.at, first.held_out, first.responded, first.converted, first.until) == (
        "cart-abandoned", T + 1, False, True, False, T + 86_400_000)
    assert second == OpenTrigger("welcome", T + 2, True, False, True, T + 90_000_000)
    assert st.idle_fired == ["winback"]
    assert st.occurred == {"birthday": "2026-05-17"}
    # the deferred send the old engine kept as a timer under its magic key has its own place now
    assert st.deferred == [Deferred(T + 7_200_000, "tips", 1, "e-2", T + 10, "e-2", {"subject": "Tips", "n": 2}, T + 20)]
    assert all(t.key != LEGACY_DEFER_KEY for t in st.timers)
    assert st.next_due() == T + 3_600_000


def test_the_new_engine_writes_the_old_bytes_plus_the_appended_fields():
    """Every record keeps its bytes; the state array has five more elements, `deferred` (an empty
    list), `latest_of` (an empty map: no `inactive … of:` rule has seen its types), `journeys`
    (an empty map: no journey position), `engagement` (empty bytes: no response learned) and
    `fence` (0: not committed to a Redis Cluster). With 17 elements the array's header is an
    array16 (0xdc 0x0011), no longer a fixarray."""
    old_bytes = (FIXTURES / "state_no_deferred.msgpack").read_bytes()
    st = decode_state(old_bytes)
    assert st.deferred == [] and st.latest_of == {}
    assert old_bytes[0] == 0x9C   # a 12-element array
    assert encode_state(st) == b"\xdc\x00\x11" + old_bytes[1:] + b"\x90\x80\x80\xc4\x00\x00"


def test_the_old_engine_decodes_a_new_state(old):
    """A rollback reads what the new engine wrote (a state without deferred sends loses nothing)."""
    new = decode_state((FIXTURES / "state_no_deferred.msgpack").read_bytes())
    back = old.decode_state(encode_state(new))
    expected = old_state(old)
    expected.timers = [t for t in expected.timers if t.key != "\x00defer"]
    assert back == expected
    assert back.consent["email"] == [True, T + 5] and back.contacts[1] == [T + 2, "push"]
    assert back.open_triggers[0][5] == T + 86_400_000 and back.sent == {"cart-abandoned": T + 1, "welcome": T + 2}


def test_a_new_state_round_trips():
    st = CustomerState(consent={"sms": Consent(True, 5)}, contacts=[Contact(5, "sms")],
                       open_triggers=[OpenTrigger("r", 5, False, False, False, 9)],
                       deferred=[Deferred(7, "r", 0, "e", 1, "e", {"a": 1}, 6)], latest_of={"purchase": 4})
    assert decode_state(encode_state(st)) == st
