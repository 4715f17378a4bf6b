"""Rules files (SPEC §3) -> a validated `RuleSet`, or `RulesInvalid` listing every mistake found.

The YAML is composed (by libyaml when PyYAML has it, else by PyYAML's own composer) and turned
into values here, so that every key and value keeps its line for error messages, and so that
YAML 1.1's surprises never reach a rule: scalars are typed by YAML 1.2's core schema, hence `on:`
is the key "on" (not True), `no` is an event name (not False) and an unquoted `09:00` is text
(not 540 sexagesimal minutes).

The loader checks shape, types, units and the consistency of each rule; it does not compile
`if:` expressions (the compiler does, reporting at `Rule.condition_line`), so unknown aggregate
names inside conditions are the compiler's to report.

Hostile files (SPEC §6) are rejected as errors like any other, at their file and line, before
they cost time or memory: sizes are checked before a file is read, characters before it is
parsed, nesting and alias expansion on the parser's events before anything recursive sees the
document (the limits below). Whatever a file holds, `load_rules` raises nothing but
`RulesInvalid`.
"""

from __future__ import annotations

import difflib
import os
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from engine.rules.expr import reserved_name_problem
from engine.rules.errors import MAX_ERRORS, RuleError, RulesInvalid, did_you_mean, error_limit, exception_text
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
from engine.core.times import MAX_DURATION_MS, format_duration, parse_duration

__all__ = ["load_rules"]

RULES_SUFFIXES = (".yaml", ".yml")

# Limits of a rules directory (the compiler adds those of expressions). Real directories are far
# below them: the bundled rules/ is 5 kB; 1,000 typical rules (bench/rulegen.py) are 146 kB and
# 17,000 YAML values. At the limits, `validate` and a hot reload take a few seconds on a small
# machine, instead of minutes and gigabytes.
MAX_FILE_BYTES = 2 * 2**20          # one rules file, checked before it is read
MAX_DIRECTORY_BYTES = 8 * 2**20     # all rules files of the directory together
MAX_FILES = 256
MAX_RULES = 2_000                   # in the directory
MAX_AGGREGATES = 500                # in the directory; every customer's state holds each one
MAX_DEPTH = 64                      # YAML nesting; a rule's payload starts 5 levels in
MAX_VALUES = 200_000                # YAML scalars, lists and mappings in the directory, aliases expanded
MAX_EXPRESSION_CHARS = 10_000       # one `if:` expression, or one payload or `match` template

_AGGREGATE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PROFILE_ATTR = re.compile(r"profile\.[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")

# Characters that make a file read differently from what it does, rejected anywhere in it,
# comments included (Trojan Source, CVE-2021-42574; GCC's -Wbidi-chars looks at comments too):
# bidirectional controls; C0 and C1 controls but tab and line breaks, and DEL; the line and
# paragraph separators, which YAML counts as line breaks and editors do not; a byte order mark
# after the start of the file.
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_HIDDEN_CHARACTER = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI_CONTROLS}\u2028\u2029\ufeff]")
_BIDI_CONTROL = re.compile(f"[{_BIDI_CONTROLS}]")
# Zero-width characters have uses in message text (emoji sequences, some scripts), so they are
# rejected only where they would hide a difference: in names and in expressions, where
# `"shoes\u200b"` looks like "shoes" and is not.
_ZERO_WIDTH = re.compile("[\u200b-\u200d\u2060]")
_TEMPLATE_EXPRESSION = re.compile(r"\{[^{}]*\}")


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

_FastYamlLoader: type = _RulesYamlLoader
if yaml.__with_libyaml__:

    class _LibyamlRulesLoader(yaml.cyaml.CParser, yaml.resolver.BaseResolver):
        """libyaml's parser and composer, typing scalars with the same core schema: the same
        nodes as `_RulesYamlLoader` composes, about ten times faster. Its composer recurses in
        C, so it only runs on documents whose depth `_within_limits` has checked."""

        yaml_implicit_resolvers = _RulesYamlLoader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.resolver.BaseResolver.__init__(self)

    _FastYamlLoader = _LibyamlRulesLoader


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
    return _Node(value, line, text=node.value, style=node.style or None)  # libyaml's plain style is ""


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
    if key == "<<" and not key_node.style:
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


def _compose(text: str, scope: _Scope, into: _Collected) -> _Node | None:
    try:
        if not _within_limits(text, scope, into):
            return None
        root = yaml.compose(text, Loader=_FastYamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if getattr(exc, "problem", None) == "exceeded maximum nesting depth" and mark is not None:
            _too_deep(scope, mark.line + 1)   # libyaml's own limit (1000 levels), met before an event came
        else:
            scope.error(*_yaml_syntax_error(_worded(text, exc)))
        return None
    return None if root is None else _build(root, scope, {})


def _too_deep(scope: _Scope, line: int) -> None:
    scope.error(line, f"the YAML nests more than {MAX_DEPTH} levels deep here; rules need a few"
                " (a payload starts 5 levels in): flatten it")


_REWORD_CHARS = 65_536   # what PyYAML's pure-Python parser reads again, at most (about 0.3 s)


def _worded(text: str, exc: yaml.YAMLError) -> yaml.YAMLError:
    """PyYAML's own parser words a syntax error more exactly than libyaml ("expected ',' or '}',
    but got ':'" for "did not find expected ',' or '}'"): its error when it finds one on the same
    line in the text up to there, else libyaml's. Its events come without recursion, and the
    text it reads is bounded (its scanner is slow, and quadratic in the nesting of [ and {)."""
    mark = getattr(exc, "problem_mark", None)
    if _FastYamlLoader is _RulesYamlLoader or mark is None or mark.index > _REWORD_CHARS:
        return exc
    head = text[: mark.index + 500]
    try:
        for _event in yaml.parse(head, Loader=_RulesYamlLoader):
            pass
    except yaml.MarkedYAMLError as own:
        seen = own.problem_mark
        if seen is not None and seen.line == mark.line and (seen.index < len(head) or len(head) == len(text)):
            return own
    return exc


def _within_limits(text: str, scope: _Scope, into: _Collected) -> bool:
    """Walks the parser's events, without recursion, before anything recursive (a composer,
    `_build`, `_Node.plain`) sees the document; False, with the line reported, when it nests
    deeper than `MAX_DEPTH` or takes the directory past `MAX_VALUES` values, an alias counting
    as the values it stands for (so a "billion laughs" stops at its first big alias)."""
    opened: list[tuple[str | None, int]] = []   # per open list or mapping: its anchor, `into.values` at its start
    sizes: dict[str, int] = {}                  # anchor -> the values it stands for
    for event in yaml.parse(text, Loader=_FastYamlLoader):
        kind = type(event)
        if kind is yaml.ScalarEvent:
            count = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif kind is yaml.AliasEvent:
            count = sizes.get(event.anchor, 1)   # unknown or still open: the composer reports it
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if len(opened) == MAX_DEPTH:
                _too_deep(scope, event.start_mark.line + 1)
                return False
            opened.append((event.anchor, into.values))
            count = 1
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            anchor, start = opened.pop()
            if anchor is not None:
                sizes[anchor] = into.values - start
            continue
        else:
            continue   # stream and document boundaries
        into.values += count
        if into.values > MAX_VALUES:
            line = event.start_mark.line + 1
            if kind is yaml.AliasEvent and count > 1:
                scope.error(line, f"the alias *{event.anchor} stands for {count:,} values, more than a rules"
                            f" directory may hold ({MAX_VALUES:,}, aliases counted expanded): write out what it"
                            " should repeat")
            else:
                scope.error(line, f"the rules directory holds more than {MAX_VALUES:,} YAML values (scalars,"
                            " lists and mappings) from here on: keep payloads small and split very large"
                            " rule sets into several directories")
            return False
    return True


# --------------------------------------------------------------------------- errors and values


class _TooManyErrors(Exception):
    """`MAX_ERRORS` were reported: reading stops (a mistake repeated a million times would take
    minutes to report, and nobody reads past the first screenful)."""


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where errors go and how they are labelled: one file, maybe one rule and a part of it."""

    file: str
    errors: list[RuleError]
    rule_id: str | None = None
    prefix: str = ""

    def error(self, line: int, message: str) -> None:
        self.errors.append(RuleError(self.file, line, self.prefix + message, self.rule_id))
        if len(self.errors) >= MAX_ERRORS:
            raise _TooManyErrors

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


def _character(char: str) -> str:
    """`U+202E RIGHT-TO-LEFT OVERRIDE`: how an invisible character is named in messages."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def _invisible(text: str) -> str:
    """A hint for a name that does not match its pattern because it holds an invisible character."""
    found = _ZERO_WIDTH.search(text)
    return "" if found is None else f" (it holds the invisible {_character(found[0])} at column {found.start() + 1})"


def _visible(scope: _Scope, key: str, node: _Node, text: str, start: int = 0, end: int | None = None) -> bool:
    """False, after reporting it, when a name or an expression (`text[start:end]`) holds a
    zero-width character."""
    found = _ZERO_WIDTH.search(text, start, len(text) if end is None else end)
    if found is not None:
        scope.error(node.line, f"'{key}' (column {found.start() + 1}): the invisible character"
                    f" {_character(found[0])} makes it differ from what it looks like: delete it")
    return found is None


def _string(scope: _Scope, key: str, node: _Node) -> str | None:
    """Text that names something (an event type, a channel, an id): no zero-width characters."""
    if not isinstance(node.value, str) or not node.value.strip():
        scope.error(node.line, f"'{key}' must be text, not {_describe(node.value)}")
        return None
    return node.value if _visible(scope, key, node, node.value) else None


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
        scope.error(line, "a name uses lower-case letters, digits and _, and does not start with a digit"
                    + _invisible(name))
    elif (problem := reserved_name_problem(name)) is not None:
        scope.error(line, problem)


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
        return value if _expression_ok(scope, key, node, value, template=False) else None
    scope.error(node.line, f"'{key}' must be an expression such as `lifetime_spend >= 5000`, not {_describe(value)}"
                " (quote it if it contains ': ' or starts with '{' or '[')")
    return None


def _expression_ok(scope: _Scope, key: str, node: _Node, text: str, template: bool) -> bool:
    """Whether the text of an expression or template may go to the compiler: bounded, so that
    compiling it takes no time, and with no zero-width character where it is code (all of an
    expression, the `{...}` of a template)."""
    if len(text) > MAX_EXPRESSION_CHARS:
        scope.error(node.line, f"'{key}' is {len(text):,} characters long, more than the {MAX_EXPRESSION_CHARS:,}"
                    " an expression or template may have: split the condition, or move the data out of the rule")
        return False
    if not template:
        return _visible(scope, key, node, text)
    codes = _TEMPLATE_EXPRESSION.finditer(text)
    return all(_visible(scope, key, node, text, code.start(), code.end()) for code in codes)


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
        elif _expression_ok(scope, f"{key}.{prop}", value, str(value.value), template=True):
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
    # the values of its keys are templates (nested ones are passed on as they are)
    checked = [_expression_ok(scope, f"{key}.{name}", value, value.value, template=True)
               for name, value in node.value.items() if isinstance(value.value, str)]
    return node.plain() if all(checked) else None


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
    if None in steps:
        return None
    # each wait is bounded, and so is their sum: a deadline stays inside datetime's range
    span = sum(step.after for step in steps)  # type: ignore[union-attr]
    if span > MAX_DURATION_MS:
        scope.error(node.line, f"the steps wait {format_duration(span)} in all; a series may span at most"
                    f" {format_duration(MAX_DURATION_MS)} (10 years)")
        return None
    return tuple(steps)  # type: ignore[arg-type]


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
    # what counts against the directory's limits, and whether one was passed
    bytes: int = 0
    values: int = 0
    rule_count: int = 0
    aggregate_count: int = 0
    full: bool = False

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
    text = _read_text(path, scope, into)
    if text is None or not _printable(text, scope):
        return
    root = _compose(text, scope, into)
    if root is None:
        return  # a syntax error or a limit passed (reported) or an empty file (nothing to add)
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


def _read_text(path: Path, scope: _Scope, into: _Collected) -> str | None:
    """The file's text, read only when it and the directory stay within their sizes."""
    too_big = f"a rules file may have at most {MAX_FILE_BYTES:,} bytes ({MAX_FILE_BYTES // 2**20} MiB): split it"
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            scope.error(1, f"the file has {size:,} bytes; {too_big}")
            return None
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)   # it may have grown since
    except OSError as exc:
        scope.error(0, f"cannot read the file: {exc.strerror or exc}")
        return None
    if len(data) > MAX_FILE_BYTES:
        scope.error(1, f"the file has more than {MAX_FILE_BYTES:,} bytes; {too_big}")
        return None
    into.bytes += len(data)
    if into.bytes > MAX_DIRECTORY_BYTES:
        into.full = True
        scope.error(1, f"with this file the rules files hold more than {MAX_DIRECTORY_BYTES:,} bytes"
                    f" ({MAX_DIRECTORY_BYTES // 2**20} MiB), the most a rules directory may hold:"
                    " split the rules into several directories")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        scope.error(data[: exc.start].count(b"\n") + 1, "the file is not UTF-8 text")
        return None


def _printable(text: str, scope: _Scope) -> bool:
    """False, after reporting each one at its line and column, when the text holds a character
    of `_HIDDEN_CHARACTER`."""
    clean = True
    line, line_start, scanned = 1, 0, 0
    for found in _HIDDEN_CHARACTER.finditer(text):
        at = found.start()
        # line breaks as YAML counts them: \n, \r\n or a lone \r (none of them is a hidden character)
        breaks = text.count("\n", scanned, at) + text.count("\r", scanned, at) - text.count("\r\n", scanned, at)
        if breaks:
            line += breaks
            line_start = max(text.rfind("\n", scanned, at), text.rfind("\r", scanned, at)) + 1
        scanned = at
        char = found[0]
        if _BIDI_CONTROL.match(char):
            why = "it makes the text read differently from what it does (Trojan Source, CVE-2021-42574)"
        elif char in "\u2028\u2029":
            why = "YAML counts it as a line break where editors show none"
        elif char == "\ufeff":
            why = "a byte order mark belongs only at the start of the file"
        else:
            why = "a rules file is plain text, with tabs and line breaks as its only control characters"
        scope.error(line, f"invisible character {_character(char)} at column {at - line_start + 1}: {why}; delete it")
        clean = False
    return clean


def _read_aggregates(scope: _Scope, node: _Node, into: _Collected) -> None:
    if not node.is_map:
        scope.error(node.line, f"'aggregates' must be a mapping of name: {_AGGREGATE_EXAMPLES['count']}")
        return
    for name, value in node.value.items():
        line = node.key_lines[name]
        into.aggregate_count += 1
        if into.aggregate_count > MAX_AGGREGATES:
            into.full = True
            scope.error(line, f"more than {MAX_AGGREGATES} aggregates in the rules directory, the most it may"
                        " have (every customer's state holds each one): remove those no rule reads")
            return
        aggregate = _aggregate(scope.within(f"aggregate '{name}': "), name, line, value)
        into.add_aggregate(scope, name, line, aggregate)


def _read_rules(scope: _Scope, node: _Node, into: _Collected) -> None:
    if not isinstance(node.value, list):
        scope.error(node.line, "'rules' must be a list: start each rule with '- id: …'")
        return
    for item in node.value:
        into.rule_count += 1
        if into.rule_count > MAX_RULES:
            into.full = True
            scope.error(item.line, f"more than {MAX_RULES:,} rules in the rules directory, the most it may have:"
                        " split them into several directories, each run by its own engine")
            return
        rule_id, rule = _rule(scope, item)
        into.add_rule(scope, item.line, rule_id, rule)


def _rules_files(path: Path, shown: str) -> list[tuple[Path, str]]:
    """(path, name in messages) of each rules file: a directory's *.yaml/*.yml by name, not
    recursively, or the one file given."""
    try:
        if path.is_file():
            return [(path, shown)]
        if not path.is_dir():
            raise RulesInvalid([RuleError(shown, 0, "no such rules directory or file")])
        names = sorted(entry.name for entry in path.iterdir() if entry.suffix in RULES_SUFFIXES and entry.is_file())
    except OSError as exc:
        raise RulesInvalid([RuleError(shown, 0, f"cannot read the rules directory: {exc.strerror or exc}")]) from None
    if not names:
        patterns = ", ".join("*" + suffix for suffix in RULES_SUFFIXES)
        raise RulesInvalid([RuleError(shown, 0, f"no rules files ({patterns}) in this directory")])
    if len(names) > MAX_FILES:
        raise RulesInvalid([RuleError(os.path.join(shown, names[MAX_FILES]), 1,
                                      f"{len(names)} rules files in {shown}, more than the {MAX_FILES} a rules"
                                      " directory may have: merge some")])
    return [(path / name, os.path.join(shown, name)) for name in names]


def load_rules(path: str | Path) -> RuleSet:
    """Reads and validates a rules directory (or one file) as a whole.

    Raises `RulesInvalid` with every error found (up to `MAX_ERRORS`), sorted by file and line,
    so one run of `triggers validate` lists them all; a reload that raises leaves the running
    rules in place. It raises nothing else, whatever the files hold: an unexpected failure
    becomes an error of the file being read.
    """
    collected = _Collected()
    limit_reached = False
    for file_path, name in _rules_files(Path(path), os.fspath(path)):
        try:
            _read_file(file_path, name, collected)
        except _TooManyErrors:
            limit_reached = True
            break
        except Exception as exc:  # a bug, or the interpreter's own limits: never a traceback for a rules file
            collected.errors.append(RuleError(name, 1, f"cannot read this file ({exception_text(exc)}):"
                                              " please report this as a bug of the rules loader"))
        if collected.full:
            break   # a directory-wide limit was passed: reading on would only cost time
    if collected.errors:
        errors = sorted(collected.errors, key=lambda error: (error.file, error.line))
        raise RulesInvalid(errors + [error_limit(errors[-1])] if limit_reached else errors)
    return RuleSet(
        aggregates=collected.aggregates,
        rules=tuple(collected.rules),
        policy=collected.policy,
        files=tuple(collected.files),
    )
