"""An `if:` expression as the rules read it at the explain time: its value, each top-level
`and`/`or` part with its value, and for comparisons the values of their operands, each
compiled on its own with the rules' expression compiler (anything unusual: the whole
expression's value only). This is the condition *now*, for the reader; what it was when the
rule ran is told by the evaluator (engine.offline.explain.trace).
"""

from __future__ import annotations

import ast
from typing import Any

from engine.core.times import format_ts
from engine.events.model import Event
from engine.offline.explain.model import ConditionCheck, ConditionPart, Operand
from engine.offline.explain.render import fmt
from engine.rules.aggregates import decayed_top
from engine.rules.compiler import CompiledRules
from engine.rules.expr import Env, compile_expr
from engine.state.customer import CustomerState


def condition_env(rules: CompiledRules) -> Env:
    """The names `if:` expressions compile against, as the rules compiler builds them."""
    aggs = rules.ruleset.aggregates
    return Env(aggregates=rules.readers,
               tops={a.name: decayed_top(a) for a in aggs.values() if a.kind == "decayed_count"})



def check_condition(text: str, env: Env, st: CustomerState, ev: Event | None, now: int) -> ConditionCheck:
    """Evaluate an `if:` expression and, separately, its top-level and/or parts and the
    operands of comparisons. Whatever cannot be split is shown as the whole expression."""
    compiled = compile_expr(text, env)
    whole = compiled.fn(st, ev, now)
    reads_event = bool(compiled.event_props) or "event." in text
    joiner: str | None = None
    parts: list[ConditionPart] = []
    try:
        stripped = text.strip()
        body = ast.parse(stripped, mode="eval").body
        nodes = [body]
        if isinstance(body, ast.BoolOp):
            joiner = "and" if isinstance(body.op, ast.And) else "or"
            nodes = list(body.values)
        for node in nodes:
            seg = ast.get_source_segment(stripped, node)
            if seg is None:
                raise ValueError("no source")
            value = _evaluate(seg, env, st, ev, now)
            operands: list[Operand] = []
            if isinstance(node, ast.Compare):
                for sub in (node.left, *node.comparators):
                    sub_text = ast.get_source_segment(stripped, sub)
                    if sub_text is None or _is_constant(sub):
                        continue
                    operands.append(Operand(sub_text, _evaluate(sub_text, env, st, ev, now)))
            parts.append(ConditionPart(seg, bool(value), value, operands))
    except Exception:   # unusual syntax or a compiler refusing a piece: the whole value only
        joiner = None
        parts = [ConditionPart(text.strip(), bool(whole), whole, [])]
    note = None
    if len(parts) > 1:
        combined = all(x.holds for x in parts) if joiner == "and" else any(x.holds for x in parts)
        if combined != bool(whole):
            note = ("the parts say " + fmt(combined) + ", the whole expression is " + fmt(bool(whole)) +
                    ": a missing or ill-typed value makes the engine treat the whole `if:` as false")
    return ConditionCheck(text.strip(), bool(whole), whole, joiner, parts,
                          ev.event_id if ev is not None else None, format_ts(now), note, reads_event)


def _evaluate(text: str, env: Env, st: CustomerState, ev: Event | None, now: int) -> Any:
    return compile_expr(text, env).fn(st, ev, now)


def _is_constant(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True
