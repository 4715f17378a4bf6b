"""`triggers backtest`: replay an event file through the rules in event time
(`engine.offline.backtest` does the work; this is its command line, its files and its table)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import msgspec

from engine.cli.common import check_events_file, exit_status, load_rules, parse_until
from engine.core.times import format_duration, format_ts
from engine.offline.backtest import BacktestSummary, backtest_file, pending_note
from engine.offline.funnel_table import funnel_lines
from engine.offline.report_html import ReportCollector, shown_path, write_report

DESCRIPTION = (
    "Replay a JSONL event file in event time with an in-memory state store. Triggers go to "
    "--out as JSONL (stdout by default); a per-rule summary and each journey's funnel go to "
    "stderr. The clock stops at the last event (or at --until): deadlines due later (absence, "
    "delay, inactivity, series steps, journey waits, deferred sends) are pending, not fired, and "
    "the summary counts them per rule; --drain fires them at the end, as a live engine would "
    "later. Recurring dates never fire after the end. Deterministic: the same events and rules "
    "give the same triggers and ids."
)


EXIT_STATUS = {0: "replayed (dead letters do not change it: they are counted and written out)",
               1: "the rules are invalid: every error printed as file:line",
               2: "bad usage (an unknown option, no such events file, a bad --until)"}


def add_parser(subparsers: Any) -> None:
    b = subparsers.add_parser(
        "backtest", help="replay an event file through the rules, in event time", description=DESCRIPTION,
        epilog="examples:\n  triggers backtest --rules rules/ --events examples/sample-events.jsonl --out triggers.jsonl\n"
               "  zcat events.jsonl.gz | triggers backtest --rules rules/ --events - | head\n\n" + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--rules", required=True, metavar="RULES_DIR", help="rules directory (or one file)")
    b.add_argument("--events", required=True, metavar="FILE", help="JSONL events, native or Segment form ('-' = stdin)")
    b.add_argument("--out", metavar="FILE", default="-", help="where triggers go as JSONL (default: stdout)")
    b.add_argument("--until", metavar="TIME", help="end of the replayed period (RFC 3339): events after it are "
                   "not replayed, deadlines up to it fire, later ones are pending")
    b.add_argument("--drain", action="store_true", help="fire every pending one-shot deadline at the end "
                   "(absence, delay, inactivity, series and journey steps, sends deferred by quiet hours), as a live engine "
                   "would later; recurring dates never fire after the end")
    b.add_argument("--dead-letters", metavar="FILE", default=None,
                   help="where undecodable events go as JSONL with their reason (default: stderr)")
    b.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report: fires over time "
                   "per rule by status, suppression reasons, top payload values, the summary and lift, journey funnels")
    b.add_argument("--summary", metavar="FILE", help="write the run's summary as JSON (per-rule decisions, "
                   "responses and conversions, deadlines pending at the end of data, journey funnels), the input of "
                   "`triggers report`")
    b.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    b.add_argument("--quiet", action="store_true", help="no summary table (nor journey funnels)")
    b.set_defaults(handler=run_backtest)


def run_backtest(args: argparse.Namespace) -> int:
    from connectors.file import FileSink, FileSinkConfig

    rules = load_rules(args.rules)
    if rules is None:
        return 1
    check_events_file(args.events)
    until = parse_until(args.until)
    collector = ReportCollector() if args.report else None
    with FileSink(FileSinkConfig(path=args.out)) as out, _dead_letter_sink(args.dead_letters) as dead:
        def emit(batch: list) -> None:
            out.write_batch(batch)
            if collector is not None:
                collector.add(batch)

        summary = backtest_file(rules, args.events, emit, dead.write_batch, until=until,
                                progress=not args.no_progress, drain=args.drain)
    if collector is not None:
        write_report(args.report, collector, summary, title=f"Backtest of {shown_path(args.rules)}", rules_dir=args.rules,
                     events_file=args.events)
    if args.summary:
        Path(args.summary).write_bytes(msgspec.json.format(msgspec.json.encode(summary)) + b"\n")
    if not args.quiet:
        print_summary(summary, sys.stderr)
    return 0


def _dead_letter_sink(path: str | None):
    """`--dead-letters FILE`, or stderr when not given (stdout may carry the triggers)."""
    from connectors.file import FileSink, FileSinkConfig

    if not path:
        return FileSink(FileSinkConfig(path="-"), stream=sys.stderr)
    return FileSink(FileSinkConfig(path=path))


def print_summary(s: BacktestSummary, stream: TextIO) -> None:
    """The per-rule table: decisions by status with suppression reasons, then responses, then
    the deadlines pending at the end of data; then each journey's funnel."""
    width = max([len("rule")] + [len(r) for r in s.per_rule])
    print(f"{'rule':<{width}}  {'sent':>8}  {'held_out':>8}  {'suppressed':>10}  {'responded':>9}  "
          f"{'converted':>9}  {'drained' if s.drained else 'pending':>8}  reasons", file=stream)
    for rule_id, o in s.per_rule.items():
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(o.suppressed.items()))
        print(f"{rule_id:<{width}}  {o.sent:>8,}  {o.held_out:>8,}  {sum(o.suppressed.values()):>10,}  "
              f"{o.responded + o.held_out_responded:>9,}  {o.converted + o.held_out_converted:>9,}  "
              f"{s.pending.get(rule_id, 0):>8,}  {reasons}", file=stream)
    print_funnels(s, stream)
    print_timing(s, stream)
    print(f"{s.events:,} events ({s.dead_letters:,} dead letters, {s.duplicates:,} duplicates, {late_text(s)}), "
          f"{s.customers:,} customers, {s.triggers:,} triggers in {s.elapsed_s:.2f} s "
          f"({s.events_per_s:,.0f} events/s)" + (f"; end of data {format_ts(s.ended_at)}" if s.ended_at else ""),
          file=stream)
    if s.pending_total:
        deadlines = "deadline" if s.pending_total == 1 else "deadlines"
        print("note: " + pending_note(f"{s.pending_total:,} {deadlines}", format_ts(s.ended_at), s.drained),
              file=stream)
    if s.undrained:
        print(f"note: {s.undrained:,} deadlines of journeys that loop through a wait fall past the drain's horizon"
              " (each rule's waits passed once, after the end) and were not fired", file=stream)
    for attr, n in s.unusable_dates.items():
        print(f"note: {n:,} customers' profile.{attr} is not a usable date (YYYY-MM-DD, README \"Dates of recurring "
              "rules\"): their recurring rules never fire", file=stream)
    if s.late:
        print("note: late events are applied at once, out of time order; "
              "`time: {lateness: D}` in the rules applies events up to D late in time order", file=stream)
        if s.late_causes:
            print(f"note: {s.late_causes:,} late events did not start a wait or series: a newer cause's was pending",
                  file=stream)
    if s.applied_early:
        print(f"warning: {s.applied_early:,} events applied before the lateness had passed: too many held at once",
              file=stream)
    if s.timers_dropped:
        print(f"warning: {s.timers_dropped:,} deadlines not armed: more than 8 pending per rule and customer",
              file=stream)


def late_text(s: BacktestSummary) -> str:
    """`N late`, and what late means when there are some (SPEC §6: behind the frontier)."""
    if not s.late:
        return "0 late"
    allowed = f"more than {format_duration(s.lateness)} " if s.lateness else ""
    return f"{s.late:,} late: arrived {allowed}behind the newest event already read"


def print_timing(s: BacktestSummary, stream: TextIO) -> None:
    """SPEC §3b per rule: how often the chosen hour and channel held the next response, against at once."""
    if not s.timing:
        return
    print(file=stream)
    print(f"{'send time and channel':20} {'sends':>6} {'responded':>9}  {'best hour':>9} {'at once':>8} {'ratio':>6}"
          f"  {'channel':>8} {'default':>8}", file=stream)
    for rule, t in s.timing.items():
        def pct(n: int, of: int = t.responded) -> str:
            return f"{100 * n / of:.1f}%" if of else "-"
        ratio = f"{t.hour_hits / t.hour_hits_at_once:.2f}" if t.hour_hits_at_once else "-"
        print(f"{rule:20} {t.sends:>6,} {t.responded:>9,}  {pct(t.hour_hits):>9} {pct(t.hour_hits_at_once):>8}"
              f" {ratio:>6}  {pct(t.channel_hits):>8} {pct(t.channel_hits_default):>8}", file=stream)
    print("  (share of the sends followed by a response within 7 days whose next response came in the hour sent,"
          " in the hour first due, on the channel chosen, on the default one)", file=stream)


def print_funnels(s: BacktestSummary, stream: TextIO) -> None:
    """Each journey's funnel (walks, contacted and held out), a blank line before each."""
    for journey, funnel in s.funnels.items():
        print(file=stream)
        for line in funnel_lines(funnel, s.journey_steps.get(journey)):
            print(line, file=stream)
    if s.funnels:
        print(file=stream)
