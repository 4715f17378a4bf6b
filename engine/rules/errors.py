"""Errors in rules files: each names the file, line and rule, says what is wrong and, where
obvious, how to fix it (SPEC §3)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RuleError(Exception):
    def __init__(self, file: str, line: int, message: str, rule_id: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.message = message
        self.rule_id = rule_id

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return where + (f"rule '{self.rule_id}': " if self.rule_id else "") + self.message


class RulesInvalid(Exception):
    """Raised with every error found, so one run of `triggers validate` lists them all."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
