"""Errors in rules files: each names the file, line and rule, says what is wrong and, where
obvious, how to fix it (SPEC §3)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from engine.errors import EngineError

MAX_MESSAGE_CHARS = 600
"""Messages quote what a file says (a key, a value, an id), and a hostile file can say megabytes:
the middle of a longer message is elided, keeping its start and the hint at its end; a longer
rule id is cut."""
MAX_RULE_ID_CHARS = 100

MAX_ERRORS = 100
"""Errors one validation reports at most, like a compiler's error limit (clang's -ferror-limit):
a mistake repeated a million times would take minutes to report, and nobody reads past the
first screenful. The last error is then `error_limit(...)`."""


class RuleError(EngineError):
    def __init__(self, file: str, line: int, message: str, rule_id: str | None = None) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS * 2 // 3] + " … " + message[-MAX_MESSAGE_CHARS // 3 :]
        if rule_id is not None and len(rule_id) > MAX_RULE_ID_CHARS:
            rule_id = rule_id[: MAX_RULE_ID_CHARS - 1] + "…"
        super().__init__(message)
        self.file = file
        self.line = line
        self.message = message
        self.rule_id = rule_id

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return where + (f"rule '{self.rule_id}': " if self.rule_id else "") + self.message


class RulesInvalid(EngineError):
    """Raised with every error found (up to `MAX_ERRORS`), so one run of `triggers validate`
    lists them all."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def error_limit(last: RuleError) -> RuleError:
    """The note that ends a list of `MAX_ERRORS` errors, placed at the last of them."""
    return RuleError(last.file, last.line, f"stopped after {MAX_ERRORS} errors: fix these, then validate again")


def exception_text(exc: BaseException) -> str:
    """`RecursionError: maximum recursion depth exceeded`, for an error that reports a failure
    nobody foresaw instead of letting it end the program with a traceback."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
