"""The limits of a rules directory (SPEC §6): what a hostile file is stopped by, at its file and
line, before it costs time or memory.

Sizes are checked before a file is read (`read_bytes`), characters before it is parsed
(`printable`), nesting and alias expansion on the parser's events before anything recursive
sees the document (`within_limits`), the numbers of rules and aggregates as they are read
(`Tally`). The compiler adds the limits of expressions (`engine.rules.compiler`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.rules.scope import Scope

__all__ = [
    "MAX_AGGREGATES", "MAX_DEPTH", "MAX_DIRECTORY_BYTES", "MAX_EXPRESSION_CHARS", "MAX_FILES", "MAX_FILE_BYTES",
    "MAX_RULES", "MAX_VALUES", "ZERO_WIDTH", "Tally", "character_name", "decode_text", "printable", "read_bytes",
    "too_deep", "within_limits",
]
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
ZERO_WIDTH = re.compile("[\u200b-\u200d\u2060]")


@dataclass(slots=True)
class Tally:
    """What the files read so far count against the directory's limits; `full` once one of
    them was passed, since reading on would only cost time."""

    bytes: int = 0
    values: int = 0
    rules: int = 0
    aggregates: int = 0
    full: bool = False

    def count_aggregate(self, scope: Scope, line: int) -> bool:
        """Counts one more aggregate; False, after reporting it, past `MAX_AGGREGATES`."""
        self.aggregates += 1
        if self.aggregates <= MAX_AGGREGATES:
            return True
        self.full = True
        scope.error(line, f"more than {MAX_AGGREGATES} aggregates in the rules directory, the most it may"
                    " have (every customer's state holds each one): remove those no rule reads")
        return False

    def count_rule(self, scope: Scope, line: int) -> bool:
        """Counts one more rule; False, after reporting it, past `MAX_RULES`."""
        self.rules += 1
        if self.rules <= MAX_RULES:
            return True
        self.full = True
        scope.error(line, f"more than {MAX_RULES:,} rules in the rules directory, the most it may have:"
                    " split them into several directories, each run by its own engine")
        return False


def read_bytes(path: Path, scope: Scope, tally: Tally) -> bytes | None:
    """The file's bytes, read only when it and the directory stay within their sizes; None once
    the reason was reported."""
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
    tally.bytes += len(data)
    if tally.bytes > MAX_DIRECTORY_BYTES:
        tally.full = True
        scope.error(1, f"with this file the rules files hold more than {MAX_DIRECTORY_BYTES:,} bytes"
                    f" ({MAX_DIRECTORY_BYTES // 2**20} MiB), the most a rules directory may hold:"
                    " split the rules into several directories")
        return None
    return data


def decode_text(data: bytes, scope: Scope) -> str | None:
    """The file's text (UTF-8, a byte order mark at its start dropped); None once reported."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        scope.error(data[: exc.start].count(b"\n") + 1, "the file is not UTF-8 text")
        return None


def printable(text: str, scope: Scope) -> bool:
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
        column = at - line_start + 1
        scope.error(line, f"invisible character {character_name(char)} at column {column}: {why}; delete it")
        clean = False
    return clean



def character_name(char: str) -> str:
    """`U+202E RIGHT-TO-LEFT OVERRIDE`: how an invisible character is named in messages."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")



def too_deep(scope: Scope, line: int) -> None:
    scope.error(line, f"the YAML nests more than {MAX_DEPTH} levels deep here; rules need a few"
                " (a payload starts 5 levels in): flatten it")



def within_limits(events: Iterable[yaml.Event], scope: Scope, tally: Tally) -> bool:
    """Walks a document's parser events, without recursion, before anything recursive (a
    composer, `yaml_lines`' build, `Node.plain`) sees the document; False, with the line reported, when it nests
    deeper than `MAX_DEPTH` or takes the directory past `MAX_VALUES` values, an alias counting
    as the values it stands for (so a "billion laughs" stops at its first big alias)."""
    opened: list[tuple[str | None, int]] = []   # per open list or mapping: its anchor, `tally.values` at its start
    sizes: dict[str, int] = {}                  # anchor -> the values it stands for
    for event in events:
        kind = type(event)
        if kind is yaml.ScalarEvent:
            count = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif kind is yaml.AliasEvent:
            count = sizes.get(event.anchor, 1)   # unknown or still open: the composer reports it
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if len(opened) == MAX_DEPTH:
                too_deep(scope, event.start_mark.line + 1)
                return False
            opened.append((event.anchor, tally.values))
            count = 1
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            anchor, start = opened.pop()
            if anchor is not None:
                sizes[anchor] = tally.values - start
            continue
        else:
            continue   # stream and document boundaries
        tally.values += count
        if tally.values > MAX_VALUES:
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
