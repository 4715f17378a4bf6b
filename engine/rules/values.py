"""How one YAML value of a rules file is read: a `Reader` per kind of value (text, event types,
durations, numbers, times of day, shares, choices, expressions), tables of them per mapping,
and the wording of what is wrong, at the value's line, with a did-you-mean where one is close.

A reader is only handed a present, non-null value; it returns None after reporting what is
wrong with it, so one mistake is one error and reading goes on to find the next.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

from engine.core.times import parse_duration
from engine.rules.errors import did_you_mean
from engine.rules.limits import MAX_EXPRESSION_CHARS, ZERO_WIDTH, character_name
from engine.rules.model import ANY_EVENT
from engine.rules.scope import Scope
from engine.rules.yaml_lines import Node

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")
_TEMPLATE_EXPRESSION = re.compile(r"\{[^{}]*\}")


Reader = Callable[[Scope, str, Node], Any]
"""Reads one present, non-null value; returns None after reporting what is wrong with it."""

Table = dict[str, tuple[str, Reader]]
"""YAML key -> (struct field, reader)."""


def closest(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def alternatives(choices: Iterable[str]) -> str:
    choices = list(choices)
    return choices[0] if len(choices) == 1 else ", ".join(choices[:-1]) + " or " + choices[-1]


def as_written(node: Node) -> str:
    return repr(node.text) if isinstance(node.value, str) else node.text


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def check_keys(scope: Scope, node: Node, allowed: Iterable[str], where: str = "") -> set[str]:
    """Reports unknown keys; returns the keys to treat as given, typos counted as what they
    most likely mean, so a typo'd `thne` does not also raise "missing `then`"."""
    allowed = tuple(allowed)
    present = set()
    for key in node.value:
        if key in allowed:
            present.add(key)
            continue
        guess = closest(key, allowed)
        hint = did_you_mean(key, allowed) if guess else f": expected {alternatives(allowed)}"
        scope.error(node.key_lines[key], f"unknown key '{key}'{where}{hint}")
        if guess:
            present.add(guess)
    return present


def read(scope: Scope, mapping: Node, key: str, reader: Reader) -> Any:
    child = mapping.value.get(key)
    if child is None:
        return None
    if child.value is None:
        scope.error(child.line, f"'{key}' has no value")
        return None
    return reader(scope, key, child)


def read_fields(scope: Scope, mapping: Node, table: Table) -> dict[str, Any]:
    fields = {}
    for key, (name, reader) in table.items():
        value = read(scope, mapping, key, reader)
        if value is not None:
            fields[name] = value
    return fields


def read_mapping(
    scope: Scope, node: Node, where: str, example: str, table: Table, required: Iterable[str] = ()
) -> dict[str, Any] | None:
    """A nested mapping (`then`, `unless`, a step, a cap …): its fields, or None if anything was wrong."""
    if not node.is_map:
        scope.error(node.line, f"'{where}' must be a mapping like {example}, not {describe(node.value)}")
        return None
    mark = scope.mark()
    present = check_keys(scope, node, table, f" in '{where}'")
    for key in required:
        if key not in present:
            scope.error(node.line, f"'{where}' needs '{key}', e.g. {example}")
    fields = read_fields(scope, node, table)
    return None if scope.failed_since(mark) else fields


def invisible(text: str) -> str:
    """A hint for a name that does not match its pattern because it holds an invisible character."""
    found = ZERO_WIDTH.search(text)
    if found is None:
        return ""
    return f" (it holds the invisible {character_name(found[0])} at column {found.start() + 1})"


def visible(scope: Scope, key: str, node: Node, text: str, start: int = 0, end: int | None = None) -> bool:
    """False, after reporting it, when a name or an expression (`text[start:end]`) holds a
    zero-width character."""
    found = ZERO_WIDTH.search(text, start, len(text) if end is None else end)
    if found is not None:
        scope.error(node.line, f"'{key}' (column {found.start() + 1}): the invisible character"
                    f" {character_name(found[0])} makes it differ from what it looks like: delete it")
    return found is None


def string(scope: Scope, key: str, node: Node) -> str | None:
    """Text that names something (an event type, a channel, an id): no zero-width characters."""
    if not isinstance(node.value, str) or not node.value.strip():
        scope.error(node.line, f"'{key}' must be text, not {describe(node.value)}")
        return None
    return node.value if visible(scope, key, node, node.value) else None


def text(scope: Scope, key: str, node: Node) -> str | None:
    """Like `string`, but a number is taken as written (an id `007`, a salt `2024`)."""
    if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.text
    return string(scope, key, node)


def events(scope: Scope, key: str, node: Node) -> tuple[str, ...] | None:
    """An event type or a list of them; "*" stands alone, since it already means every event."""
    items = node.value if isinstance(node.value, list) else [node]
    if not items:
        scope.error(node.line, f"'{key}' needs at least one event type")
        return None
    names = tuple(string(scope, key, item) for item in items)
    if None in names:
        return None
    if ANY_EVENT in names and len(names) > 1:
        scope.error(node.line, f"'{key}': \"*\" already means every event; list no other types with it")
        return None
    return names  # type: ignore[return-value]


def duration(scope: Scope, key: str, node: Node) -> int | None:
    try:
        return parse_duration(node.value)
    except ValueError as exc:
        scope.error(node.line, f"'{key}': {exc}")
        return None


def positive_int(scope: Scope, key: str, node: Node) -> int | None:
    if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value <= 0:
        scope.error(node.line, f"'{key}' must be a whole number above 0, not {describe(node.value)}")
        return None
    return node.value


def whole_number(scope: Scope, key: str, node: Node) -> int | None:
    if isinstance(node.value, bool) or not isinstance(node.value, int):
        scope.error(node.line, f"'{key}' must be a whole number, not {describe(node.value)}")
        return None
    return node.value


def one_of(what: str, choices: tuple[str, ...]) -> Reader:
    def read_choice(scope: Scope, key: str, node: Node) -> str | None:
        if node.value in choices:
            return node.value
        word = node.value if isinstance(node.value, str) else node.text
        hint = did_you_mean(word, choices) or f": use {alternatives(choices)}"
        scope.error(node.line, f"unknown {what} '{word}'{hint}")
        return None

    return read_choice


def clock(scope: Scope, key: str, node: Node) -> tuple[int, int] | None:
    """ "HH:MM" -> (hour, minute). A number here means YAML read an unquoted time as one."""
    match = _CLOCK.fullmatch(node.value) if isinstance(node.value, str) else None
    if match and int(match[1]) < 24 and int(match[2]) < 60:
        return int(match[1]), int(match[2])
    scope.error(node.line, f"'{key}': {as_written(node)} is not a time of day: write HH:MM in quotes, like \"09:00\"")
    return None


def share(scope: Scope, key: str, node: Node) -> float | None:
    """A holdout share: "5%" or 0.05 -> 0.05; everyone held out (100%) would send nothing."""
    value = node.value
    share = None
    if isinstance(value, str) and (match := _PERCENT.fullmatch(value.strip())):
        share = float(match[1]) / 100
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        share = float(value)
    if share is not None and 0 <= share < 1:
        return share
    # `control_group: 5` is far more likely meant as 5% than as "hold out everyone"
    hint = f" (did you mean {node.text}%?)" if share is not None and share < 100 and not isinstance(value, str) else ""
    scope.error(
        node.line, f"'{key}' must be a share from 0% to below 100%, like 5% or 0.05, not {as_written(node)}{hint}"
    )
    return None


def expression_ok(scope: Scope, key: str, node: Node, text: str, template: bool) -> bool:
    """Whether the text of an expression or template may go to the compiler: bounded, so that
    compiling it takes no time, and with no zero-width character where it is code (all of an
    expression, the `{...}` of a template)."""
    if len(text) > MAX_EXPRESSION_CHARS:
        scope.error(node.line, f"'{key}' is {len(text):,} characters long, more than the {MAX_EXPRESSION_CHARS:,}"
                    " an expression or template may have: split the condition, or move the data out of the rule")
        return False
    if not template:
        return visible(scope, key, node, text)
    codes = _TEMPLATE_EXPRESSION.finditer(text)
    return all(visible(scope, key, node, text, code.start(), code.end()) for code in codes)
