"""Rules files (SPEC §3) -> a validated `RuleSet`, or `RulesInvalid` listing every mistake found.

The YAML is read with PyYAML's composer and turned into values here, so that every key and
value keeps its line for error messages, and so that YAML 1.1's surprises never reach a rule:
scalars are typed by YAML 1.2's core schema, hence `on:` is the key "on" (not True), `no` is an
event name (not False) and an unquoted `09:00` is text (not 540 sexagesimal minutes).

The loader checks shape, types, units and the consistency of each rule; it does not compile
`if:` expressions (the compiler does, reporting at `Rule.condition_line`), so unknown aggregate
names inside conditions are the compiler's to report.
"""

from __future__ import annotations

import difflib
import keyword
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from engine.rules.errors import RuleError, RulesInvalid, did_you_mean
from engine.rules.model import (
    AGGREGATE_KINDS,
    ANY_EVENT,
    RULE_TYPES,
    Action,
    Aggregate,
    Attribution,
    FrequencyCap,
    Policy,
    QuietHours,
    Rule,
    RuleSet,
    Source,
    Step,
    Unless,
)
from engine.times import parse_duration

__all__ = ["load_rules"]

RULES_SUFFIXES = (".yaml", ".yml")

# Names an aggregate cannot take because `if:` expressions already mean something by them.
# Python keywords are included as well: expressions compile to Python code, where an
# aggregate called `class` or `lambda` could not be referred to.
RESERVED_NAMES = frozenset(
    {
        "event", "profile", "now",
        "days_since", "hours_since", "minutes_since", "top", "len", "abs", "min", "max",
        "round", "lower", "coalesce",
        "true", "false", "null", "and", "or", "not", "in",
    }
    | {word for word in keyword.kwlist if word.islower()}
)

_AGGREGATE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PROFILE_ATTR = re.compile(r"profile\.[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")


# --------------------------------------------------------------------------- YAML with lines


class _RulesYamlLoader(yaml.SafeLoader):
    """SafeLoader whose implicit scalar types are YAML 1.2's core schema, not YAML 1.1's.

    Defining the class attribute here (instead of inheriting it) drops every 1.1 resolver:
    yes/no/on/off/y/n booleans, sexagesimal ints and floats, timestamps and merge keys.
    """

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}


_STR = "tag:yaml.org,2002:str"
_CORE_SCHEMA = (
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        list("-+.0123456789"),
    ),
)
for _tag, _pattern, _first in _CORE_SCHEMA:
    _RulesYamlLoader.add_implicit_resolver(_tag, re.compile(rf"^(?:{_pattern})$"), _first)


def _to_bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def _to_int(text: str) -> int:
    # base 0 understands 0x/0o but rejects "09", which the core schema reads as decimal 9
    return int(text, 0) if text[:2] in ("0x", "0o") else int(text, 10)


def _to_float(text: str) -> float:
    return float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))


_SCALARS: dict[str, Callable[[str], Any]] = {
    _STR: str,
    "tag:yaml.org,2002:null": lambda text: None,
    "tag:yaml.org,2002:bool": _to_bool,
    "tag:yaml.org,2002:int": _to_int,
    "tag:yaml.org,2002:float": _to_float,
}


@dataclass(slots=True)
class _Node:
    """A YAML value with the 1-based line it starts on.

    `value` is a str, int, float, bool or None, a list of `_Node`, or a dict of `_Node` by key
    (keys are the text as written); a mapping also keeps the line of each key.
    """

    value: Any
    line: int
    text: str = ""                 # a scalar as written, e.g. "007" for the int 7
    style: str | None = None       # a scalar's YAML style: None (plain), "'", '"', "|", ">"
    key_lines: dict[str, int] = field(default_factory=dict)

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    def plain(self) -> Any:
        """The value as ordinary Python data, for payloads that are passed on untouched."""
        if isinstance(self.value, dict):
            return {key: child.plain() for key, child in self.value.items()}
        if isinstance(self.value, list):
            return [child.plain() for child in self.value]
        return self.value


_BUILDING = _Node(None, 0)  # memo marker: an alias pointing into its own anchor


def _build(node: yaml.Node, scope: _Scope, memo: dict[int, _Node]) -> _Node:
    """Turns composed YAML into `_Node`s; aliases share one result, so `&a`/`*a` bombs stay small."""
    done = memo.get(id(node))
    if done is _BUILDING:
        scope.error(node.start_mark.line + 1, "an alias refers to its own anchor (a recursive structure)")
        return _Node(None, node.start_mark.line + 1)
    if done is not None:
        return done
    memo[id(node)] = _BUILDING
    if isinstance(node, yaml.MappingNode):
        built = _build_mapping(node, scope, memo)
    elif isinstance(node, yaml.SequenceNode):
        built = _build_sequence(node, scope, memo)
    else:
        built = _build_scalar(node, scope)
    memo[id(node)] = built
    return built


def _build_scalar(node: yaml.ScalarNode, scope: _Scope) -> _Node:
    line = node.start_mark.line + 1
    convert = _SCALARS.get(node.tag)
    if convert is None:
        scope.error(line, f"unsupported YAML tag {node.tag!r}: write plain text, numbers or true/false")
        return _Node(None, line)
    try:
        value = convert(node.value)
    except ValueError:
        scope.error(line, f"cannot read {node.value!r} as {node.tag.rsplit(':', 1)[-1]}")
        value = None
    return _Node(value, line, text=node.value, style=node.style)


def _build_sequence(node: yaml.SequenceNode, scope: _Scope, memo: dict[int, _Node]) -> _Node:
    line = node.start_mark.line + 1
    if node.tag != "tag:yaml.org,2002:seq":
        scope.error(line, f"unsupported YAML tag {node.tag!r}: write a plain list")
    return _Node([_build(item, scope, memo) for item in node.value], line)


def _build_mapping(node: yaml.MappingNode, scope: _Scope, memo: dict[int, _Node]) -> _Node:
    built = _Node({}, node.start_mark.line + 1)
    if node.tag != "tag:yaml.org,2002:map":
        scope.error(built.line, f"unsupported YAML tag {node.tag!r}: write a plain mapping")
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        key = _mapping_key(key_node, key_line, built, scope)
        if key is None:
            continue
        value = _build(value_node, scope, memo)
        if value.value is None and value.text == "":
            # an empty value is placed on the next token's line; the key's line is where it is
            value = _Node(None, key_line)
        built.value[key] = value
        built.key_lines[key] = key_line
    return built


def _mapping_key(key_node: yaml.Node, line: int, mapping: _Node, scope: _Scope) -> str | None:
    """The key as written (so `on`, `yes`, `1` are keys by their text); None when unusable."""
    if not isinstance(key_node, yaml.ScalarNode):
        scope.error(line, "a key must be a plain name, not a list or a mapping")
        return None
    key = key_node.value
    if key == "<<" and key_node.style is None:
        scope.error(line, "YAML merge keys (<<) are not supported: write the keys out")
        return None
    if key in mapping.value:
        scope.error(line, f"duplicate key '{key}' (first at line {mapping.key_lines[key]})")
        return None
    return key


def _yaml_syntax_error(exc: yaml.YAMLError) -> tuple[int, str]:
    """(line, message) for a YAML error, pointing at the problem, not at the enclosing block."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, f"YAML error: {exc}"
    mark = exc.problem_mark or exc.context_mark
    message = f"YAML syntax error: {exc.problem or exc.context}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return (mark.line + 1 if mark is not None else 1), message


def _compose(text: str, scope: _Scope) -> _Node | None:
    try:
        root = yaml.compose(text, Loader=_RulesYamlLoader)
    except yaml.YAMLError as exc:
        scope.error(*_yaml_syntax_error(exc))
        return None
    return None if root is None else _build(root, scope, {})


# --------------------------------------------------------------------------- errors and values


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where errors go and how they are labelled: one file, maybe one rule and a part of it."""

    file: str
    errors: list[RuleError]
    rule_id: str | None = None
    prefix: str = ""

    def error(self, line: int, message: str) -> None:
        self.errors.append(RuleError(self.file, line, self.prefix + message, self.rule_id))

    def source(self, line: int) -> Source:
        return Source(self.file, line)

    def within(self, prefix: str) -> _Scope:
        return replace(self, prefix=self.prefix + prefix)

    def for_rule(self, rule_id: str | None) -> _Scope:
        return replace(self, rule_id=rule_id)

    def mark(self) -> int:
        return len(self.errors)

    def failed_since(self, mark: int) -> bool:
        return len(self.errors) > mark


Reader = Callable[[_Scope, str, _Node], Any]
"""Reads one present, non-null value; returns None after reporting what is wrong with it."""

Table = dict[str, tuple[str, Reader]]
"""YAML key -> (struct field, reader)."""


def _closest(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _alternatives(choices: Iterable[str]) -> str:
    choices = list(choices)
    return choices[0] if len(choices) == 1 else ", ".join(choices[:-1]) + " or " + choices[-1]


def _as_written(node: _Node) -> str:
    return repr(node.text) if isinstance(node.value, str) else node.text


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _check_keys(scope: _Scope, node: _Node, allowed: Iterable[str], where: str = "") -> set[str]:
    """Reports unknown keys; returns the keys to treat as given, typos counted as what they
    most likely mean, so a typo'd `thne` does not also raise "missing `then`"."""
    allowed = tuple(allowed)
    present = set()
    for key in node.value:
        if key in allowed:
            present.add(key)
            continue
        guess = _closest(key, allowed)
        hint = did_you_mean(key, allowed) if guess else f": expected {_alternatives(allowed)}"
        scope.error(node.key_lines[key], f"unknown key '{key}'{where}{hint}")
        if guess:
            present.add(guess)
    return present


def _read(scope: _Scope, mapping: _Node, key: str, reader: Reader) -> Any:
    child = mapping.value.get(key)
    if child is None:
        return None
    if child.value is None:
        scope.error(child.line, f"'{key}' has no value")
        return None
    return reader(scope, key, child)


def _read_fields(scope: _Scope, mapping: _Node, table: Table) -> dict[str, Any]:
    fields = {}
    for key, (name, reader) in table.items():
        value = _read(scope, mapping, key, reader)
        if value is not None:
            fields[name] = value
    return fields


def _read_mapping(
    scope: _Scope, node: _Node, where: str, example: str, table: Table, required: Iterable[str] = ()
) -> dict[str, Any] | None:
    """A nested mapping (`then`, `unless`, a step, a cap …): its fields, or None if anything was wrong."""
    if not node.is_map:
        scope.error(node.line, f"'{where}' must be a mapping like {example}, not {_describe(node.value)}")
        return None
    mark = scope.mark()
    present = _check_keys(scope, node, table, f" in '{where}'")
    for key in required:
        if key not in present:
            scope.error(node.line, f"'{where}' needs '{key}', e.g. {example}")
    fields = _read_fields(scope, node, table)
    return None if scope.failed_since(mark) else fields


def _string(scope: _Scope, key: str, node: _Node) -> str | None:
    if not isinstance(node.value, str) or not node.value.strip():
        scope.error(node.line, f"'{key}' must be text, not {_describe(node.value)}")
        return None
    return node.value


def _text(scope: _Scope, key: str, node: _Node) -> str | None:
    """Like `_string`, but a number is taken as written (an id `007`, a salt `2024`)."""
    if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.text
    return _string(scope, key, node)


def _events(scope: _Scope, key: str, node: _Node) -> tuple[str, ...] | None:
    """An event type or a list of them; "*" stands alone, since it already means every event."""
    items = node.value if isinstance(node.value, list) else [node]
    if not items:
        scope.error(node.line, f"'{key}' needs at least one event type")
        return None
    names = tuple(_string(scope, key, item) for item in items)
    if None in names:
        return None
    if ANY_EVENT in names and len(names) > 1:
        scope.error(node.line, f"'{key}': \"*\" already means every event; list no other types with it")
        return None
    return names  # type: ignore[return-value]


def _duration(scope: _Scope, key: str, node: _Node) -> int | None:
    try:
        return parse_duration(node.value)
    except ValueError as exc:
        scope.error(node.line, f"'{key}': {exc}")
        return None


def _positive_int(scope: _Scope, key: str, node: _Node) -> int | None:
    if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value <= 0:
        scope.error(node.line, f"'{key}' must be a whole number above 0, not {_describe(node.value)}")
        return None
    return node.value


def _int(scope: _Scope, key: str, node: _Node) -> int | None:
    if isinstance(node.value, bool) or not isinstance(node.value, int):
        scope.error(node.line, f"'{key}' must be a whole number, not {_describe(node.value)}")
        return None
    return node.value


def _one_of(what: str, choices: tuple[str, ...]) -> Reader:
    def read(scope: _Scope, key: str, node: _Node) -> str | None:
        if node.value in choices:
            return node.value
        word = node.value if isinstance(node.value, str) else node.text
        hint = did_you_mean(word, choices) or f": use {_alternatives(choices)}"
        scope.error(node.line, f"unknown {what} '{word}'{hint}")
        return None

    return read


def _clock(scope: _Scope, key: str, node: _Node) -> tuple[int, int] | None:
    """ "HH:MM" -> (hour, minute). A number here means YAML read an unquoted time as one."""
    match = _CLOCK.fullmatch(node.value) if isinstance(node.value, str) else None
    if match and int(match[1]) < 24 and int(match[2]) < 60:
        return int(match[1]), int(match[2])
    scope.error(node.line, f"'{key}': {_as_written(node)} is not a time of day: write HH:MM in quotes, like \"09:00\"")
    return None


def _share(scope: _Scope, key: str, node: _Node) -> float | None:
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
        node.line, f"'{key}' must be a share from 0% to below 100%, like 5% or 0.05, not {_as_written(node)}{hint}"
    )
    return None


# --------------------------------------------------------------------------- aggregates


_AGGREGATE_TABLES: dict[str, Table] = {
    "sum": {"sum": ("field", _string), "on": ("on", _events), "window": ("window", _duration)},
    "count": {"count": ("on", _events), "window": ("window", _duration)},
    "last": {"last": ("field", _string), "on": ("on", _events)},
    "decayed_count": {"decayed_count": ("on", _events), "by": ("by", _string), "half_life": ("half_life", _duration)},
}
_AGGREGATE_REQUIRED = {"sum": ("on",), "count": (), "last": (), "decayed_count": ("by", "half_life")}
_AGGREGATE_EXAMPLES = {
    "sum": "{sum: amount, on: purchase}",
    "count": "{count: purchase}",
    "last": '{last: ts, on: "*"}',
    "decayed_count": "{decayed_count: product_view, by: category, half_life: 14d}",
}
_AGGREGATE_OPTIONS = ("on", "window", "by", "half_life")
_AGGREGATE_KEYS = (*AGGREGATE_KINDS, *_AGGREGATE_OPTIONS)
# Why an option known to some kinds does not fit this one.
_OPTION_MISFIT = {
    "on": "count and decayed_count take their event types as the argument, e.g. {count: purchase}",
    "window": "only sum and count aggregates have a window",
    "by": "only decayed_count aggregates use it",
    "half_life": "only decayed_count aggregates use it",
}


def _aggregate(scope: _Scope, name: str, line: int, node: _Node) -> Aggregate | None:
    mark = scope.mark()
    _check_aggregate_name(scope, name, line)
    if not node.is_map:
        example = _AGGREGATE_EXAMPLES["count"]
        scope.error(node.line, f"an aggregate is a mapping like {example}, not {_describe(node.value)}")
        return None
    kind = _aggregate_kind(scope, node)
    if kind is None:
        return None
    _check_aggregate_options(scope, node, kind)
    fields = _read_fields(scope, node, _AGGREGATE_TABLES[kind])
    if scope.failed_since(mark):
        return None
    if kind == "last":
        fields.setdefault("on", (ANY_EVENT,))
    return Aggregate(name=name, kind=kind, source=scope.source(line), **fields)


def _check_aggregate_name(scope: _Scope, name: str, line: int) -> None:
    if not _AGGREGATE_NAME.fullmatch(name):
        scope.error(line, "a name uses lower-case letters, digits and _, and does not start with a digit")
    elif name in RESERVED_NAMES:
        scope.error(line, f"'{name}' is reserved in `if:` expressions: choose another name")


def _aggregate_kind(scope: _Scope, node: _Node) -> str | None:
    """The one kind key; a typo close to a kind counts as the kind, to avoid a second error."""
    kind_typo = False
    for key in node.value:
        if key in _AGGREGATE_KEYS:
            continue
        guess = _closest(key, _AGGREGATE_KEYS)
        kind_typo = kind_typo or guess in AGGREGATE_KINDS
        what = "aggregate kind" if guess in AGGREGATE_KINDS else "key"
        hint = did_you_mean(key, _AGGREGATE_KEYS) if guess else f": expected {_alternatives(_AGGREGATE_KEYS)}"
        scope.error(node.key_lines[key], f"unknown {what} '{key}'{hint}")
    kinds = [key for key in node.value if key in AGGREGATE_KINDS]
    if len(kinds) > 1:
        scope.error(node.line, f"has {len(kinds)} kinds ({', '.join(kinds)}): keep exactly one")
    elif not kinds and not kind_typo:
        scope.error(node.line, f"needs a kind: {_alternatives(AGGREGATE_KINDS)}, e.g. {_AGGREGATE_EXAMPLES['count']}")
    return kinds[0] if len(kinds) == 1 else None


def _check_aggregate_options(scope: _Scope, node: _Node, kind: str) -> None:
    table = _AGGREGATE_TABLES[kind]
    for key in node.value:
        if key in _AGGREGATE_OPTIONS and key not in table:
            scope.error(node.key_lines[key], f"'{key}' does not apply to a {kind} aggregate: {_OPTION_MISFIT[key]}")
    for key in _AGGREGATE_REQUIRED[kind]:
        if key not in node.value:
            scope.error(node.line, f"a {kind} aggregate needs '{key}', e.g. {_AGGREGATE_EXAMPLES[kind]}")


# --------------------------------------------------------------------------- rules


def _condition(scope: _Scope, key: str, node: _Node) -> str | None:
    """`if:` stays source text for the compiler; a bare number or true/false is a valid expression."""
    value = node.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return node.text
    if isinstance(value, str) and value.strip():
        return value
    scope.error(node.line, f"'{key}' must be an expression such as `lifetime_spend >= 5000`, not {_describe(value)}"
                " (quote it if it contains ': ' or starts with '{' or '[')")
    return None


def _condition_line(node: _Node) -> int:
    # a block scalar (`if: |`) starts its text on the line after the indicator
    return node.line + 1 if node.style in ("|", ">") else node.line


def _profile_date(scope: _Scope, key: str, node: _Node) -> str | None:
    value = node.value
    if isinstance(value, str) and _PROFILE_ATTR.fullmatch(value):
        return value
    hint = (
        f" (did you mean 'profile.{value}'?)"
        if isinstance(value, str) and _IDENTIFIER.fullmatch(value)
        else ", like profile.birthday"
    )
    scope.error(node.line, f"'{key}' must name a profile attribute holding a date, not {node.text!r}{hint}")
    return None


def _match(scope: _Scope, key: str, node: _Node) -> dict[str, str] | None:
    """Property -> template. A number or true/false becomes Python's `str()` of it, because the
    compiler compares `str(event property)` with the rendered template (`true` matches True)."""
    if not node.is_map:
        example = '{coupon: "{event.coupon}"}'
        scope.error(node.line, f"'{key}' must be a mapping like {example}, not {_describe(node.value)}")
        return None
    match = {}
    for prop, value in node.value.items():
        if isinstance(value.value, (dict, list)) or value.value is None:
            scope.error(value.line, f"'{key}.{prop}' must be a single value or template, not {_describe(value.value)}")
        else:
            match[prop] = str(value.value)
    return match if len(match) == len(node.value) else None


_UNLESS_TABLE: Table = {"event": ("events", _events), "within": ("within", _duration), "match": ("match", _match)}
_UNLESS_EXAMPLE = "{event: purchase, within: 30m}"


def _unless(scope: _Scope, node: _Node, in_step: bool) -> Unless | None:
    """A rule's `unless` needs `within` (how long to wait); a step's waits the step's `after`."""
    required = ("event",) if in_step else ("event", "within")
    fields = _read_mapping(scope, node, "unless", _UNLESS_EXAMPLE, _UNLESS_TABLE, required)
    if fields is None:
        return None
    if in_step and "within" in fields:
        scope.error(
            node.value["within"].line, "a step's 'unless' watches the wait given by the step's 'after': drop 'within'"
        )
        return None
    return Unless(source=scope.source(node.line), **fields)


def _rule_unless(scope: _Scope, key: str, node: _Node) -> Unless | None:
    return _unless(scope, node, in_step=False)


def _step_unless(scope: _Scope, key: str, node: _Node) -> Unless | None:
    return _unless(scope, node, in_step=True)


def _payload(scope: _Scope, key: str, node: _Node) -> dict[str, Any] | None:
    if not node.is_map:
        example = '{sku: "{event.sku}"}'
        scope.error(node.line, f"'{key}' must be a mapping like {example}, not {_describe(node.value)}")
        return None
    return node.plain()


_ACTION_TABLE: Table = {
    "action": ("action", _string),
    "channel": ("channel", _string),
    "payload": ("payload", _payload),
}
_ACTION_EXAMPLE = "{action: cart-reminder, channel: email}"


def _action(scope: _Scope, key: str, node: _Node) -> Action | None:
    fields = _read_mapping(scope, node, key, _ACTION_EXAMPLE, _ACTION_TABLE, ("action", "channel"))
    return None if fields is None else Action(source=scope.source(node.line), **fields)


_STEP_TABLE: Table = {
    "after": ("after", _duration),
    "unless": ("unless", _step_unless),
    "if": ("condition", _condition),
    "then": ("then", _action),
}
_STEP_EXAMPLE = "{after: 2d, then: {action: welcome-2, channel: email}}"


def _steps(scope: _Scope, key: str, node: _Node) -> tuple[Step, ...] | None:
    if not isinstance(node.value, list) or not node.value:
        scope.error(node.line, f"'{key}' must be a list of steps, each like {_STEP_EXAMPLE}")
        return None
    steps = [_step(scope.within(f"step {index + 1}: "), index, item) for index, item in enumerate(node.value)]
    return None if None in steps else tuple(steps)  # type: ignore[arg-type]


def _step(scope: _Scope, index: int, node: _Node) -> Step | None:
    """The first step is sent when the rule fires; each later one `after` the previous step."""
    fields = _read_mapping(scope, node, "steps", _STEP_EXAMPLE, _STEP_TABLE, ("then",))
    if fields is None:
        return None
    problems = _step_problems(index, node)
    for line, problem in problems:
        scope.error(line, problem)
    if problems:
        return None
    if "if" in node.value:
        fields["condition_line"] = _condition_line(node.value["if"])
    return Step(source=scope.source(node.line), **fields)


def _step_problems(index: int, node: _Node) -> list[tuple[int, str]]:
    given = node.value
    if index > 0:
        if "after" in given:
            return []
        return [(node.line, "needs 'after', the wait since the previous step, e.g. after: 2d")]
    problems = []
    if "after" in given:
        problems.append((given["after"].line, "the first step is sent when the rule fires, so it takes no 'after'"
                         " (to wait before it, give the rule a 'delay')"))
    if "unless" in given:
        # nothing is awaited before the first step, so there is nothing for its `unless` to cancel
        problems.append((given["unless"].line, "the first step has no wait for 'unless' to watch:"
                         " put 'unless' (with 'within') on the rule instead"))
    return problems


_RULE_TABLE: Table = {
    "type": ("type", _one_of("rule type", RULE_TYPES)),
    "on": ("on", _events),
    "if": ("condition", _condition),
    "unless": ("unless", _rule_unless),
    "delay": ("delay", _duration),
    "steps": ("steps", _steps),
    "inactive": ("inactive", _duration),
    "every": ("every", _one_of("'every' value", ("year", "month"))),
    "date": ("date", _profile_date),
    "at": ("at", _clock),
    "then": ("then", _action),
    "cooldown": ("cooldown", _duration),
    "priority": ("priority", _int),
    "control_group": ("control_group", _share),
    "quiet_hours": ("quiet_hours", _one_of("quiet_hours mode", ("defer", "drop"))),
    "attribution_window": ("attribution_window", _duration),
}
_RULE_KEYS = ("id", *_RULE_TABLE)
_RECURRING_ONLY = ("every", "date", "at")


def _rule(scope: _Scope, node: _Node) -> tuple[str | None, Rule | None]:
    """(id, rule): the id even when the rule is invalid, so duplicates are still found."""
    if not node.is_map:
        scope.error(node.line, f"a rule is a mapping starting with '- id: …', not {_describe(node.value)}")
        return None, None
    rule_id = _rule_id(scope, node)
    scope = scope.for_rule(rule_id)
    mark = scope.mark()
    present = _check_keys(scope, node, _RULE_KEYS)
    fields = _read_fields(scope, node, _RULE_TABLE)
    if "type" not in present:
        scope.error(node.line, f"missing 'type': {_alternatives(RULE_TYPES)}")
    _check_rule_shape(scope, node.line, present, fields.get("type"))
    if scope.failed_since(mark) or rule_id is None:
        return rule_id, None
    if "condition" in fields:
        fields["condition_line"] = _condition_line(node.value["if"])
    return rule_id, Rule(id=rule_id, source=scope.source(node.line), **fields)


def _rule_id(scope: _Scope, node: _Node) -> str | None:
    if "id" not in node.value:
        scope.error(node.line, "a rule needs an 'id', e.g. id: cart-abandoned")
        return None
    rule_id = _read(scope, node, "id", _text)
    if rule_id is not None and not _RULE_ID.fullmatch(rule_id):
        scope.for_rule(rule_id).error(
            node.value["id"].line, "a rule id uses letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    return rule_id


def _rule_shape_problems(present: set[str], rule_type: str | None) -> list[str]:
    """What is wrong with the combination of keys, judged by which keys are given.

    Judging by presence (not by valid values) keeps one mistake from causing two errors.
    """
    has = present.__contains__
    problems = []
    if not has("then") and not has("steps"):
        problems.append("needs 'then' (what to send) or 'steps' (a series of sends)")
    if has("then") and has("steps"):
        problems.append("has both 'then' and 'steps': move the action into the first step")
    if has("delay") and has("unless"):
        problems.append("'delay' and 'unless' exclude each other: 'unless.within' is already the wait")
    if has("inactive") and has("on"):
        problems.append("'inactive' fires when no event arrives at all, so it takes no 'on'")
    if has("inactive") and (has("unless") or has("delay")):
        problems.append("'inactive' is already a wait: it takes no 'unless' or 'delay'")
    if rule_type in ("transactional", "behavioral") and not has("on") and not has("inactive"):
        problems.append(f"a {rule_type} rule needs 'on', the event type that starts it")
    if rule_type == "threshold" and not has("if") and not has("inactive"):
        problems.append("a threshold rule needs 'if' (it fires when the condition turns true) or 'inactive'")
    if rule_type == "recurring":
        problems += _recurring_problems(present)
    elif rule_type is not None:
        problems += [f"'{key}' is only for recurring rules" for key in _RECURRING_ONLY if has(key)]
    return problems


def _recurring_problems(present: set[str]) -> list[str]:
    # a recurring rule is started by the calendar, not by an event, so nothing waits on one
    problems = [f"a recurring rule needs '{key}'" for key in ("every", "date") if key not in present]
    not_allowed = [key for key in ("on", "unless", "delay", "inactive") if key in present]
    if not_allowed:
        quoted = [f"'{key}'" for key in not_allowed]
        problems.append(f"a recurring rule is started by its date, so it takes no {_alternatives(quoted)}")
    return problems


def _check_rule_shape(scope: _Scope, line: int, present: set[str], rule_type: str | None) -> None:
    for problem in _rule_shape_problems(present, rule_type):
        scope.error(line, problem)


# --------------------------------------------------------------------------- policy


_CAP_TABLE: Table = {"channel": ("channel", _string), "max": ("max", _positive_int), "per": ("per", _duration)}
_CAP_EXAMPLE = "{channel: email, max: 3, per: 7d}"
_QUIET_TABLE: Table = {
    "from": ("start", _clock),
    "to": ("end", _clock),
    "mode": ("mode", _one_of("quiet_hours mode", ("defer", "drop"))),
}
_QUIET_EXAMPLE = '{from: "21:00", to: "08:00", mode: defer}'


def _frequency_caps(scope: _Scope, key: str, node: _Node) -> tuple[FrequencyCap, ...] | None:
    if not isinstance(node.value, list):
        scope.error(node.line, f"'{key}' must be a list of caps, each like {_CAP_EXAMPLE}")
        return None
    caps = []
    for item in node.value:
        fields = _read_mapping(scope, item, "frequency_caps", _CAP_EXAMPLE, _CAP_TABLE, ("channel", "max", "per"))
        caps.append(None if fields is None else FrequencyCap(source=scope.source(item.line), **fields))
    return None if None in caps else tuple(caps)  # type: ignore[arg-type]


def _quiet_hours(scope: _Scope, key: str, node: _Node) -> QuietHours | None:
    """Without a `mode`, quiet hours defer: a deferred message is late, a dropped one is lost."""
    fields = _read_mapping(scope, node, key, _QUIET_EXAMPLE, _QUIET_TABLE, ("from", "to"))
    if fields is None:
        return None
    if fields["start"] == fields["end"]:
        scope.error(node.line, "'from' and 'to' are the same time, so the quiet hours are empty")
        return None
    fields.setdefault("mode", "defer")
    return QuietHours(source=scope.source(node.line), **fields)


_ATTRIBUTION_TABLE: Table = {
    "window": ("window", _duration),
    "responses": ("responses", _events),
    "conversions": ("conversions", _events),
    "revenue": ("revenue", _text),
}
_ATTRIBUTION_EXAMPLE = "{window: 7d, responses: [email_opened, email_clicked], conversions: [purchase], revenue: amount}"


def _attribution(scope: _Scope, key: str, node: _Node) -> Attribution | None:
    fields = _read_mapping(scope, node, key, _ATTRIBUTION_EXAMPLE, _ATTRIBUTION_TABLE, ())
    return None if fields is None else Attribution(**fields)


_POLICY_TABLE: Table = {
    "frequency_caps": ("frequency_caps", _frequency_caps),
    "quiet_hours": ("quiet_hours", _quiet_hours),
    "consent": ("consent", _one_of("consent", ("required", "optional"))),
    "control_group": ("control_group", _share),
    "control_group_salt": ("control_group_salt", _text),
    "attribution": ("attribution", _attribution),
}


def _policy(scope: _Scope, line: int, node: _Node) -> Policy | None:
    scope = scope.within("policy: ")
    if not node.is_map:
        scope.error(node.line, f"must be a mapping with {_alternatives(_POLICY_TABLE)}")
        return None
    mark = scope.mark()
    _check_keys(scope, node, _POLICY_TABLE)
    fields = _read_fields(scope, node, _POLICY_TABLE)
    return None if scope.failed_since(mark) else Policy(source=scope.source(line), **fields)


# --------------------------------------------------------------------------- files and directory


@dataclass
class _Collected:
    """What a directory's files add up to, and every error found on the way.

    Names are claimed in file order, so a duplicate is reported at its later place, naming
    the earlier one.
    """

    errors: list[RuleError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    aggregates: dict[str, Aggregate] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    policy: Policy | None = None
    aggregate_at: dict[str, Source] = field(default_factory=dict)
    rule_at: dict[str, Source] = field(default_factory=dict)
    policy_at: Source | None = None

    def add_aggregate(self, scope: _Scope, name: str, line: int, aggregate: Aggregate | None) -> None:
        if name in self.aggregate_at:
            scope.error(line, f"aggregate '{name}' is already defined at {self.aggregate_at[name]}")
            return
        self.aggregate_at[name] = scope.source(line)
        if aggregate is not None:
            self.aggregates[name] = aggregate

    def add_rule(self, scope: _Scope, line: int, rule_id: str | None, rule: Rule | None) -> None:
        if rule_id is not None and rule_id in self.rule_at:
            first = self.rule_at[rule_id]
            scope.for_rule(rule_id).error(line, f"duplicate rule id '{rule_id}': already used at {first}")
            return
        if rule_id is not None:
            self.rule_at[rule_id] = scope.source(line)
        if rule is not None:
            self.rules.append(rule)

    def add_policy(self, scope: _Scope, line: int, node: _Node) -> None:
        policy = _policy(scope, line, node)  # validated even when it is a second one: fix both at once
        if self.policy_at is not None:
            scope.error(
                line, f"a second policy: there is one at {self.policy_at} already; keep one per rules directory"
            )
            return
        self.policy_at = scope.source(line)
        self.policy = policy


_SECTIONS = ("aggregates", "rules", "policy")


def _read_file(path: Path, name: str, into: _Collected) -> None:
    scope = _Scope(name, into.errors)
    into.files.append(name)
    text = _read_text(path, scope)
    root = None if text is None else _compose(text, scope)
    if root is None:
        return  # unreadable, a syntax error (reported) or an empty file (nothing to add)
    if not root.is_map:
        sections = _alternatives(_SECTIONS)
        scope.error(root.line, f"a rules file is a mapping with {sections}, not {_describe(root.value)}")
        return
    _check_keys(scope, root, _SECTIONS, " at the top level")
    sections = {key: node for key, node in root.value.items() if key in _SECTIONS and node.value is not None}
    if "aggregates" in sections:
        _read_aggregates(scope, sections["aggregates"], into)
    if "rules" in sections:
        _read_rules(scope, sections["rules"], into)
    if "policy" in sections:
        into.add_policy(scope, root.key_lines["policy"], sections["policy"])


def _read_text(path: Path, scope: _Scope) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        scope.error(0, f"cannot read the file: {exc.strerror or exc}")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        scope.error(data[: exc.start].count(b"\n") + 1, "the file is not UTF-8 text")
        return None


def _read_aggregates(scope: _Scope, node: _Node, into: _Collected) -> None:
    if not node.is_map:
        scope.error(node.line, f"'aggregates' must be a mapping of name: {_AGGREGATE_EXAMPLES['count']}")
        return
    for name, value in node.value.items():
        line = node.key_lines[name]
        aggregate = _aggregate(scope.within(f"aggregate '{name}': "), name, line, value)
        into.add_aggregate(scope, name, line, aggregate)


def _read_rules(scope: _Scope, node: _Node, into: _Collected) -> None:
    if not isinstance(node.value, list):
        scope.error(node.line, "'rules' must be a list: start each rule with '- id: …'")
        return
    for item in node.value:
        rule_id, rule = _rule(scope, item)
        into.add_rule(scope, item.line, rule_id, rule)


def _rules_files(path: Path, shown: str) -> list[tuple[Path, str]]:
    """(path, name in messages) of each rules file: a directory's *.yaml/*.yml by name, not
    recursively, or the one file given."""
    if path.is_file():
        return [(path, shown)]
    if not path.is_dir():
        raise RulesInvalid([RuleError(shown, 0, "no such rules directory or file")])
    names = sorted(entry.name for entry in path.iterdir() if entry.suffix in RULES_SUFFIXES and entry.is_file())
    if not names:
        patterns = ", ".join("*" + suffix for suffix in RULES_SUFFIXES)
        raise RulesInvalid([RuleError(shown, 0, f"no rules files ({patterns}) in this directory")])
    return [(path / name, os.path.join(shown, name)) for name in names]


def load_rules(path: str | Path) -> RuleSet:
    """Reads and validates a rules directory (or one file) as a whole.

    Raises `RulesInvalid` with every error found, sorted by file and line, so one run of
    `triggers validate` lists them all; a reload that raises leaves the running rules in place.
    """
    collected = _Collected()
    for file_path, name in _rules_files(Path(path), os.fspath(path)):
        _read_file(file_path, name, collected)
    if collected.errors:
        raise RulesInvalid(sorted(collected.errors, key=lambda error: (error.file, error.line)))
    return RuleSet(
        aggregates=collected.aggregates,
        rules=tuple(collected.rules),
        policy=collected.policy,
        files=tuple(collected.files),
    )
