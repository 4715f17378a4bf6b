"""The `if:` expression language (SPEC §3): what it accepts, what it computes, what it refuses."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events.model import Event
from engine.rules.expr import FUNCTIONS, CompiledExpr, Env, ExprError, compile_expr, compile_template
from engine.state.customer import CustomerState

DAY = 86_400_000
NOW = 1_790_000_000_000  # 2026-09-21, epoch ms


def _agg(name: str, default: Any = None):
    return lambda state, now: state.aggs.get(name, default)


ENV = Env(
    aggregates={
        "lifetime_spend": _agg("lifetime_spend", 0),
        "purchases": _agg("purchases", 0),
        "views_7d": _agg("views_7d", 0),
        "last_active": _agg("last_active"),
        "interest": _agg("interest", {}),
        "tags": _agg("tags"),
    }
)


def state(**aggs: Any) -> CustomerState:
    return CustomerState(aggs=aggs, profile={"first_name": "Ann", "tier": "Gold", "birthday": "1990-05-17"})


def event(**props: Any) -> Event:
    return Event(event_id="e-1", type="add_to_cart", customer_id="c-1", ts=NOW - 1000, properties=props)


def run(text: str, st_: CustomerState | None = None, ev: Event | None = None, now: int = NOW) -> Any:
    return compile_expr(text, ENV).fn(st_ if st_ is not None else state(), ev, now)


def error(text: str) -> ExprError:
    with pytest.raises(ExprError) as info:
        compile_expr(text, ENV)
    return info.value


# --- SPEC §3 examples ---------------------------------------------------------------------------


def test_spec_threshold_expressions():
    assert run("lifetime_spend >= 5000", state(lifetime_spend=5000)) is True
    assert run("lifetime_spend >= 5000", state(lifetime_spend=4999.5)) is False
    assert run("purchases == 10", state(purchases=10)) is True
    assert run("purchases == 10", state(purchases=9)) is False


def test_days_since_last_active():
    assert run("days_since(last_active) > 30", state(last_active=NOW - 31 * DAY)) is True
    assert run("days_since(last_active) > 30", state(last_active=NOW - 29 * DAY)) is False
    assert run("days_since(last_active)", state(last_active=NOW - 36 * 3_600_000)) == 1.5
    assert run("days_since(last_active)", state()) is None
    assert run("days_since(last_active) > 30", state()) is None  # None > 30: not true, no exception


def test_top_interest():
    assert run('top(interest) == "shoes"', state(interest={"shoes": 4.2, "bags": 1.0})) is True
    assert run("top(interest)", state(interest={"shoes": 2.0, "bags": 2.0, "hats": 1.0})) == "bags"  # tie -> smallest key
    assert run("top(interest)", state(interest={})) is None
    assert run("top(interest)", state(interest=None)) is None


def test_event_property_in_list():
    assert run('event.category in ["shoes", "bags"]', ev=event(category="bags")) is True
    assert run('event.category in ["shoes", "bags"]', ev=event(category="hats")) is False
    assert run('event.category not in ("shoes", "bags")', ev=event(category="hats")) is True
    assert run('event.category in ["shoes", "bags"]', ev=event()) is False


# --- the language -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 3", 1),
        ("-3 + +1", -2),
        ("2.5 * 2", 5.0),
        ("'ab' + 'cd'", "abcd"),
        ("1 < 2 < 3", True),
        ("1 < 3 < 2", False),
        ("1 <= 1 >= 0 != 5", True),
        ("true and not false", True),
        ("null == None", True),
        ("True or False", True),
        ("0 or 'x'", "x"),
        ("1 and 0", 0),
        ("'a' if 1 > 2 else 'b'", "b"),
        ("[1, 2] == [1, 2]", True),
        ("(1,) == (1,)", True),
        ("() == ()", True),
        ("3 in [1, 2, 3]", True),
        ("'sh' in 'shoes'", True),
        ("len([1, 2, 3])", 3),
        ("abs(-4)", 4),
        ("min(3, 1, 2)", 1),
        ("max([3, 1, 2])", 3),
        ("round(2.567, 1)", 2.6),
        ("round(1234, -2)", 1200),
        ("round(2.5)", 2),
        ("lower('ShOeS')", "shoes"),
        ("lower(null)", None),
        ("coalesce(null, null, 3, 4)", 3),
        ("coalesce(null)", None),
        ("1_000 + 0x10", 1016),
        ("1e999 > 10", True),
        ("now", NOW),
        ("now - 1000", NOW - 1000),
        ("""(1 +
             2)""", 3),
        ("   1 + 1   ", 2),
    ],
)
def test_constructs(text: str, expected: Any):
    result = run(text)
    assert result == expected and type(result) is type(expected)


def test_event_builtin_fields_and_properties():
    ev = event(sku="A-1", cart_value=129.8)
    assert run("event.type", ev=ev) == "add_to_cart"
    assert run("event.ts", ev=ev) == NOW - 1000
    assert run("event.customer_id", ev=ev) == "c-1"
    assert run("event.event_id", ev=ev) == "e-1"
    assert run("event.sku", ev=ev) == "A-1"
    assert run("event.cart_value > 100", ev=ev) is True
    assert run('event["first-name"]', ev=event(**{"first-name": "Bo"})) == "Bo"
    assert run('event["type"]', ev=event(type="prop")) == "prop"  # the property shadowed by the field


def test_profile_attributes():
    assert run("profile.first_name") == "Ann"
    assert run('lower(profile.tier) == "gold"') is True
    assert run("profile.missing") is None
    assert run('profile["first_name"]') == "Ann"


def test_subscript_is_a_safe_get():
    s = state(interest={"shoes": 3.0}, tags=["a", "b"])
    assert run('interest["shoes"]', s) == 3.0
    assert run('interest["hats"]', s) is None
    assert run('interest["hats"] > 1', s) is None
    assert run('coalesce(interest["hats"], 0) < 1', s) is True
    assert run("tags[0]", s) == "a"
    assert run("tags[-1]", s) == "b"
    assert run("tags[5]", s) is None
    assert run("tags[0]", state()) is None
    assert run('event.meta["src"]', ev=event(meta={"src": "ads"})) == "ads"
    assert run('event.meta["src"]', ev=event(meta="flat")) is None
    assert run("'abc'[1]") == "b"


def test_time_functions_accept_epoch_ms_and_strings():
    assert run("hours_since(now - 7200000)") == 2.0
    assert run("minutes_since(now - 90000)") == 1.5
    day = int(datetime(2026, 9, 1, tzinfo=UTC).timestamp() * 1000)
    assert run('days_since("2026-09-01")', now=day + 3 * DAY) == 3.0
    assert run('days_since("2026-09-01T12:00:00Z")', now=day + 3 * DAY) == 2.5
    assert run('days_since("2026-09-01T14:00:00+02:00")', now=day + DAY) == 0.5
    assert run("days_since(profile.birthday) > 365") is True
    assert run('days_since("not a date")') is None
    assert run('days_since("2026-09-01T12:00:00")') is None  # RFC 3339 needs a zone
    assert run("days_since(true)") is None
    assert run("days_since(now + 86400000)") == -1.0  # the future is negative


def test_aggregate_readers_receive_state_and_now():
    seen: list[tuple[CustomerState, int]] = []

    def reader(state_: CustomerState, now: int) -> int:
        seen.append((state_, now))
        return 42

    s = state()
    assert compile_expr("views_7d + 0", Env({"views_7d": reader})).fn(s, None, 123) == 42
    assert seen == [(s, 123)]


def test_read_sets():
    c = compile_expr(
        'lifetime_spend > 1 and event.sku != event.type and profile.tier == "gold" and top(interest) == event["x-y"]',
        ENV,
    )
    assert isinstance(c, CompiledExpr)
    assert c.aggregates == {"lifetime_spend", "interest"}
    assert c.event_props == {"sku", "x-y"}  # built-in fields are not properties
    assert c.profile_attrs == {"tier"}
    assert c.source.startswith("lifetime_spend > 1")


# --- None and bad data never crash --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "event.amount > 10",
        "event.amount + 1",
        "-event.amount",
        "event.amount / 0",
        "1 % 0",
        "len(event.amount)",
        "min([])",
        "max(event.a, 1)",
        "lower(5)",
        "top(5)",
        "round(event.a)",
        "abs(profile.first_name)",
        "event.name * 3",
        "'x' * 1000000000000",
        "'%999999999d' % 1",
        "[1] * 10",
        "1 in 5",
        "10 ** 1 if false else 2 / 0",
    ],
)
def test_bad_data_yields_none(text: str):
    try:
        compiled = compile_expr(text, ENV)
    except ExprError:
        return  # some of these are rejected statically, which is also fine
    assert compiled.fn(state(), event(name="x"), NOW) is None
    assert compiled.fn(state(), None, NOW) is None


def test_missing_property_compares_false_not_raise():
    assert not run('event.coupon == "X"', ev=event())
    assert run("event.coupon == null", ev=event()) is True
    assert run("event.coupon != null", ev=event(coupon="C")) is True


def test_event_none_reads_none():
    for field in ("type", "ts", "customer_id", "event_id", "sku"):
        assert run(f"event.{field}") is None
    assert run("coalesce(event.sku, 'none')") == "none"
    assert run('event["x"] == null') is True
    assert run("event.type == 'purchase' or lifetime_spend >= 0") is True


def test_reader_errors_become_none():
    def broken(state_: CustomerState, now: int) -> Any:
        return state_.aggs["nope"]

    assert compile_expr("x > 1", Env({"x": broken})).fn(state(), None, NOW) is None


# --- errors: messages and columns ---------------------------------------------------------------


def test_unknown_aggregate_suggests():
    e = error("lifetime_spnd >= 5000")
    assert e.message == "unknown aggregate 'lifetime_spnd' (did you mean 'lifetime_spend'?)"
    assert e.col == 0
    e = error("purchases > 1 and evnt.sku == 1")
    assert "did you mean 'event'" in e.message and e.col == 18
    assert error("purchases > 1 and xyzzy").message == "unknown aggregate 'xyzzy'"


@pytest.mark.parametrize(
    "text, col, fragment",
    [
        ("a && b", 2, "'and'"),
        ("purchases > 1 || purchases < 0", 14, "'or'"),
        ("!purchases", 0, "'not'"),
        ("purchases = 10", 10, "'=='"),
        ("event..sku == 'x'", 0, "event.sku"),
        ("event[sku]", 0, "write event.<property>, e.g. event.sku"),
        ("profile[name]", 0, "write profile.<attribute>, e.g. profile.name"),
        ("event.a.b", 8, "write event.a"),
        ("purchases & 1", 0, "'and'"),
        ("purchases | 1", 0, "'or'"),
        ("~purchases", 0, "'not'"),
        ("2 ** 8", 0, "'**'"),
        ("event.x is None", 0, "=="),
        ("dayz_since(last_active)", 0, "did you mean 'days_since'"),
        ("purchases > 1 and foo(1)", 18, "the functions are: abs, coalesce"),
        ("len", 0, "is a function"),
        ("event", 0, "event.<name>"),
        ("interest.shoes", 9, 'interest["shoes"]'),
        ("interest[event.category]", 9, "constant"),
        ("round(1.5, purchases)", 11, "constant integer"),
        ("round(1.5, 99)", 11, "constant integer"),
        ("len(1, 2)", 0, "takes 1 argument"),
        ("min()", 0, "at least 1"),
        ("lower(s='x')", 8, "keyword"),
        ("purchases >", 11, "syntax error"),
        ("(purchases", 0, "never closed"),
        ("purchases 1", 10, "syntax error"),
        ("  'é' + é1", 8, "unknown aggregate 'é1'"),
        ("b'x'", 0, "bytes"),
        ("1j", 0, "complex"),
        ("...", 0, "not allowed"),
        ("{'a': 1}", 0, "dict"),
        ("interest[1:2]", 9, "slices"),
        ("", 0, "empty"),
        ("   ", 0, "empty"),
        ("1\x00", 1, "NUL"),
        ("-" * 200 + "1", 61, "nested too deeply"),
        ("(" * 300 + "1" + ")" * 300, None, ""),
    ],
)
def test_errors_point_at_the_column(text: str, col: int | None, fragment: str):
    e = error(text)
    assert fragment in e.message
    if col is not None:
        assert e.col == col, e.message
    assert 0 <= e.col <= len(text)


INJECTIONS = [
    "__import__('os')",
    "__import__('os').system('id')",
    "().__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "''.__class__",
    "event.__class__",
    "event.__init__.__globals__",
    "profile.__dict__",
    "profile.__class__",
    "event._Event__x.y",
    "open('x')",
    "eval('1')",
    "exec('1')",
    "compile('1', 'f', 'eval')",
    "getattr(event, 'x')",
    "globals()",
    "locals()",
    "vars()",
    "type(1)",
    "breakpoint()",
    "(lambda: 1)()",
    "lambda: 1",
    "[x for x in y]",
    "{x for x in y}",
    "{x: 1 for x in y}",
    "(x for x in y)",
    "(a := 1)",
    "a := 1",
    'f"{1}"',
    'f"{event.__class__}"',
    "*a",
    "[*a]",
    "len(*a)",
    "max(**a)",
    "event.properties",
    "event.properties.get('x')",
    "event.sku.upper()",
    "'x'.join(['a'])",
    "lower.__call__('x')",
    "len.__self__",
    "now.__class__",
    "import os",
    "__builtins__",
    "__name__",
    "_a_lifetime_spend",
    "_item",
    "st",
    "ev",
    "x = 1",
    "del x",
    "(yield 1)",
    "await x",
    "lower(s='x')",
    "[1][0:1]",
    "{1, 2}",
    "1 if 2",
    "event.x; import os",
    "event.x\nimport os",
    "1 @ 2",
    "1 << 2",
    "1 ^ 2",
    "event.a.b",
    "event..sku",
    "event[sku]",
    "event['a']['b'].__class__",
    "interest.__class__",
    "top.__globals__",
    "(1).real",
    "[].append(1)",
    "min.__self__.open('x')",
    "\\u005f\\u005fimport\\u005f\\u005f('os')",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_attempts_are_rejected(text: str):
    with pytest.raises(ExprError) as info:
        compile_expr(text, ENV)
    assert 0 <= info.value.col <= len(text)
    assert info.value.message


def test_compiled_function_has_no_builtins():
    fn = compile_expr("lifetime_spend >= 5000", ENV).fn
    assert fn.__globals__["__builtins__"] == {}
    assert set(fn.__globals__) == {"__builtins__", "_factory"}


def test_env_rejects_names_that_shadow_the_language():
    for bad in ("now", "event", "len", "true", "null", "class", "a-b"):
        with pytest.raises(ValueError):
            Env({bad: _agg(bad)})


def test_aggregate_names_may_start_with_underscore():
    env = Env({"_internal": lambda state_, now: 3})  # the loader allows them; they are only ever looked up in env
    assert compile_expr("_internal + 1", env).fn(state(), None, NOW) == 4
    with pytest.raises(ExprError):
        compile_expr("_other", env)


def test_every_function_is_documented_and_callable():
    assert set(FUNCTIONS) == {
        "days_since", "hours_since", "minutes_since", "top", "len", "abs", "min", "max", "round", "lower", "coalesce",
    }


# --- templates ----------------------------------------------------------------------------------


def tmpl(value: Any, ev: Event | None = None, st_: CustomerState | None = None) -> Any:
    return compile_template(value, ENV).fn(st_ if st_ is not None else state(), ev, NOW)


def test_template_single_expression_keeps_its_type():
    ev = event(sku="A-1", cart_value=129.8, qty=2)
    assert tmpl("{event.cart_value}", ev) == 129.8
    assert tmpl("{event.qty}", ev) == 2
    assert tmpl("{event.sku}", ev) == "A-1"
    assert tmpl("{lifetime_spend}", st_=state(lifetime_spend=7000)) == 7000
    assert tmpl("{event.missing}", ev) is None
    assert tmpl("{event.sku}", None) is None
    assert tmpl("{ event.qty * 2 }", ev) == 4


def test_template_mixed_text_interpolates():
    ev = event(sku="A-1", cart_value=129.8, flag=True)
    assert tmpl("Hi {profile.first_name}", ev) == "Hi Ann"
    assert tmpl("{event.sku}/{event.cart_value}", ev) == "A-1/129.8"
    assert tmpl("Hi {profile.nickname}!", ev) == "Hi !"  # None -> ""
    assert tmpl("x={event.flag}", ev) == "x=true"
    assert tmpl("{event.sku} {1 / 0}", ev) == "A-1 "  # a failing piece renders as ""
    assert tmpl("{event.sku}-{event.sku}", None) == "-"
    assert tmpl('{coalesce(event.missing, "}")}', ev) == "}"


def test_template_escapes_and_constants():
    assert tmpl("{{literal}}") == "{literal}"
    assert tmpl("a {{ {event.sku} }}", event(sku="S")) == "a { S }"
    assert tmpl("plain text") == "plain text"
    assert tmpl("") == ""
    assert tmpl(42) == 42
    assert tmpl(None) is None
    assert tmpl(True) is True
    payload = {"a": [1, 2]}
    assert tmpl(payload) is payload


def test_template_read_sets():
    c = compile_template("Hi {profile.first_name}, {event.sku} {lifetime_spend}", ENV)
    assert c.event_props == {"sku"}
    assert c.profile_attrs == {"first_name"}
    assert c.aggregates == {"lifetime_spend"}
    assert c.source == "Hi {profile.first_name}, {event.sku} {lifetime_spend}"
    assert compile_template(5, ENV).event_props == frozenset()


@pytest.mark.parametrize(
    "text, col, fragment",
    [
        ("Hi {profile.first_name", 3, "never closed"),
        ("Hi }", 3, "'}}'"),
        ("Hi {}", 3, "empty"),
        ("Hi {lifetime_spnd}", 4, "did you mean 'lifetime_spend'"),
        ("ab {event.x} {  event..sku}", 16, "event.sku"),
        ("ab {event.x} {1 +}", 17, "syntax error"),
        ("ab {__import__('os')}", 4, "unknown function"),
        ("{event.a.b}", 9, "write event.a"),
    ],
)
def test_template_errors_point_at_the_column(text: str, col: int, fragment: str):
    with pytest.raises(ExprError) as info:
        compile_template(text, ENV)
    assert fragment in info.value.message
    assert info.value.col == col


# --- properties ---------------------------------------------------------------------------------

_TOKENS = st.sampled_from(
    [
        "lifetime_spend", "purchases", "interest", "last_active", "tags", "now", "event", "profile",
        "event.sku", "event.cart_value", "event.type", "event.ts", "profile.first_name", "profile.birthday",
        "true", "false", "null", "None", "0", "1", "-1", "2.5", "1e999", "5000", "'shoes'", '"2026-01-01"', "''",
        "+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "not", "and", "or",
        "is", "if", "else", "(", ")", "[", "]", ",", ".", ":", "=", "{", "}", "!", "&&", "||", "lambda", "_",
        '["shoes"]', "[0]", "[-1]",
        *[f + "(" for f in FUNCTIONS], "open(", "__class__", "__import__", "x",
    ]
)


@st.composite
def token_expressions(draw: st.DrawFn) -> str:
    return " ".join(draw(st.lists(_TOKENS, min_size=1, max_size=14)))


def _never_raises(compiled: CompiledExpr) -> None:
    fat = CustomerState(
        aggs={"lifetime_spend": 6000, "purchases": 10, "interest": {"shoes": 2.0}, "last_active": 1, "tags": ["a"]},
        profile={"first_name": "Ann", "birthday": "1990-05-17"},
    )
    ev = event(sku="A-1", cart_value=129.8)
    for s, e in ((CustomerState(), None), (fat, ev), (CustomerState(), ev)):
        compiled.fn(s, e, NOW)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=40), token_expressions()))
def test_any_text_compiles_or_raises_expr_error(text: str):
    try:
        compiled = compile_expr(text, ENV)
    except ExprError as e:
        assert isinstance(e.message, str) and e.message
        assert 0 <= e.col <= len(text)
        return
    _never_raises(compiled)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), token_expressions().map(lambda t: "x {" + t + "} y")))
def test_any_template_compiles_or_raises_expr_error(text: str):
    try:
        compiled = compile_template(text, ENV)
    except ExprError as e:
        assert 0 <= e.col <= len(text)
        return
    _never_raises(compiled)


@settings(max_examples=200, deadline=None)
@given(
    a=st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.booleans()),
    b=st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.lists(st.integers())),
)
def test_any_property_values_never_crash(a: Any, b: Any):
    texts = [
        "event.a > event.b", "event.a + event.b", "event.a * event.b", "event.a % event.b", "event.a / event.b",
        "event.a // event.b", "event.a in event.b", "days_since(event.a)", "top(event.b)", "lower(event.a)",
        "min(event.a, event.b)", "round(event.a, 2)", "abs(event.a)", "len(event.b)", "event.b[0]", "-event.a",
    ]
    ev = event(a=a, b=b)
    for text in texts:
        compile_expr(text, ENV).fn(state(), ev, NOW)
    assert compile_template("{event.a}{event.b}", ENV).fn(state(), ev, NOW) is not None


def test_nan_and_inf_are_plain_data():
    assert run("event.x > 1", ev=event(x=math.inf)) is True
    assert run("event.x == event.x", ev=event(x=math.nan)) is False
