"""`triggers validate`: load and compile a rules directory; every error as `file:line`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from engine.cli.common import check_events_file, exit_status, load_rules
from engine.events.decode import JSONL_BATCH, decode_jsonl
from engine.rules.model import RuleSet
from engine.rules.usage import missing_types

EXIT_STATUS = {0: "the rules are valid (warnings about the --events sample leave it 0)",
               1: "the rules are invalid: every error printed as file:line",
               2: "bad usage (an unknown option, no such --events file)"}


def add_parser(subparsers: Any) -> None:
    v = subparsers.add_parser(
        "validate", help="check a rules directory; every error as file:line",
        description="Load and compile every *.yaml file of RULES_DIR. Exit 0 when valid, with the rules' "
                    "content hash (sha256 of the files' names and bytes; `triggers run` logs the same at "
                    "start-up: quote it in a bug report); otherwise print every error as "
                    "`file:line: rule 'id': what is wrong` and exit 1.",
        epilog="examples:\n  triggers validate rules/\n  triggers validate rules/ --events examples/sample-events.jsonl\n\n"
               + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("rules_dir", metavar="RULES_DIR", help="directory of rules files (or one file)")
    v.add_argument("--events", metavar="FILE", help="a sample of events (JSONL, native or Segment form): warn, at "
                   "file:line, about every event type the rules name that the sample never contains (a "
                   "misspelt 'on: purchse' is valid but never fires), with the nearest type it does contain")
    v.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules_dir)
    if rules is None:
        return 1
    rs = rules.ruleset
    print(f"{args.rules_dir}: OK ({len(rs.rules)} rules, {len(rs.aggregates)} aggregates, "
          f"{len(rs.files)} file(s){', contact policy' if rs.policy else ''}; {rs.digest})")
    if args.events:
        _check_types(rs, args.events)
    return 0


def _check_types(rs: RuleSet, path: str) -> None:
    """The event types of the sample against those the rules name; warnings only (exit 0): a
    sample may simply lack a rare type."""
    check_events_file(path)
    seen: Counter[str] = Counter()
    events = 0
    for batch in decode_jsonl(path, JSONL_BATCH):
        seen.update(e.type for e in batch.events)
        events += len(batch.events)
    warnings = missing_types(rs, seen)
    for line in warnings:
        print(line, file=sys.stderr)
    kinds = ", ".join(f"{t} {n:,}" for t, n in seen.most_common(8)) + (", …" if len(seen) > 8 else "")
    print(f"{path}: {events:,} events of {len(seen)} types ({kinds}); "
          f"{len(warnings)} warning(s) about event types the sample lacks")
