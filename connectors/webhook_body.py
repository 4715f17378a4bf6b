"""Request bodies and URLs in the receiver's own format: JSON templates over a trigger's fields.

A marketing-automation system takes its own request body, not SPEC §4's trigger object. The
webhook sink's `body` setting is that body as JSON text, with placeholders where the trigger's
fields go; `batch_body` wraps a request's items (`"{items}"`) for a receiver that takes a list
(Braze `/users/track`: `{"events": [...]}`); a placeholder in `url` puts a field in the path or
query (Customer.io: `/api/v1/customers/{customer_id}/events`).

Placeholders
------------
`{name}` in any JSON string of the template (keys included), the syntax of the rules' payload
templates (`"{event.sku}"`, split by the same function); `{{` and `}}` are a literal brace. A string that is exactly one
placeholder is replaced by the value with its JSON type (a number stays a number, `payload` an
object, a missing value `null`); inside a longer string the value is text (a string as it is,
anything else as its JSON, a missing value as nothing). In `url` the text is percent-encoded.

Names: the trigger's fields (`trigger_id`, `rule_id`, `customer_id`, `action`, `channel`,
`status`, `reason`, `fired_at`, `cause_event_id`, `payload`, `step`), `payload.KEY` (nested:
`payload.KEY.SUB`), and `fired_at` as epoch numbers: `fired_at_unix` (seconds, Customer.io's
`timestamp`) and `fired_at_ms`. Templates are compiled once at start-up into closures, and a
mistake is an error there naming the setting, the place in the JSON and the character.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import msgspec

from engine.actions.placeholders import PlaceholderError, split_template
from engine.actions.trigger import Trigger

__all__ = ["FIELDS", "ITEMS", "BatchTemplate", "BodyTemplate", "TemplateError", "UrlTemplate", "has_placeholder"]

FIELDS = ("trigger_id", "rule_id", "customer_id", "action", "channel", "status", "reason", "fired_at",
          "fired_at_unix", "fired_at_ms", "cause_event_id", "payload", "step")
"""The names a placeholder may use (and `payload.KEY`)."""

ITEMS = "items"
"""`batch_body`'s one placeholder: the list of a request's rendered items."""

_LONE_BRACE = "a lone '{0}': write '{0}{0}' for a literal brace, or '{{field}}' for a placeholder"
_MISSING = None            # a value the trigger does not have renders as null / nothing

Getter = Callable[[Trigger], Any]
Render = Callable[[Trigger], Any]


class TemplateError(ValueError):
    """A template that cannot be compiled; the message names the setting and the place."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _fired_at_ms(t: Trigger) -> int:
    """`fired_at` (RFC 3339, UTC, as the engine writes it) in epoch milliseconds."""
    return (datetime.fromisoformat(t.fired_at) - _EPOCH) // _MS


def _step(t: Trigger) -> Any:
    return t.step if isinstance(t.step, str) else _MISSING


_GETTERS: dict[str, Getter] = {
    "trigger_id": lambda t: t.trigger_id,
    "rule_id": lambda t: t.rule_id,
    "customer_id": lambda t: t.customer_id,
    "action": lambda t: t.action,
    "channel": lambda t: t.channel,
    "status": lambda t: t.status.value,
    "reason": lambda t: t.reason,
    "fired_at": lambda t: t.fired_at,
    "fired_at_unix": lambda t: _fired_at_ms(t) // 1000,
    "fired_at_ms": _fired_at_ms,
    "cause_event_id": lambda t: t.cause_event_id,
    "payload": lambda t: t.payload,
    "step": _step,
}
assert tuple(_GETTERS) == FIELDS


def _payload_getter(keys: tuple[str, ...]) -> Getter:
    def get(t: Trigger) -> Any:
        value: Any = t.payload
        for key in keys:
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(key, _MISSING)
        return value
    return get


_encode = msgspec.json.Encoder().encode


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return _encode(value).decode()


class _Where:
    """Where in a template a string is, for error messages: the setting and a JSON path."""

    def __init__(self, setting: str, path: str) -> None:
        self.setting, self.path = setting, path

    def error(self, text: str, at: int | None = None) -> TemplateError:
        place = f" at ${self.path}" if self.path else ""
        char = f", character {at + 1}" if at is not None else ""
        return TemplateError(f"{self.setting}{place}{char}: {text}")


def _getter(name: str, where: _Where, at: int, allowed: Sequence[str]) -> Getter:
    head, _, rest = name.partition(".")
    if not allowed:   # batch_body: one request, many triggers
        if name == ITEMS:
            raise where.error("'{items}' must be a whole JSON string, \"{items}\", where the list goes", at)
        what = "a trigger's field" if name in _GETTERS or head == "payload" else "not a placeholder here"
        raise where.error(f"'{{{name}}}' is {what}: batch_body takes only \"{{items}}\" (a batch has many "
                          "triggers; put their fields in body)", at)
    if name in allowed and name in _GETTERS:
        return _GETTERS[name]
    if head == "payload" and rest:
        keys = tuple(rest.split("."))
        if any(not k for k in keys):
            raise where.error(f"'{{{name}}}' has an empty key", at)
        return _payload_getter(keys)
    if name == ITEMS:
        raise where.error("'{items}' belongs in batch_body (the list of a request's items), not here", at)
    close = difflib.get_close_matches(name, [*allowed, "payload.KEY"], 1, 0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise where.error(f"unknown field '{{{name}}}'{hint}; a placeholder is one of {', '.join(allowed)}, "
                      "payload.KEY ('{{' and '}}' are literal braces)", at)


def _parts(text: str, where: _Where, allowed: Sequence[str]) -> list[str | tuple[str, Getter]]:
    """The string as literal text and (name, getter) placeholders, in order: split as the rules'
    payload templates are (`engine.actions.placeholders`), each name checked as it comes."""
    parts: list[str | tuple[str, Getter]] = []
    try:
        for piece in split_template(text):
            if isinstance(piece, str):
                parts.append(piece)
                continue
            offset, inner = piece
            at, name = offset - 1, inner.strip()
            if "{" in name or "}" in name:   # a field name holds no brace: the outer one is alone
                raise where.error(_LONE_BRACE.format("{"), at)
            if any(c in name for c in "!:[]"):
                raise where.error(f"'{{{inner}}}': a placeholder is a field name only (no conversion, format "
                                  "or index)", at)
            parts.append((name, _getter(name, where, at, allowed)))
    except PlaceholderError as e:
        brace = text[e.col]
        if brace == "{" and e.message.startswith("empty"):
            raise where.error("an empty placeholder '{}'", e.col) from None
        raise where.error(_LONE_BRACE.format(brace), e.col) from None
    return parts


def _string(text: str, where: _Where, allowed: Sequence[str]) -> Render | str:
    """A template string: a constant (str), the whole value of one field, or text."""
    parts = _parts(text, where, allowed)
    if not parts:
        return ""
    if len(parts) == 1 and isinstance(parts[0], str):
        return parts[0]
    if len(parts) == 1 and isinstance(parts[0], tuple):
        return parts[0][1]
    pieces = [p if isinstance(p, str) else p[1] for p in parts]

    def render(t: Trigger) -> str:
        return "".join(p if isinstance(p, str) else _text(p(t)) for p in pieces)
    return render


def _compile(value: Any, where: _Where, allowed: Sequence[str]) -> Render | Any:
    """A JSON value of the template -> a constant or a function of the trigger."""
    if isinstance(value, str):
        return _string(value, where, allowed)
    if isinstance(value, list):
        items = [_compile(v, _Where(where.setting, f"{where.path}[{i}]"), allowed)
                 for i, v in enumerate(value)]
        if not any(callable(i) for i in items):
            return items
        return lambda t: [i(t) if callable(i) else i for i in items]
    if isinstance(value, dict):
        pairs = []
        for key, v in value.items():
            here = _Where(where.setting, f"{where.path}.{key}")
            k = _string(key, _Where(where.setting, here.path + " (the key)"), allowed)
            pairs.append((k, _compile(v, here, allowed)))
        if not any(callable(k) or callable(v) for k, v in pairs):
            return {k: v for k, v in pairs}
        return lambda t: {(k(t) if callable(k) else k): (v(t) if callable(v) else v) for k, v in pairs}
    return value


def _parse(text: str, setting: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TemplateError(f"{setting} is not JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None


class BodyTemplate:
    """`body` compiled: `render(trigger)` gives the receiver's body for one trigger as builtins."""

    def __init__(self, text: str, setting: str = "body") -> None:
        self.text = text
        compiled = _compile(_parse(text, setting), _Where(setting, ""), FIELDS)
        self.render: Render = compiled if callable(compiled) else (lambda t: compiled)


class BatchTemplate:
    """`batch_body` compiled: `wrap(items)` puts a request's rendered items where `"{items}"` is.

    Exactly one string of the template is exactly `"{items}"`; nothing else is a placeholder (a
    batch has many triggers, so no one trigger's field belongs in it)."""

    def __init__(self, text: str, setting: str = "batch_body") -> None:
        self.text = text
        found: list[str] = []

        def walk(value: Any, path: str) -> Any:
            if isinstance(value, str):
                if value == "{" + ITEMS + "}":
                    found.append(f"${path}")
                    return _ItemsSlot
                return _string(value, _Where(setting, path), ())   # raises on any placeholder
            if isinstance(value, list):
                return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
            if isinstance(value, dict):
                out = {}
                for k, v in value.items():
                    here = f"{path}.{k}"
                    if "{" + ITEMS + "}" in k:
                        raise _Where(setting, here).error("'{items}' cannot be a key")
                    key = _string(k, _Where(setting, here + " (the key)"), ())
                    out[key] = walk(v, here)
                return out
            return value

        self._shape = walk(_parse(text, setting), "")
        if len(found) != 1:
            where = f" (found at {', '.join(found)})" if found else ""
            raise TemplateError(f"{setting} must hold \"{{items}}\" exactly once, where the list of a request's "
                                f"items goes, e.g. {{\"events\": \"{{items}}\"}}{where}")

    def wrap(self, items: list[Any]) -> Any:
        def fill(value: Any) -> Any:
            if value is _ItemsSlot:
                return items
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            return value
        return fill(self._shape)


class _ItemsSlot:
    """Where `"{items}"` stood in a `batch_body`."""


class UrlTemplate:
    """A `url` with placeholders in its path or query: `path(trigger)` gives the request target,
    each value percent-encoded (a `/` in a customer id cannot change the path)."""

    def __init__(self, path: str, setting: str = "url") -> None:
        parts = _parts(path, _Where(setting, ""), FIELDS)
        self.names = [p[0] for p in parts if isinstance(p, tuple)]
        self._pieces = [p if isinstance(p, str) else p[1] for p in parts]

    def path(self, trigger: Trigger) -> str:
        return "".join(p if isinstance(p, str) else quote(_text(p(trigger)), safe="") for p in self._pieces)


def has_placeholder(text: str) -> bool:
    """Whether a string holds a placeholder (not only escaped braces)."""
    try:
        return any(isinstance(piece, tuple) for piece in split_template(text))
    except PlaceholderError:   # a lone brace: meant as one
        return True
