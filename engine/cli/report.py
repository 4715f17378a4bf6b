"""`triggers report`: per-rule lift (contacted vs control customers) from a backtest summary,
and each journey's funnel beside the journey's lift (the journey is one rule: its lift is the rule's)."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from typing import Any, TextIO

import msgspec

from engine.cli.common import CommandError, exit_status, read_input
from engine.core.funnel import Funnel
from engine.core.times import format_ts
from engine.offline.backtest import BacktestSummary
from engine.offline.funnel_table import WIDTH, StepShape, funnel_lines, pack
from engine.policy.lift import CustomerLift, Program, rule_lifts


class JourneyFunnel(msgspec.Struct):
    """A journey's funnel (walks) and its lift as a whole (customers: the journey's row in `rules`)."""

    journey: str
    funnel: Funnel
    steps: list[StepShape]                  # kinds and targets, in file order
    lift: CustomerLift


class Report(msgspec.Struct):
    """What `triggers report --json` prints."""

    rules: list[CustomerLift]
    program: Program | None                 # None: no global control group
    ended_at: int = 0                       # the end of data (epoch ms)
    pending: dict[str, int] = {}            # rule id -> deadlines pending at the end, not fired (none if drained)
    journeys: list[JourneyFunnel] = []      # one per journey of the rules, in file order


EXIT_STATUS = {0: "reported", 2: "bad usage, or SUMMARY.json cannot be read (not a backtest summary, or one written "
               "by an older engine)"}


def add_parser(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "report", help="per-rule lift: contacted vs control customers, conversion and revenue, 95%% intervals",
        description="Per rule, with the customer as the unit (a customer triggered ten times counts once): the "
                    "share of contacted (sent) and control-group (held-out) customers who converted within the "
                    "attribution window after one of the rule's triggers, their revenue per customer (each "
                    "purchase counted once per customer and rule), the differences with 95% intervals "
                    "(Newcombe for conversion, Welch for revenue), the incremental revenue and a verdict: lift, "
                    "negative, no measurable effect, inconclusive (with the customers per group needed to see a "
                    "5-point effect) or no control group. Triggers whose window runs past the end of the data "
                    "are left out and counted. With a global control group, the \"all rules\" row compares it "
                    "with every contacted customer, each conversion once, beside the sum of the rules' "
                    "incremental revenues. Then each journey's funnel (walks entered, reaching each step, taking "
                    "each branch, ending by reason, contacted and held out side by side) with the journey's lift "
                    "as a whole (its row of the table). Reads the JSON written by `triggers backtest --summary FILE`.",
        epilog="examples:\n  triggers backtest --rules rules/ --events events.jsonl --out t.jsonl --summary s.json\n"
               "  triggers report s.json\n  triggers report - < s.json\n\n" + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("summary", metavar="SUMMARY.json", help="a backtest summary (triggers backtest --summary); "
                   "'-' = stdin")
    r.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table "
                   "(README: `triggers report --json`)")
    r.set_defaults(handler=run_report)


def build_report(summary: BacktestSummary) -> Report:
    # a rule's timing experiment (SPEC §3b) is a row of its own: best hour against at once
    experiments = [unit for unit in summary.by_customer if unit not in summary.per_rule]
    rules, program = rule_lifts([*summary.per_rule, *experiments], summary.by_customer, summary.program,
                                summary.program_rules)
    by_id = {l.rule_id: l for l in rules}
    journeys = [JourneyFunnel(journey, funnel, summary.journey_steps.get(journey, []),
                              by_id.get(journey) or rule_lifts([journey], summary.by_customer, None, [])[0][0])
                for journey, funnel in summary.funnels.items()]
    return Report(rules, program, summary.ended_at, {} if summary.drained else dict(summary.pending), journeys)


def run_report(args: argparse.Namespace) -> int:
    try:
        summary = msgspec.json.decode(read_input(args.summary), type=BacktestSummary)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise CommandError(f"cannot read {'<stdin>' if args.summary == '-' else args.summary}: {e}") from None
    if summary.triggers and not summary.by_customer and any(o.sent + o.held_out for o in summary.per_rule.values()):
        raise CommandError(f"{args.summary} has no per-customer outcomes (written by an older engine): "
                           "run the backtest again")
    report = build_report(summary)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(report)).decode())
    else:
        print_report(report, sys.stdout)
    return 0


CUPED_SHOWN = 0.05   # a CUPED line only where the pre-period revenue cut the variance by this share at least


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _points(x: float | None, ci: tuple[float, float] | None) -> str:
    if x is None or ci is None:
        return "-"
    return f"{100 * x:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _money(x: float | None, ci: tuple[float, float] | None = None) -> str:
    if x is None:
        return "-"
    return f"{x:+,.2f}" if ci is None else f"{x:+,.2f} [{ci[0]:+,.2f}, {ci[1]:+,.2f}]"


def _relative(l: CustomerLift) -> str:
    c = l.conversion
    if c.relative is None or c.relative_ci is None:
        return "-"
    low, high = c.relative_ci
    high_text = "+inf" if high is None or not math.isfinite(high) else f"{100 * high:+.0f}"
    return f"{100 * c.relative:+.0f}% [{100 * low:+.0f}, {high_text}]"


COLUMNS = (("contacted conv.", ">20"), ("control conv.", ">16"), ("conv. lift (95% CI, points)", ">27"),
           ("rel. lift (95% CI, %)", ">21"), ("rev/customer", ">12"), ("control", ">9"),
           ("rev/customer lift (95% CI)", ">32"), ("incremental revenue (95% CI)", ">40"), ("verdict", ""))


def _row(label: str, width: int, l: CustomerLift) -> str:
    a, b = l.contacted, l.control
    cells = (f"{a.converted:,}/{a.customers:,} {_pct(a.rate)}", f"{b.converted:,}/{b.customers:,} {_pct(b.rate)}",
             _points(l.conversion.lift, l.conversion.ci), _relative(l),
             "-" if a.revenue_per_customer is None else f"{a.revenue_per_customer:,.2f}",
             "-" if b.revenue_per_customer is None else f"{b.revenue_per_customer:,.2f}",
             _money(l.revenue.lift, l.revenue.ci), _money(l.revenue.incremental, l.revenue.incremental_ci), l.verdict)
    return f"{label:<{width}}  " + "  ".join(f"{c:{fmt}}" for c, (_, fmt) in zip(cells, COLUMNS))


def print_report(report: Report, stream: TextIO) -> None:
    """One row per rule (customers as the unit), then the program's "all rules" row, the notes,
    and each journey's funnel with its lift."""
    width = max([len("all rules")] + [len(l.rule_id) for l in report.rules])
    print(f"{'rule':<{width}}  " + "  ".join(f"{name:{fmt}}" for name, fmt in COLUMNS), file=stream)
    for l in report.rules:
        print(_row(l.rule_id, width, l), file=stream)
    p = report.program
    if p is not None:
        print(_row("all rules", width, p.lift), file=stream)
    print(file=stream)
    print("Customers as the unit: converted/customers per group within the attribution window; revenue per "
          "customer includes non-buyers.", file=stream)
    unobserved = sum(l.unobserved for l in report.rules)
    if unobserved:
        print(f"{unobserved:,} triggers left out: their attribution window runs past the end of the data.",
              file=stream)
    pending = sum(report.pending.values())
    if pending:
        print(f"{pending:,} deadlines were pending at the end of data ({format_ts(report.ended_at)}): not fired, "
              "so not in these figures (`triggers backtest --drain` fires them; they could not convert inside "
              "the data).", file=stream)
    cuped = [l for l in report.rules if l.revenue.cuped is not None and l.revenue.cuped.variance_reduction >= CUPED_SHOWN]
    for l in cuped:
        c = l.revenue.cuped
        assert c is not None
        print(f"CUPED, {l.rule_id}: revenue per customer lift adjusted by the customers' revenue before their first "
              f"trigger {_money(c.lift, c.ci)} (variance {100 * c.variance_reduction:.0f}% lower)", file=stream)
    if p is None:
        print("No global control group: no \"all rules\" lift (per-rule control groups are not comparable "
              "across rules).", file=stream)
    else:
        print(f"All rules: the global control group ({p.lift.control.customers:,} customers) against every "
              f"contacted customer ({p.lift.contacted.customers:,}) of the {len(p.rules)} rules using it, each "
              f"conversion counted once: incremental revenue {_money(p.lift.revenue.incremental, p.lift.revenue.incremental_ci)}"
              f"; the rules' own incremental revenues sum to {_money(p.rules_incremental_revenue)}"
              + (" (more: campaigns claim the same purchases)." if p.lift.revenue.incremental is not None
                 and p.rules_incremental_revenue > max(p.lift.revenue.incremental, 0.0) else "."), file=stream)
    print_journeys(report, stream)


def print_journeys(report: Report, stream: TextIO) -> None:
    """Each journey's funnel (walks), then its lift as a whole (customers, as in the table above)."""
    for j in report.journeys:
        print(file=stream)
        for line in funnel_lines(j.funnel, j.steps) + journey_lift_lines(j.lift):
            print(line, file=stream)


def journey_lift_lines(l: CustomerLift, indent: str = "  ") -> list[str]:
    """The journey's row of the lift table, as lines of at most `WIDTH` columns."""
    a, b = l.contacted, l.control
    points = _points(l.conversion.lift, l.conversion.ci)
    parts = [f"contacted conv. {a.converted:,}/{a.customers:,} {_pct(a.rate)}",
             f"control conv. {b.converted:,}/{b.customers:,} {_pct(b.rate)}",
             f"conv. lift {points}" + (" points" if points != "-" else ""), f"rel. lift {_relative(l)}",
             f"rev/customer lift {_money(l.revenue.lift, l.revenue.ci)}",
             f"incremental revenue {_money(l.revenue.incremental, l.revenue.incremental_ci)}"]
    lines = pack(parts, f"{indent}lift of the journey (customers as the unit): ", indent * 2)
    return lines + textwrap.wrap(f"verdict: {l.verdict}", WIDTH, initial_indent=indent * 2,
                                 subsequent_indent=indent * 3)
