"""`triggers report`: per-rule lift (contacted vs control group) from a backtest summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import msgspec

from engine.cli.common import CommandError
from engine.offline.backtest import BacktestSummary
from engine.policy.lift import Lift, lift


def add_parser(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "report", help="per-rule lift: contacted vs control group conversion, with 95%% intervals",
        description="Per rule: the conversion rate of contacted (sent) and control-group (held-out) triggers, "
                    "the absolute and relative lift, and their 95% confidence intervals. Every trigger is in "
                    "the denominator, non-responders included. Reads the JSON written by "
                    "`triggers backtest --summary FILE`.",
        epilog="example:\n  triggers backtest --rules rules/ --events events.jsonl --out t.jsonl --summary s.json\n"
               "  triggers report s.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("summary", metavar="SUMMARY.json", help="a backtest summary (triggers backtest --summary)")
    r.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    r.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    try:
        summary = msgspec.json.decode(Path(args.summary).read_bytes(), type=BacktestSummary)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
        raise CommandError(f"cannot read {args.summary}: {e}") from None
    lifts = [lift(rule_id, o) for rule_id, o in summary.per_rule.items()]
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(lifts)).decode())
    else:
        print_lift(lifts, sys.stdout)
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def print_lift(lifts: list[Lift], stream: TextIO) -> None:
    """One row per rule; `-` where a group is empty (no control group configured, say)."""
    width = max([len("rule")] + [len(l.rule_id) for l in lifts])
    print(f"{'rule':<{width}}  {'contacted':>15}  {'control':>15}  {'abs lift (95% CI, points)':>30}  "
          f"{'rel lift (95% CI, %)':>28}", file=stream)
    for l in lifts:
        contacted = f"{l.contacted_converted:,}/{l.contacted:,} {_pct(l.contacted_rate)}"
        control = f"{l.control_converted:,}/{l.control:,} {_pct(l.control_rate)}"
        absolute = "-" if l.absolute is None else f"{100 * l.absolute:+.1f} {_ci(l.absolute_ci)}"
        relative = "-" if l.relative is None else f"{100 * l.relative:+.0f}% {_ci(l.relative_ci)}"
        print(f"{l.rule_id:<{width}}  {contacted:>15}  {control:>15}  {absolute:>30}  {relative:>28}", file=stream)
