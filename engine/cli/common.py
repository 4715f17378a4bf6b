"""What the `triggers` commands share: how they load rules, read their arguments and refuse.

A command refuses by raising `CommandError`: `engine.cli.main` prints it as one line,
`triggers COMMAND: what is wrong`, and exits with its status (2: bad usage or a start that
cannot work; 1: invalid rules). Rules errors are printed here, every one as
`file:line: rule 'id': …`, then a count, the same way for every command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from engine.core.times import parse_ts
from engine.errors import EngineError
from engine.rules.compiler import CompiledRules, load_and_compile
from engine.rules.errors import MAX_ERRORS, RulesInvalid

__all__ = ["CommandError", "check_events_file", "load_rules", "parse_until", "print_rules_invalid"]


class CommandError(EngineError):
    """A command cannot do what it was asked; `exit_code` is the process's exit status."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def print_rules_invalid(error: RulesInvalid, path: str, prog: str | None = None, label: str = "",
                        stream: TextIO | None = None) -> None:
    """Every error, then `[prog: ]N error(s) in [the LABEL rules ]PATH` (`100+` once the loader stopped)."""
    stream = stream if stream is not None else sys.stderr
    for err in error.errors:
        print(err, file=stream)
    n = len(error.errors)
    shown = n if n <= MAX_ERRORS else f"{MAX_ERRORS}+"   # the last error is then "stopped after"
    where = f"the {label} rules {path}" if label else path
    print(f"{prog + ': ' if prog else ''}{shown} error(s) in {where}", file=stream)


def load_rules(path: str, prog: str | None = None, label: str = "") -> CompiledRules | None:
    """The compiled rules of `path`, or None once every error was printed (the command exits 1)."""
    try:
        return load_and_compile(path)
    except RulesInvalid as e:
        print_rules_invalid(e, path, prog, label)
        return None


def parse_until(text: str | None) -> int | None:
    """`--until` (RFC 3339) as epoch ms; None when not given."""
    if not text:
        return None
    try:
        return parse_ts(text)
    except ValueError as e:
        raise CommandError(f"--until: {e}") from None


def check_events_file(path: str) -> None:
    """`--events FILE` must exist before any work starts (`-` is stdin)."""
    if path != "-" and not Path(path).is_file():
        raise CommandError(f"no such events file: {path}")
