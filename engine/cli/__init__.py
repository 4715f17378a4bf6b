"""The `triggers` command line (SPEC §5): one module per command, what they share in `common`.

Each command module offers `add_parser(subparsers)`, which registers the command and its
handler; a handler returns the exit status, or raises `CommandError`, which `main` prints as
`triggers COMMAND: …` and turns into its status. The console script is `engine.cli:main`;
`python -m engine.cli` runs the same.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.cli import backfill, backtest, diff, export, produce, repartition, report, resend, run, validate
from engine.cli import explain as explain_cmd
from engine.cli.common import BROKEN_PIPE, CommandError
from engine.cli.version import PrintVersion

__all__ = ["main"]

EPILOG = """examples:
  triggers validate rules/
  triggers run --config triggers.toml
  triggers backtest --rules rules/ --events examples/sample-events.jsonl --out triggers.jsonl --summary s.json
  triggers report s.json
  triggers resend webhook-dead-letters.jsonl --sink webhook --config triggers.toml
  triggers produce --events examples/sample-events.jsonl --topic customer-events

Each command's --help lists its exit status (README: "Exit status").
"""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # the reader went away (`triggers diff ... | head`): stop quietly, as Unix tools do; the
        # output still buffered would raise again at exit, so it goes to /dev/null
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)   # --help and --version print here: a closed pipe is caught in main
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except CommandError as e:
        print(f"triggers {args.command}: {e}", file=sys.stderr)
        return e.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triggers",
        description="Real-time trigger engine for trigger-based marketing: rules in YAML, "
                    "per-customer state, triggers out.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=PrintVersion,
                        help="the engine's version (and its main libraries'), for bug reports; "
                             "`triggers validate` prints the rules' content hash")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for command in (validate, backtest, run, produce, resend, repartition, report, diff, export, backfill):
        command.add_parser(sub)
    explain_cmd.add_parser(sub)
    return parser
