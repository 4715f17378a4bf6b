"""`triggers diff`: two rule sets backtested over the same events, their triggers compared
(`engine.offline.diff` does the work; this is its command line)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from engine.cli.common import CommandError, check_events_file, exit_status, load_rules, parse_until
from engine.offline.diff import diff_backtests, print_diff, write_changes

DESCRIPTION = """\
Backtest two rule sets over the same events (decoded once, replayed twice, in event time
with the in-memory store) and report, per rule, which triggers the change removes (only in
OLD), adds (only in NEW) and changes (same trigger_id, a different status, reason, payload,
fired_at, action or channel), with the customers affected and examples. Triggers are matched
by trigger_id, a stable hash of rule, customer and cause. Rules present in only one set are
called out, as are rules whose definition changed and a changed contact policy. As in
`triggers backtest`, both clocks stop at the last event (or --until): deadlines due later are
pending in both runs, counted, not fired and not compared; --drain fires them.
"""

EPILOG = """\
examples:
  triggers diff --rules rules/ --rules rules-new/ --events examples/sample-events.jsonl
  triggers diff --rules rules/ --rules rules-new/ --events events.jsonl --until 2026-02-01T00:00:00Z --json
  triggers diff --rules rules/ --rules rules-new/ --events events.jsonl --out changes.jsonl
  triggers diff --rules rules/ --rules rules-new/ --events events.jsonl --report diff.html

"""
EXIT_STATUS = {0: "the diff ran (whatever it found)", 1: "a rules directory is invalid",
               2: "bad usage (not exactly two --rules, no such events file, a bad --until)"}


def add_parser(subparsers: Any) -> None:
    """Register `triggers diff` on the `triggers` command's subparsers."""
    p = subparsers.add_parser(
        "diff", help="what a rules change adds and removes: two backtests over the same events, compared",
        description=DESCRIPTION, epilog=EPILOG + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rules", action="append", required=True, metavar="RULES_DIR",
                   help="give it twice: the OLD rules directory, then the NEW one")
    p.add_argument("--events", required=True, metavar="FILE", help="JSONL events, native or Segment form ('-' = stdin)")
    p.add_argument("--until", metavar="TIME", help="end of the replayed period (RFC 3339), as in `triggers backtest`")
    p.add_argument("--drain", action="store_true", help="fire every pending one-shot deadline at the end "
                   "in both runs, as in `triggers backtest --drain`")
    p.add_argument("--json", action="store_true", help="print the per-rule result as JSON instead of a table")
    p.add_argument("--out", metavar="FILE", help="write every removed, added and changed trigger as JSONL "
                   "(one object per line: change, trigger_id, rule_id, customer_id, old, new, fields)")
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML page: per rule, the old "
                   "and the new rules side by side with each side's volume per channel and lift")
    p.set_defaults(handler=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    if len(args.rules) != 2:
        raise CommandError(f"give --rules exactly twice (OLD, then NEW), got {len(args.rules)}: "
                           f"{', '.join(args.rules)}")
    check_events_file(args.events)
    until = parse_until(args.until)
    compiled = []
    for label, path in zip(("OLD", "NEW"), args.rules):
        rules = load_rules(path, prog="triggers diff", label=label)
        if rules is None:
            return 1
        compiled.append(rules)
    result = diff_backtests(compiled[0], compiled[1], args.events, until, drain=args.drain)
    result.summary.old_rules, result.summary.new_rules = args.rules
    report = sys.stderr if args.out == "-" else sys.stdout   # stdout carries the JSONL then
    if args.json:
        report.write(msgspec.json.format(msgspec.json.encode(result.summary)).decode() + "\n")
    else:
        print_diff(result, report)
    if args.out:
        write_changes(result, args.out)
    if args.report:
        from engine.offline.diff_report import write_diff_report

        write_diff_report(args.report, result)
    return 0
