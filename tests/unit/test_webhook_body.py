"""Webhook body templates (connectors.webhook_body): what a placeholder renders to, and the errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.webhook_body import (
    FIELDS,
    BatchTemplate,
    BodyTemplate,
    TemplateError,
    UrlTemplate,
    _getter,
    _parts,
    _Where,
    has_placeholder,
)
from engine.actions.trigger import SENT, SUPPRESSED, Trigger
from engine.operators.settings import SettingsError, load_settings

TRIGGER = Trigger(
    trigger_id="9f2c", rule_id="cart-abandoned", customer_id="c-1029", action="cart-reminder", channel="email",
    status=SENT, reason=None, fired_at="2026-11-20T14:33:11.250Z", cause_event_id="e-81723",
    payload={"sku": "A-77", "value": 129.8, "items": 2, "gift": False, "cart": {"skus": ["A-77"], "n": 1}},
)


def render(template: str, trigger: Trigger = TRIGGER) -> object:
    return BodyTemplate(template).render(trigger)


def test_a_whole_string_placeholder_keeps_the_json_type() -> None:
    assert render('{"v": "{payload.value}", "n": "{payload.items}", "g": "{payload.gift}", "p": "{payload}", '
                  '"cart": "{payload.cart}", "deep": "{payload.cart.n}", "ts": "{fired_at_unix}", '
                  '"ms": "{fired_at_ms}", "status": "{status}"}') == {
        "v": 129.8, "n": 2, "g": False, "p": TRIGGER.payload, "cart": {"skus": ["A-77"], "n": 1}, "deep": 1,
        "ts": 1795185191, "ms": 1795185191250, "status": "sent"}


def test_inside_a_longer_string_a_value_is_text() -> None:
    assert render('{"t": "{action} for {customer_id}: {payload.value} x{payload.items} {payload.gift} '
                  '{payload.cart}"}') == {"t": 'cart-reminder for c-1029: 129.8 x2 false {"skus":["A-77"],"n":1}'}


def test_literal_braces_constants_keys_and_arrays() -> None:
    assert render('{"{{literal}}": "{{ {customer_id} }}", "{rule_id}": [1, null, true, "{channel}"], "k": {"x": 1}}') \
        == {"{literal}": "{ c-1029 }", "cart-abandoned": [1, None, True, "email"], "k": {"x": 1}}
    assert render('"{customer_id}"') == "c-1029"   # a body may be a bare value


def test_a_missing_value_is_null_alone_and_nothing_in_text() -> None:
    suppressed = Trigger("t", "r", "c", "a", "push", SUPPRESSED, "no_consent", "2026-11-20T14:33:11Z", "e")
    body = '{"step": "{step}", "reason": "{reason}", "sku": "{payload.sku}", "t": "[{step}|{payload.no.such}]"}'
    assert render(body) == {"step": None, "reason": None, "sku": "A-77", "t": "[|]"}
    assert render(body, suppressed) == {"step": None, "reason": "no_consent", "sku": None, "t": "[|]"}
    journey = Trigger("t", "r", "c", "a", "email", SENT, None, "2026-11-20T14:33:11Z", "e", step="hello")
    assert render('{"step": "{step}"}', journey) == {"step": "hello"}


def test_a_batch_template_wraps_the_items_where_items_stands() -> None:
    wrap = BatchTemplate('{"events": "{items}", "meta": {"v": 1, "b": "{{x}}"}}').wrap
    assert wrap([{"a": 1}, {"a": 2}]) == {"events": [{"a": 1}, {"a": 2}], "meta": {"v": 1, "b": "{x}"}}
    assert BatchTemplate('["{items}"]').wrap([1]) == [[1]]


def test_a_url_template_percent_encodes_each_value() -> None:
    odd = Trigger("t", "r", "a/b?c d&é", "a", "email", SENT, None, "2026-11-20T14:33:11Z", "e")
    url = UrlTemplate("/api/v1/customers/{customer_id}/events?rule={rule_id}")
    assert url.path(odd) == "/api/v1/customers/a%2Fb%3Fc%20d%26%C3%A9/events?rule=r"
    assert url.names == ["customer_id", "rule_id"]


@pytest.mark.parametrize(("template", "message"), [
    ('{"events": [{"name": "{custmer_id}"}]}',
     "body at $.events[0].name, character 1: unknown field '{custmer_id}' (did you mean 'customer_id'?)"),
    ('{"name": "x {action"}', "body at $.name, character 3: a lone '{': write '{{' for a literal brace"),
    ('{"name": "}"}', "body at $.name, character 1: a lone '}'"),
    ('{"name": "{}"}', "body at $.name, character 1: an empty placeholder"),
    ('{"t": "{fired_at:%Y}"}', "a placeholder is a field name only"),
    ('{"t": "{payload..sku}"}', "'{payload..sku}' has an empty key"),
    ('{"e": "{items}"}', "'{items}' belongs in batch_body"),
    ('{"{nope}": 1}', "body at $.{nope} (the key), character 1: unknown field '{nope}'"),
    ('{"name": "a",\n "time": }', "body is not JSON: Expecting value at line 2, column 10"),
])
def test_body_errors_name_the_setting_the_place_and_the_character(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        BodyTemplate(template)
    assert message in str(info.value)


@pytest.mark.parametrize(("template", "message"), [
    ('{"events": "{customer_id}"}', "batch_body at $.events, character 1: '{customer_id}' is a trigger's field"),
    ('{"events": "all: {items}"}', "batch_body at $.events, character 6: '{items}' must be a whole JSON string"),
    ('{"events": "{items}", "again": "{items}"}', 'exactly once, where the list of a request\'s items goes, e.g. '
                                                  '{"events": "{items}"} (found at $.events, $.again)'),
    ('{"events": []}', 'batch_body must hold "{items}" exactly once'),
    ('{"{items}": []}', "batch_body at $.{items}: '{items}' cannot be a key"),
])
def test_batch_body_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        BatchTemplate(template)
    assert message in str(info.value)


def test_a_bad_template_stops_the_settings_at_start_up_naming_sink_setting_and_place(tmp_path: Path) -> None:
    path = tmp_path / "triggers.toml"
    path.write_text("[sinks.webhook]\nurl = \"https://rest.iad-01.braze.com/users/track\"\n"
                    "body = \'\'\'{\"events\": [{\"external_id\": \"{customer_id}\", \"time\": \"{fired}\"}]}\'\'\'\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    text = str(info.value)
    assert "body at $.events[0].time, character 1: unknown field '{fired}'" in text and "$.sinks.webhook" in text
    env = {"TRIGGERS_SINKS__WEBHOOK__URL": "http://h/x", "TRIGGERS_SINKS__WEBHOOK__BODY": '{"name": "{action}"}'}
    assert load_settings(None, env=env).sinks.webhook.body == '{"name": "{action}"}'   # a variable works too


def test_escaped_braces_around_and_between_placeholders() -> None:
    """`{{`/`}}` are read before a placeholder's brace, as in the rules' payload templates."""
    assert render('{"a": "{{{customer_id}}}", "b": "}}{{", "c": "{{}}", "d": "{{{{x}}}}", "e": "{{ {channel}}}"}') \
        == {"a": "{c-1029}", "b": "}{", "c": "{}", "d": "{{x}}", "e": "{ email}"}
    for lone in ('{"a": "{{{customer_id}}"}', '{"a": "{{customer_id}"}', '{"a": "x}}}"}'):
        with pytest.raises(TemplateError, match="a lone '}'"):
            BodyTemplate(lone)


_OLD_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _old_parts(text: str) -> list:
    """The hand-written splitter webhook_body had before it used the rules' `split_template`."""
    where = _Where("url", "")
    parts: list = []
    pos, literal = 0, ""
    for m in _OLD_TOKEN.finditer(text):
        literal += text[pos:m.start()]
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            literal += token[0]
        elif token in ("{", "}"):
            raise where.error(f"a lone '{token}': write '{token * 2}' for a literal brace, or "
                              "'{field}' for a placeholder", m.start())
        else:
            name = (m.group(1) or "").strip()
            if not name:
                raise where.error("an empty placeholder '{}'", m.start())
            if any(c in name for c in "!:[]"):
                raise where.error(f"'{token}': a placeholder is a field name only (no conversion, format "
                                  "or index)", m.start())
            if literal:
                parts.append(literal)
                literal = ""
            parts.append((name, _getter(name, where, m.start(), FIELDS)))
    literal += text[pos:]
    return [*parts, literal] if literal else parts


def _outcome(split) -> object:
    try:
        return [p if isinstance(p, str) else p[0] for p in split()]
    except TemplateError as e:
        return str(e)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["{", "}", "{{", "}}", "customer_id", "payload.sku", " ", "x", "nope", ":", "[0]",
                                 "items", "."]), max_size=12).map("".join))
def test_placeholders_are_split_as_the_hand_written_splitter_did(text: str) -> None:
    """Without quotes (a field name holds none) the shared splitter gives what the old one gave:
    the same pieces, or the same error at the same character."""
    assert _outcome(lambda: _parts(text, _Where("url", ""), FIELDS)) == _outcome(lambda: _old_parts(text))
    assert has_placeholder(text) == any(m.group(1) is not None or m.group(0) in "{}" for m in _OLD_TOKEN.finditer(text))


def test_a_quote_in_a_placeholder_is_still_an_error() -> None:
    """Where the splitters differ: the shared one skips quoted strings inside `{...}` (payload
    expressions hold them); a field name holds no quote, so both refuse these, if not alike."""
    for text in ('{"}"}', "{'}", '{"a"}', "{customer_id'}"):
        with pytest.raises(TemplateError):
            UrlTemplate(text)
