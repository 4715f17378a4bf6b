"""What the `triggers` commands share: how they load rules, read their arguments and refuse.

A command refuses by raising `CommandError`: `engine.cli.main` prints it as one line,
`triggers COMMAND: what is wrong`, and exits with its status (2: bad usage or a start that
cannot work; 1: invalid rules). Rules errors are printed here, every one as
`file:line: rule 'id': …`, then a count, the same way for every command.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from engine.core.times import parse_ts
from engine.errors import EngineError
from engine.rules.check import check_rules
from engine.rules.compiler import CompiledRules
from engine.rules.errors import MAX_ERRORS, RulesInvalid

if TYPE_CHECKING:
    from engine.operators.settings import Settings

__all__ = ["BROKEN_PIPE", "CommandError", "add_redis_options", "check_events_file", "exit_status", "load_rules",
           "parse_until", "print_rules_invalid", "read_input", "read_settings", "redis_overrides"]

BROKEN_PIPE = 141   # 128 + SIGPIPE: what a shell reports for a tool whose reader went away (`| head`)


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
    """The compiled rules of `path`, or None once every error was printed (the command exits 1):
    structural and expression errors alike, in one pass (engine.rules.check)."""
    try:
        return check_rules(path)
    except RulesInvalid as e:
        print_rules_invalid(e, path, prog, label)
        return None


def read_settings(config: str | None, overrides: Mapping[str, Any]) -> Settings:
    """The engine's settings as `triggers run` reads them: the `--config` file, then TRIGGERS_*
    variables, then the command's flags (`overrides`: dotted keys, None where a flag was not
    given). Invalid settings refuse (exit 2). Imported here: building the parser must not load
    the connectors the settings name."""
    from engine.operators.settings import SettingsError, load_settings

    try:
        return load_settings(config, overrides=overrides)
    except SettingsError as e:
        raise CommandError(str(e)) from None


def add_redis_options(parser: argparse.ArgumentParser, whose: str) -> None:
    """--redis-url, --prefix and --cluster, over the settings' redis.*: where the engine's state is,
    the same three flags for every command that reads it (`whose`: "the engine's", ...)."""
    parser.add_argument("--redis-url", metavar="URL", help=f"{whose} Redis; overrides redis.url "
                        "(default: redis://127.0.0.1:6379/0)")
    parser.add_argument("--prefix", help=f"{whose} key prefix; overrides redis.prefix (default: te)")
    parser.add_argument("--cluster", action="store_true", default=None, help="the Redis URL names a node of a "
                        "Redis Cluster; overrides redis.cluster")


def redis_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings `--rules` and `add_redis_options`' flags override (None: not given)."""
    return {"rules": args.rules, "redis.url": args.redis_url, "redis.prefix": args.prefix,
            "redis.cluster": args.cluster}


def parse_until(text: str | None) -> int | None:
    """`--until` (RFC 3339) as epoch ms; None when not given."""
    if not text:
        return None
    try:
        return parse_ts(text)
    except ValueError as e:
        raise CommandError(f"--until: {e}") from None


def exit_status(codes: dict[int, str]) -> str:
    """The `exit status:` lines of a command's `--help` epilog, one per code, with the codes every
    command shares (bad usage, a reader that went away). The README's "Exit status" section lists
    the same (tests/unit/test_cli_help.py compares them)."""
    shared = {2: "bad usage (an unknown option, a missing file)", BROKEN_PIPE: "the reader of stdout went away "
              "(`| head`): stopped quietly"}
    lines = ["exit status:"]
    for code, text in sorted({**shared, **codes}.items()):
        lines += textwrap.wrap(text, 100, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
    return "\n".join(lines) + "\n"


def read_input(path: str) -> bytes:
    """A whole input file's bytes; `-` is stdin. Refuses (exit 2) with the OS's reason."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}") from None


def check_events_file(path: str) -> None:
    """`--events FILE` must exist before any work starts (`-` is stdin)."""
    if path != "-" and not Path(path).is_file():
        raise CommandError(f"no such events file: {path}")
