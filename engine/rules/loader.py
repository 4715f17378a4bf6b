"""Rules files (SPEC §3) -> a validated `RuleSet`, or `RulesInvalid` listing every mistake found.

A directory's *.yaml/*.yml files are read in name order and added up: names are claimed in file
order, so a duplicate aggregate, rule id or second policy is reported at its later place, naming
the earlier one. Each file is bounded (`limits`), composed with its lines (`yaml_lines`) and its
sections read (`schema`).

Hostile files (SPEC §6) are rejected as errors like any other, at their file and line, before
they cost time or memory (`engine.rules.limits`). Whatever a file holds, `load_rules` raises
nothing but `RulesInvalid`, with at most `MAX_ERRORS` errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.rules import schema
from engine.rules.digest import ContentHash
from engine.rules.errors import RuleError, RulesInvalid, error_limit, exception_text
from engine.rules.files import RULES_SUFFIXES, rules_files
from engine.rules.limits import MAX_FILES, Tally, decode_text, printable, read_bytes
from engine.rules.model import Aggregate, LeftOut, Policy, Rule, RuleSet, Source, TimeSettings
from engine.rules.scope import Scope, TooManyErrors
from engine.rules.values import alternatives, check_keys, describe
from engine.rules.yaml_lines import Node, compose

__all__ = ["RULES_SUFFIXES", "PartialRules", "load_rules", "read_rules"]


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
    time: TimeSettings | None = None
    time_at: Source | None = None
    tally: Tally = field(default_factory=Tally)   # what counts against the directory's limits
    content: ContentHash = field(default_factory=ContentHash)   # of the bytes read (engine.rules.digest)

    def add_aggregate(self, scope: Scope, name: str, line: int, aggregate: Aggregate | None) -> None:
        if name in self.aggregate_at:
            scope.error(line, f"aggregate '{name}' is already defined at {self.aggregate_at[name]}")
            return
        self.aggregate_at[name] = scope.source(line)
        if aggregate is not None:
            self.aggregates[name] = aggregate

    def add_rule(self, scope: Scope, line: int, rule_id: str | None, rule: Rule | None) -> None:
        if rule_id is not None and rule_id in self.rule_at:
            first = self.rule_at[rule_id]
            scope.for_rule(rule_id).error(line, f"duplicate rule id '{rule_id}': already used at {first}")
            return
        if rule_id is not None:
            self.rule_at[rule_id] = scope.source(line)
        if rule is not None:
            self.rules.append(rule)

    def add_policy(self, scope: Scope, line: int, node: Node) -> None:
        policy = schema.policy(scope, line, node)  # validated even when it is a second one: fix both at once
        if self.policy_at is not None:
            scope.error(
                line, f"a second policy: there is one at {self.policy_at} already; keep one per rules directory"
            )
            return
        self.policy_at = scope.source(line)
        self.policy = policy


    def add_time(self, scope: Scope, line: int, node: Node) -> None:
        time = schema.time_settings(scope, line, node)
        if self.time_at is not None:
            scope.error(line, f"a second time section: there is one at {self.time_at} already; keep one per rules"
                        " directory")
            return
        self.time_at = scope.source(line)
        self.time = time


_SECTIONS = ("aggregates", "rules", "policy", "time")


def _read_file(path: Path, name: str, into: _Collected) -> None:
    scope = Scope(name, into.errors)
    into.files.append(name)
    data = read_bytes(path, scope, into.tally)
    into.content.add(path.name, b"" if data is None else data)   # a file not read is an error: it hashes as empty
    text = None if data is None else decode_text(data, scope)
    if text is None or not printable(text, scope):
        return
    root = compose(text, scope, into.tally)
    if root is None:
        return  # a syntax error or a limit passed (reported) or an empty file (nothing to add)
    if not root.is_map:
        expected = alternatives(_SECTIONS)
        scope.error(root.line, f"a rules file is a mapping with {expected}, not {describe(root.value)}")
        return
    check_keys(scope, root, _SECTIONS, " at the top level")
    sections = {key: node for key, node in root.value.items() if key in _SECTIONS and node.value is not None}
    if "aggregates" in sections:
        _read_aggregates(scope, sections["aggregates"], into)
    if "rules" in sections:
        _read_rules(scope, sections["rules"], into)
    if "policy" in sections:
        into.add_policy(scope, root.key_lines["policy"], sections["policy"])
    if "time" in sections:
        into.add_time(scope, root.key_lines["time"], sections["time"])


def _read_aggregates(scope: Scope, node: Node, into: _Collected) -> None:
    if not node.is_map:
        scope.error(node.line, f"'aggregates' must be a mapping of name: {schema.AGGREGATE_EXAMPLES['count']}")
        return
    for name, value in node.value.items():
        line = node.key_lines[name]
        if not into.tally.count_aggregate(scope, line):
            return
        aggregate = schema.aggregate(scope.within(f"aggregate '{name}': "), name, line, value)
        into.add_aggregate(scope, name, line, aggregate)


def _read_rules(scope: Scope, node: Node, into: _Collected) -> None:
    if not isinstance(node.value, list):
        scope.error(node.line, "'rules' must be a list: start each rule with '- id: …'")
        return
    for item in node.value:
        if not into.tally.count_rule(scope, item.line):
            return
        rule_id, rule = schema.rule(scope, item)
        into.add_rule(scope, item.line, rule_id, rule)


def _rules_files(path: Path, shown: str) -> list[tuple[Path, str]]:
    """(path, name in messages) of each rules file (engine.rules.files), or `RulesInvalid`."""
    try:
        if path.is_file():
            return [(path, shown)]
        if not path.is_dir():
            raise RulesInvalid([RuleError(shown, 0, "no such rules directory or file")])
        names = [f.name for f in rules_files(path)]
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


@dataclass(frozen=True)
class PartialRules:
    """What a directory's files add up to when some of it is invalid: the `RuleSet` of what did
    validate (a rule or aggregate with an error is left out), the errors (sorted by file and line,
    the limit's own last), and what was declared though left out, so that compiling the rest can
    tell an error of its own from one the left-out part causes (engine.rules.check)."""

    ruleset: RuleSet
    errors: list[RuleError]
    left_out: LeftOut      # the aggregates and policy declared with an error, by name
    limit_reached: bool    # MAX_ERRORS: the reading stopped


def load_rules(path: str | Path) -> RuleSet:
    """Reads and validates a rules directory (or one file) as a whole.

    Raises `RulesInvalid` with every error found (up to `MAX_ERRORS`), sorted by file and line,
    so one run of `triggers validate` lists them all; a reload that raises leaves the running
    rules in place. It raises nothing else, whatever the files hold: an unexpected failure
    becomes an error of the file being read.
    """
    partial = read_rules(path)
    if partial.errors:
        raise RulesInvalid(partial.errors)
    return partial.ruleset


def read_rules(path: str | Path) -> PartialRules:
    """`load_rules` without raising for the errors of the files: they come with what validated.
    Raises `RulesInvalid` only when there is nothing to read (no such directory, no files)."""
    collected = _Collected()
    limit_reached = False
    for file_path, name in _rules_files(Path(path), os.fspath(path)):
        try:
            _read_file(file_path, name, collected)
        except TooManyErrors:
            limit_reached = True
            break
        except Exception as exc:  # a bug, or the interpreter's own limits: never a traceback for a rules file
            collected.errors.append(RuleError(name, 1, f"cannot read this file ({exception_text(exc)}):"
                                              " please report this as a bug of the rules loader"))
        if collected.tally.full:
            break   # a directory-wide limit was passed: reading on would only cost time
    errors = sorted(collected.errors, key=lambda error: (error.file, error.line))
    if limit_reached and errors:
        errors.append(error_limit(errors[-1]))
    ruleset = RuleSet(
        aggregates=collected.aggregates,
        rules=tuple(collected.rules),
        policy=collected.policy,
        files=tuple(collected.files),
        time=collected.time,
        digest=collected.content.shown(),
    )
    left_out = LeftOut(frozenset(collected.aggregate_at) - frozenset(collected.aggregates),
                       collected.policy_at is not None and collected.policy is None)
    return PartialRules(ruleset, errors, left_out, limit_reached)

