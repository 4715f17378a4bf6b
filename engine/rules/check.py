"""Every error of a rules directory in one pass: structural and expression errors together.

The loader finds the structural errors (a bad duration, a key a rule type does not take); the
compiler finds the expression errors (an unknown aggregate in `if:`, a syntax error) but runs
only on a directory that loaded cleanly. A rules engineer fixing a directory would then see the
expression errors only after fixing the others. `check_rules` compiles what did validate as well,
and adds its errors. The loader says what it left out (`LeftOut`), and the compiler takes that
as known, so an error that only follows from a left-out part never arises: an `if:` reading an
aggregate whose declaration has an error, a `send_time: best` needing a policy that has one.
The rules returned, when there is no error at all, are `load_and_compile`'s, compiled from
the one reading whose errors were looked for: a file changed meanwhile cannot slip in.
"""

from __future__ import annotations

from pathlib import Path

from engine.rules.compiler import CompiledRules, compile_read, compile_rules
from engine.rules.errors import MAX_ERRORS, RuleError, RulesInvalid, error_limit
from engine.rules.loader import PartialRules, read_rules

__all__ = ["check_rules"]


def check_rules(path: str | Path) -> CompiledRules:
    """The compiled rules of `path`, or `RulesInvalid` with every error found, sorted by file and
    line (at most `MAX_ERRORS`). Raises nothing else."""
    partial = read_rules(path)   # RulesInvalid only when there is nothing to read; read once
    if not partial.errors:
        return compile_read(partial.ruleset, path)
    if partial.limit_reached:
        raise RulesInvalid(partial.errors)
    errors = partial.errors + _compile_errors(partial)
    errors.sort(key=lambda error: (error.file, error.line))
    if len(errors) >= MAX_ERRORS:
        errors = errors[:MAX_ERRORS] + [error_limit(errors[MAX_ERRORS - 1])]
    raise RulesInvalid(errors)


def _compile_errors(partial: PartialRules) -> list[RuleError]:
    try:
        compile_rules(partial.ruleset, partial.left_out)
    except RulesInvalid as e:
        return [err for err in e.errors if not err.message.startswith("stopped after")]   # the limit is ours
    except Exception:   # the structural errors are reported; the compiler's bug shows once they are fixed
        return []
    return []
