"""Where the rules loader's errors go: one file, maybe one rule and a part of it, and the
error limit that stops reading (`MAX_ERRORS`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine.rules.errors import MAX_ERRORS, RuleError
from engine.rules.model import Source

__all__ = ["Scope", "TooManyErrors"]


class TooManyErrors(Exception):
    """`MAX_ERRORS` were reported: reading stops (a mistake repeated a million times would take
    minutes to report, and nobody reads past the first screenful)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Where errors go and how they are labelled: one file, maybe one rule and a part of it."""

    file: str
    errors: list[RuleError]
    rule_id: str | None = None
    prefix: str = ""

    def error(self, line: int, message: str) -> None:
        self.errors.append(RuleError(self.file, line, self.prefix + message, self.rule_id))
        if len(self.errors) >= MAX_ERRORS:
            raise TooManyErrors

    def source(self, line: int) -> Source:
        return Source(self.file, line)

    def within(self, prefix: str) -> Scope:
        return replace(self, prefix=self.prefix + prefix)

    def for_rule(self, rule_id: str | None) -> Scope:
        return replace(self, rule_id=rule_id)

    def mark(self) -> int:
        return len(self.errors)

    def failed_since(self, mark: int) -> bool:
        return len(self.errors) > mark

