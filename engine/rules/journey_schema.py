"""What a `type: journey` rule may say (SPEC §3a): its keys, its steps, and its graph.

Each step is read into a `JourneyStep` of exactly one kind; then the graph is checked as a
whole, every problem at the line that causes it: unknown targets (with did-you-mean), steps no
path reaches, loops that could run without a wait (a journey must never spin), split shares
that do not sum to 100%.
"""

from __future__ import annotations

import re
from typing import Any

from engine.core.times import parse_duration
from engine.rules.errors import did_you_mean
from engine.rules.model import END, Journey, JourneyStep, Reenter, StepKind, Unless
from engine.rules.scope import Scope
from engine.rules.values import (
    Table,
    alternatives,
    check_keys,
    describe,
    duration,
    events,
    read,
    read_mapping,
    string,
)
from engine.rules.yaml_lines import Node

__all__ = ["JOURNEY_KEYS", "journey"]

_STEP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")
MAX_STEPS = 100    # a journey is a small graph: Segment allows 25 steps
JOURNEY_KEYS = ("exit_on", "reenter", "if_suppressed", "steps")
_STEP_KEYS = ("id", "then", "next", "wait", "yes", "no", "if", "split")
_KIND_KEYS = ("then", "wait", "if", "split")
_ALLOWED = {   # besides `id` and the kind's own key
    StepKind.SEND: ("next",),
    StepKind.DELAY: ("next",),
    StepKind.WAIT: ("yes", "no"),
    StepKind.CONDITION: ("yes", "no"),
    StepKind.SPLIT: (),
}
_EXAMPLE = "{id: hello, then: {action: welcome-1, channel: email}}"
_WAIT_EXAMPLE = "{event: email_clicked, match: {campaign: welcome-1}, within: 2d}"


def journey(scope: Scope, node: Node, readers: dict[str, Any]) -> Journey | None:
    """The journey of the rule mapping `node`, or None after reporting every mistake in it.

    `readers`: the rule schema's readers this module shares (`action`, `condition`,
    `condition_line`, `match`), so a step's `then` and `if` read exactly as a rule's do."""
    mark = scope.mark()
    given = node.value
    exit_on = read(scope, node, "exit_on", events) or ()
    reenter, after = _reenter(scope, given.get("reenter"))
    continue_if_suppressed = _if_suppressed(scope, given.get("if_suppressed"))
    steps_node = given.get("steps")
    steps: list[JourneyStep] = []
    if steps_node is None or steps_node.value is None:
        scope.error(node.line, f"a journey needs 'steps', a list of steps, each like {_EXAMPLE}")
    elif not isinstance(steps_node.value, list) or not steps_node.value:
        scope.error(steps_node.line, f"'steps' must be a list of steps, each like {_EXAMPLE}")
    elif len(steps_node.value) > MAX_STEPS:
        scope.error(steps_node.line, f"a journey has at most {MAX_STEPS} steps, not {len(steps_node.value)}:"
                    " split it into several journeys")
    else:
        read_steps = [_step(scope, item, readers) for item in steps_node.value]
        if None not in read_steps:
            steps = [s for s in read_steps if s is not None]
            _check_graph(scope, steps)
    if scope.failed_since(mark):
        return None
    return Journey(tuple(steps), exit_on, reenter, after, continue_if_suppressed)


def _reenter(scope: Scope, node: Node | None) -> tuple[Reenter, int]:
    if node is None or node.value is None:
        return Reenter.AFTER_END, 0
    choices = ("after_end", "never", "restart")
    if node.value in choices:
        return Reenter(node.value), 0
    try:
        return Reenter.AFTER, parse_duration(node.value)
    except ValueError:
        word = node.value if isinstance(node.value, str) else node.text
        hint = did_you_mean(word, choices) or ""
        scope.error(node.line, f"unknown 'reenter' value '{word}'{hint}: use {alternatives(choices)} or a duration"
                    " such as 30d")
        return Reenter.AFTER_END, 0


def _if_suppressed(scope: Scope, node: Node | None) -> bool:
    if node is None or node.value is None:
        return False
    if node.value in ("end", "continue"):
        return node.value == "continue"
    word = node.value if isinstance(node.value, str) else node.text
    scope.error(node.line, f"unknown 'if_suppressed' value '{word}'{did_you_mean(word, ('end', 'continue'))}:"
                " use end (the default: a suppressed send ends the journey) or continue")
    return False


def _step(scope: Scope, node: Node, readers: dict[str, Any]) -> JourneyStep | None:
    if not node.is_map:
        scope.error(node.line, f"a journey step is a mapping like {_EXAMPLE}, not {describe(node.value)}")
        return None
    step_id = _step_id(scope, node)
    inner = scope.within(f"step '{step_id}': " if step_id else "step: ")
    mark = inner.mark()
    present = check_keys(inner, node, _STEP_KEYS)
    kinds = [k for k in _KIND_KEYS if k in present]
    if not kinds:
        inner.error(node.line, "a step does one thing: give it 'then' (send), 'wait' (a delay, or an event with"
                    " yes/no), 'if' (a condition with yes/no) or 'split' (shares of customers)")
        return None
    if len(kinds) > 1:
        inner.error(node.line, f"a step does one thing, this one has {alternatives(kinds)}: make them separate"
                    " steps")
        return None
    kind_key = kinds[0]
    given = node.value
    wait_node = given.get("wait")
    kind = {"then": StepKind.SEND, "if": StepKind.CONDITION, "split": StepKind.SPLIT}.get(kind_key) or (
        StepKind.WAIT if wait_node is not None and wait_node.is_map else StepKind.DELAY)
    for key in present:
        if key != "id" and key != kind_key and key not in _ALLOWED[kind]:
            inner.error(node.key_lines.get(key, node.line), f"'{key}' does not go with a {kind.value} step"
                        f"{_misfit(kind, key)}")
    fields: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key in ("next", "yes", "no"):
        if key in given and key in _ALLOWED[kind]:
            target = read(inner, node, key, string)
            if target is not None:
                fields[key] = target
                lines[key] = given[key].line
    if kind is StepKind.SEND:
        fields["then"] = read(inner, node, "then", readers["action"])
    elif kind is StepKind.DELAY:
        wait = read(inner, node, "wait", duration)
        if wait is not None and wait <= 0:
            inner.error(given["wait"].line, "'wait' must be longer than 0")
        fields["wait"] = wait or 0
    elif kind is StepKind.WAIT:
        wait_for = _wait_for(inner, wait_node, readers)
        if wait_for is not None:
            fields["wait_for"], fields["wait"] = wait_for
    elif kind is StepKind.CONDITION:
        fields["condition"] = read(inner, node, "if", readers["condition"])
        fields["condition_line"] = readers["condition_line"](given["if"])
    else:
        split = _split(inner, given["split"])
        if split is not None:
            fields["split"] = tuple((target, share) for target, share, _ in split)
            lines.update({f"split.{target}": line for target, _, line in split})
    if inner.failed_since(mark) or step_id is None:
        return None
    return JourneyStep(id=step_id, kind=kind, source=scope.source(node.line), target_lines=lines, **fields)


def _misfit(kind: StepKind, key: str) -> str:
    if key in ("yes", "no"):
        return ": only 'wait: {event: …}' and 'if' steps branch (yes: the event came / the condition holds)"
    if key == "next":
        return ": a branching step goes on through 'yes' and 'no', a split through its shares"
    return ""


def _step_id(scope: Scope, node: Node) -> str | None:
    if "id" not in node.value:
        scope.error(node.line, "a journey step needs an 'id', e.g. id: hello (the branches name steps by id)")
        return None
    step_id = read(scope, node, "id", string)
    if step_id is None:
        return None
    if not _STEP_ID.fullmatch(step_id):
        scope.error(node.value["id"].line, f"step id '{step_id}': use letters, digits, '_', '.' and '-', starting"
                    " with a letter or digit")
        return None
    if step_id == END:
        scope.error(node.value["id"].line, f"'{END}' is the target that ends the journey: name the step otherwise")
        return None
    return step_id


def _wait_for(scope: Scope, node: Node, readers: dict[str, Any]) -> tuple[Unless, int] | None:
    table: Table = {"event": ("events", events), "match": ("match", readers["match"]), "within": ("within", duration)}
    fields = read_mapping(scope, node, "wait", _WAIT_EXAMPLE, table, ("event", "within"))
    if fields is None:
        return None
    within = fields.pop("within")
    if within <= 0:
        scope.error(node.value["within"].line, "'wait.within' must be longer than 0")
        return None
    return Unless(source=scope.source(node.line), **fields), within


def _split(scope: Scope, node: Node) -> list[tuple[str, float, int]] | None:
    """(target, share, line) per entry; the shares must sum to 100%."""
    example = "{a: 50%, b: 50%}"
    if not node.is_map or not node.value:
        scope.error(node.line, f"'split' must be a mapping of step ids to shares, like {example}")
        return None
    out = []
    for target, value in node.value.items():
        share = _share(value.value)
        if share is None or not 0 < share <= 1:
            scope.error(value.line, f"split share of '{target}' must be above 0% and at most 100%, like 50%,"
                        f" not {value.text!r}")
            return None
        out.append((target, share, node.key_lines[target]))
    total = sum(share for _, share, _ in out)
    if abs(total - 1) > 1e-9:
        scope.error(node.line, f"the split shares sum to {total * 100:g}%, not 100%: every customer takes"
                    " exactly one branch")
        return None
    return out


def _share(value: Any) -> float | None:
    if isinstance(value, str) and (m := _PERCENT.fullmatch(value.strip())):
        return float(m[1]) / 100
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value <= 1 else None
    return None


def successors(steps: list[JourneyStep] | tuple[JourneyStep, ...], i: int) -> list[tuple[str, str]]:
    """(YAML key, target) of each way out of step `i`; a missing target is the following step."""
    s = steps[i]
    following = steps[i + 1].id if i + 1 < len(steps) else END
    if s.kind in (StepKind.SEND, StepKind.DELAY):
        return [("next", s.next or following)]
    if s.kind in (StepKind.WAIT, StepKind.CONDITION):
        return [("yes", s.yes or following), ("no", s.no or following)]
    return [(f"split.{target}", target) for target, _ in s.split]


def _check_graph(scope: Scope, steps: list[JourneyStep]) -> None:
    ids: dict[str, JourneyStep] = {}
    for s in steps:
        if s.id in ids:
            scope.error(s.source.line, f"step id '{s.id}' is used twice (first at line {ids[s.id].source.line}):"
                        " step ids are unique in a journey")
        else:
            ids[s.id] = s
    if len(ids) != len(steps):
        return
    index = {s.id: i for i, s in enumerate(steps)}
    bad = False
    for i, s in enumerate(steps):
        for key, target in successors(steps, i):
            if target != END and target not in index:
                line = s.target_lines.get(key, s.source.line)
                hint = did_you_mean(target, [*index, END]) or f": the targets are the step ids and '{END}'"
                scope.within(f"step '{s.id}': ").error(line, f"'{key}' names unknown step '{target}'{hint}")
                bad = True
    if bad:
        return
    reached = {0}
    todo = [0]
    while todo:
        i = todo.pop()
        for _, target in successors(steps, i):
            j = index.get(target)
            if j is not None and j not in reached:
                reached.add(j)
                todo.append(j)
    for i, s in enumerate(steps):
        if i not in reached:
            scope.error(s.source.line, f"step '{s.id}' is never reached: no path from the first step leads to it"
                        " (name it in a 'next', 'yes', 'no' or 'split', or remove it)")
    _check_spin(scope, steps, index)


def _check_spin(scope: Scope, steps: list[JourneyStep], index: dict[str, int]) -> None:
    """A loop made only of steps that do not wait would run for ever within one instant."""
    instant = [s.kind not in (StepKind.DELAY, StepKind.WAIT) for s in steps]
    state = [0] * len(steps)   # 0 new, 1 on the path, 2 done
    path: list[int] = []

    def visit(i: int) -> list[int] | None:
        state[i] = 1
        path.append(i)
        for _, target in successors(steps, i):
            j = index.get(target)
            if j is None or not instant[j]:
                continue
            if state[j] == 1:
                return path[path.index(j):] + [j]
            if state[j] == 0 and (loop := visit(j)) is not None:
                return loop
        path.pop()
        state[i] = 2
        return None

    for i in range(len(steps)):
        if instant[i] and state[i] == 0:
            loop = visit(i)
            if loop is not None:
                names = " → ".join(steps[j].id for j in loop)
                last = steps[loop[-2]]
                scope.error(last.source.line, f"the steps {names} loop without a wait, so the journey would spin:"
                            " put a 'wait' step in the loop")
                return
