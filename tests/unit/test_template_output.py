"""Rendered payload templates pinned byte for byte: the typed value (its repr: a tuple stays a tuple,
an int an int) and its JSON, for money sums, noisy floats, text and every shape of expression, so
that moving work from rendering to compiling cannot change a payload."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.actions.numbers import without_float_noise
from engine.events.model import Event
from engine.rules.expr import Env, ExprError, compile_expr, compile_template
from engine.state.customer import CustomerState

NOW = 1_790_000_000_000
ENV = Env(aggregates={
    "lifetime_spend": lambda st, now: st.aggs.get("lifetime_spend", 0),
    "orders": lambda st, now: st.aggs.get("orders", 0),
    "spend_by_country": lambda st, now: st.aggs.get("spend_by_country", {}),
    "tags": lambda st, now: st.aggs.get("tags"),
})
STATE = CustomerState(aggs={"lifetime_spend": 1108.6699999999998, "orders": 7,
                            "spend_by_country": {"UK": 15.299999999999999, "FR": 0.30000000000000004},
                            "tags": ["a", 0.30000000000000004]},
                      profile={"first_name": "Ann", "signup": "2026-09-01", "score": 0.30000000000000004})
EVENT = Event("e1", "purchase", "c1", NOW, {"amount": 2.55, "name": "Shoes", "noisy": 0.30000000000000004, "ok": True})
inf = float("inf")

RENDERED: list[tuple[str, Any, bytes]] = [
    ('{lifetime_spend}', 1108.67, b'1108.67'),
    ('you spent {lifetime_spend} GBP', 'you spent 1108.67 GBP', b'"you spent 1108.67 GBP"'),
    ('{orders}', 7, b'7'),
    ('{orders} orders', '7 orders', b'"7 orders"'),
    ('{spend_by_country}', {'UK': 15.3, 'FR': 0.3}, b'{"UK":15.3,"FR":0.3}'),
    ('by country: {spend_by_country}', "by country: {'UK': 15.3, 'FR': 0.3}", b'"by country: {\'UK\': 15.3, \'FR\': 0.3}"'),
    ('{tags}', ['a', 0.3], b'["a",0.3]'),
    ('{event.amount * 6}', 15.3, b'15.3'),
    ('twice {event.amount * 6}', 'twice 15.3', b'"twice 15.3"'),
    ('{event.noisy}', 0.30000000000000004, b'0.30000000000000004'),
    ('{profile.score}', 0.30000000000000004, b'0.30000000000000004'),
    ('raw {event.noisy} {profile.score}', 'raw 0.30000000000000004 0.30000000000000004', b'"raw 0.30000000000000004 0.30000000000000004"'),
    ("{event['noisy']}", 0.3, b'0.3'),
    ('{event.ts}', 1790000000000, b'1790000000000'),
    ('{days_since(profile.signup)}', 20.5925925926, b'20.5925925926'),
    ('{hours_since(event.ts)}', 0.0, b'0.0'),
    ('{lower(event.name)}', 'shoes', b'"shoes"'),
    ('Hi {profile.first_name}!', 'Hi Ann!', b'"Hi Ann!"'),
    ('{profile.first_name} {lower(event.name)} {len(event.name)}', 'Ann shoes 5', b'"Ann shoes 5"'),
    ('{event.amount > 1}', True, b'true'),
    ('flag {event.ok == true}', 'flag true', b'"flag true"'),
    ('{not event.ok}', False, b'false'),
    ("{[event.amount * 3, 0.1 + 0.2, 'x']}", [7.65, 0.3, 'x'], b'[7.65,0.3,"x"]'),
    ('{(0.1 + 0.2,)}', (0.30000000000000004,), b'[0.30000000000000004]'),
    ('{(0.1 + 0.2, [0.1 + 0.2])}', (0.30000000000000004, [0.30000000000000004]), b'[0.30000000000000004,[0.30000000000000004]]'),
    ('{round(event.amount * 3, 2)}', 7.65, b'7.65'),
    ('{round(event.amount * 3)}', 8, b'8'),
    ('{coalesce(event.missing, 0.1 + 0.2)}', 0.3, b'0.3'),
    ('{max(event.amount, 0.1 + 0.2)}', 2.55, b'2.55'),
    ('{abs(-event.noisy)}', 0.3, b'0.3'),
    ('{-event.noisy}', -0.3, b'-0.3'),
    ('{event.amount if event.ok else 0}', 2.55, b'2.55'),
    ("{'a' + event.name}", 'aShoes', b'"aShoes"'),
    ('{now}', 1790000000000, b'1790000000000'),
    ('{1.5}', 1.5, b'1.5'),
    ('{0.30000000000000004}', 0.3, b'0.3'),
    ('{1e999}', inf, b'null'),
    ('x {1e999}', 'x inf', b'"x inf"'),
    ('{event.amount / 3}', 0.85, b'0.85'),
    ('{event.amount // 0.1}', 25.0, b'25.0'),
    ('{event.amount % 1}', 0.55, b'0.55'),
    ('{event.missing}', None, b'null'),
    ('[{event.missing}]', '[]', b'"[]"'),
    ('{null}', None, b'null'),
    ('{true}', True, b'true'),
    ('{1 / 0}', None, b'null'),
    ('a{1 / 0}b', 'ab', b'"ab"'),
    ('{event.ok and lifetime_spend}', 1108.67, b'1108.67'),
    ('{event.ok or lifetime_spend}', True, b'true'),
    ("{'x' if true else 0.1 + 0.2}", 'x', b'"x"'),
    ('{{literal}} {orders}', '{literal} 7', b'"{literal} 7"'),
    ('{orders + 0.1}', 7.1, b'7.1'),
    ('{lifetime_spend - orders}', 1101.67, b'1101.67'),
    ("{spend_by_country['UK']}", 15.3, b'15.3'),
]


@pytest.mark.parametrize(("template", "value", "json"), RENDERED, ids=[t for t, _, _ in RENDERED])
def test_a_rendered_template_is_pinned(template: str, value: Any, json: bytes) -> None:
    got = compile_template(template, ENV).fn(STATE, EVENT, NOW)
    assert (repr(got), msgspec.json.encode(got)) == (repr(value), json)


def test_a_template_read_without_an_event_renders_as_before() -> None:
    """A timer fired without an event: every event.* read is None, so text pieces render ""."""
    assert compile_template("{lifetime_spend} / {event.amount * 6} / {lower(event.name)}", ENV).fn(STATE, None, NOW) \
        == "1108.67 /  / "


@pytest.mark.parametrize(("template", "rounds"), [
    ("{lifetime_spend}", True), ("{event.amount * 6} GBP", True), ("{event['noisy']}", True),
    ("{days_since(profile.signup)}", True), ("{min(tags)}", True), ("{coalesce(event.missing, 0.1)}", True),
    ("{event.amount > 1}", False), ("{lower(event.name)}", False), ("{len(event.name)} items", False),
    ("{round(lifetime_spend)}", False), ("{event.ts} {now}", False), ("{(lifetime_spend,)}", False),
    ("{'a' + lower(event.name)}", False), ("{[orders > 1, 'x']}", False), ("{event.noisy}", False),
])
def test_only_pieces_whose_shape_may_hold_a_float_are_rounded_when_rendered(template: str, rounds: bool) -> None:
    """The decision is taken when the template is compiled: a comparison, text or `len()` is
    rendered without asking `without_float_noise` about its value (a plain `event.x` never is)."""
    assert ("_clean" in compile_template(template, ENV).fn.__code__.co_freevars) is rounds


_TOKENS = st.sampled_from([
    "lifetime_spend", "orders", "spend_by_country", "tags", "now", "event.amount", "event.noisy", "event.ts",
    "event.name", "profile.score", "true", "null", "0", "3", "0.1", "2.5", "'x'", "+", "-", "*", "/", "//", "%",
    "==", "<", "in", "not", "and", "or", "if", "else", "(", ")", "[", "]", ",", "['UK']", "[0]",
    "abs(", "coalesce(", "days_since(", "len(", "lower(", "max(", "min(", "round(", "top(",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, min_size=1, max_size=10).map(" ".join))
def test_a_whole_string_template_is_its_expression_without_float_noise(text: str) -> None:
    """Whatever shape an expression has, `"{expr}"` renders `without_float_noise` of its value
    (or the value as it came in, for `event.x` / `profile.x`): deciding at compile time which
    pieces to round changes no payload."""
    try:
        expr = compile_expr(text, ENV)
        template = compile_template("{" + text + "}", ENV)
    except ExprError:
        return
    for event in (EVENT, None):
        value = expr.fn(STATE, event, NOW)
        got = template.fn(STATE, event, NOW)
        assert repr(got) in (repr(without_float_noise(value)), repr(value)), text
        if repr(got) != repr(without_float_noise(value)):   # kept as it came in: only a plain read
            assert re.fullmatch(r"\s*(event|profile)\.\w+\s*", text), text
