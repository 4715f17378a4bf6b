"""YAML with lines: a rules file composed into `Node`s that keep the line of every key and value,
with scalars typed by YAML 1.2's core schema.

Composed by libyaml when PyYAML has it (else by PyYAML's own composer) and turned into values
here, so that every key and value keeps its line for error messages, and so that YAML 1.1's
surprises never reach a rule: `on:` is the key "on" (not True), `no` is an event name (not
False) and an unquoted `09:00` is text (not 540 sexagesimal minutes). Aliases share one built
node, merge keys and tags other than the core schema's are errors, and nothing recursive runs
before `limits.within_limits` has walked the parser's events.

Why not ruamel.yaml (issue 10 asked: use it if the error messages stay as good and hostile files
stay bounded). Measured with ruamel.yaml 0.19.1 behind this module's `compose` (its parser's
events for the limits, its composer's nodes for `_build`, its YAML 1.2 resolver) against PyYAML
6 with libyaml, on a loaded 2-core machine: `load_and_compile` in three interleaved rounds, best
(medians), and `triggers validate` of bench/hostile_rules.py's 20,000-rule file (3 runs):

                          rules/ (9 rules)    1,000 rules (bench/rulegen)   20,000-rule file
    PyYAML + libyaml       4.2 ms (5-16)        288 ms (586-747)              0.6-1.5 s
    ruamel, pure Python   34 ms (62-79)       1,763 ms (2,539-3,545)         10.7-24 s
    ruamel, C (clibz)      4.9 ms (11-18)       295 ms (456-927)              1.2-1.9 s
    PyYAML, pure Python   23 ms (62-83)       1,541 ms (3,068-3,292)         10.7-15 s

- Pure ruamel (the one that keeps a line and column on every node) words every error as we do
  (its parser is of PyYAML's lineage: all of tests/unit/test_loader.py, test_hostile_rules.py
  and test_cli.py pass once their 5 s bound is lifted), and every hostile file of
  bench/hostile_rules.py stays bounded in memory (26-31 MiB peak, as with PyYAML), but it is 6
  to 18 times slower than libyaml: six hostile-file tests miss their 5 s bound.
- ruamel's C parser is as fast, but it is an older libyaml: it rejects the valid `t: 12:30`
  inside a flow mapping (test_yaml_11_booleans_and_sexagesimals_stay_text), words syntax errors
  as libyaml does, and its nodes carry the same marks as PyYAML's.
- PyYAML's nodes already carry a line and column (`start_mark`) and `RulesYamlLoader` below
  types scalars by YAML 1.2's core schema: ruamel would add a dependency and gain nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.rules.limits import Tally, too_deep, within_limits
from engine.rules.scope import Scope

__all__ = ["FastYamlLoader", "Node", "RulesYamlLoader", "compose"]


class RulesYamlLoader(yaml.SafeLoader):
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
    RulesYamlLoader.add_implicit_resolver(_tag, re.compile(rf"^(?:{_pattern})$"), _first)

FastYamlLoader: type = RulesYamlLoader
if yaml.__with_libyaml__:

    class _LibyamlRulesLoader(yaml.cyaml.CParser, yaml.resolver.BaseResolver):
        """libyaml's parser and composer, typing scalars with the same core schema: the same
        nodes as `RulesYamlLoader` composes, about ten times faster. Its composer recurses in
        C, so it only runs on documents whose depth `within_limits` has checked."""

        yaml_implicit_resolvers = RulesYamlLoader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.resolver.BaseResolver.__init__(self)

    FastYamlLoader = _LibyamlRulesLoader


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
class Node:
    """A YAML value with the 1-based line it starts on.

    `value` is a str, int, float, bool or None, a list of `Node`, or a dict of `Node` by key
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


_BUILDING = Node(None, 0)  # memo marker: an alias pointing into its own anchor


def _build(node: yaml.Node, scope: Scope, memo: dict[int, Node]) -> Node:
    """Turns composed YAML into `Node`s; aliases share one result, so `&a`/`*a` bombs stay small."""
    done = memo.get(id(node))
    if done is _BUILDING:
        scope.error(node.start_mark.line + 1, "an alias refers to its own anchor (a recursive structure)")
        return Node(None, node.start_mark.line + 1)
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


def _build_scalar(node: yaml.ScalarNode, scope: Scope) -> Node:
    line = node.start_mark.line + 1
    convert = _SCALARS.get(node.tag)
    if convert is None:
        scope.error(line, f"unsupported YAML tag {node.tag!r}: write plain text, numbers or true/false")
        return Node(None, line)
    try:
        value = convert(node.value)
    except ValueError:
        scope.error(line, f"cannot read {node.value!r} as {node.tag.rsplit(':', 1)[-1]}")
        value = None
    return Node(value, line, text=node.value, style=node.style or None)  # libyaml's plain style is ""


def _build_sequence(node: yaml.SequenceNode, scope: Scope, memo: dict[int, Node]) -> Node:
    line = node.start_mark.line + 1
    if node.tag != "tag:yaml.org,2002:seq":
        scope.error(line, f"unsupported YAML tag {node.tag!r}: write a plain list")
    return Node([_build(item, scope, memo) for item in node.value], line)


def _build_mapping(node: yaml.MappingNode, scope: Scope, memo: dict[int, Node]) -> Node:
    built = Node({}, node.start_mark.line + 1)
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
            value = Node(None, key_line)
        built.value[key] = value
        built.key_lines[key] = key_line
    return built


def _mapping_key(key_node: yaml.Node, line: int, mapping: Node, scope: Scope) -> str | None:
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


def compose(text: str, scope: Scope, tally: Tally) -> Node | None:
    """The document as `Node`s, or None after reporting a syntax error or a limit passed (or for
    an empty document, which adds nothing)."""
    try:
        if not within_limits(yaml.parse(text, Loader=FastYamlLoader), scope, tally):
            return None
        root = yaml.compose(text, Loader=FastYamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if getattr(exc, "problem", None) == "exceeded maximum nesting depth" and mark is not None:
            too_deep(scope, mark.line + 1)   # libyaml's own limit (1000 levels), met before an event came
        else:
            scope.error(*_yaml_syntax_error(_worded(text, exc)))
        return None
    return None if root is None else _build(root, scope, {})


_REWORD_CHARS = 65_536   # what PyYAML's pure-Python parser reads again, at most (about 0.3 s)


def _worded(text: str, exc: yaml.YAMLError) -> yaml.YAMLError:
    """PyYAML's own parser words a syntax error more exactly than libyaml ("expected ',' or '}',
    but got ':'" for "did not find expected ',' or '}'"): its error when it finds one on the same
    line in the text up to there, else libyaml's. Its events come without recursion, and the
    text it reads is bounded (its scanner is slow, and quadratic in the nesting of [ and {)."""
    mark = getattr(exc, "problem_mark", None)
    if FastYamlLoader is RulesYamlLoader or mark is None or mark.index > _REWORD_CHARS:
        return exc
    head = text[: mark.index + 500]
    try:
        for _event in yaml.parse(head, Loader=RulesYamlLoader):
            pass
    except yaml.MarkedYAMLError as own:
        seen = own.problem_mark
        if seen is not None and seen.line == mark.line and (seen.index < len(head) or len(head) == len(text)):
            return own
    return exc

