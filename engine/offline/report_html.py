"""The backtest's HTML report: what the rules would do, as one self-contained page.

`ReportCollector.add` sees every batch of triggers a backtest emits and keeps aggregates only,
so memory stays bounded on millions of triggers: per rule, fires per UTC day by status,
suppression reasons, channels and actions, and the most common values of each payload key
(at most `max_tracked` distinct values tracked per key). `render_report` turns a collector and
the run's `BacktestSummary` into one HTML page: inline CSS and inline SVG, no script, no
network reference, so it opens offline and anywhere. Every user-provided string (rule ids,
payload values, paths, the title) is escaped.

The page is deterministic: the same triggers and summary give the same bytes (no wall clock).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

import msgspec

from engine.actions.trigger import HELD_OUT, SENT, SUPPRESSED, Trigger
from engine.core.funnel import Funnel
from engine.offline.backtest import BacktestSummary
from engine.offline.funnel_table import Row, RowKind, StepShape, funnel_rows, not_entered_text, outcomes_text
from engine.policy.attribution import RuleOutcome
from engine.policy.customers import CustomerOutcome
from engine.policy.lift import CustomerLift, Program, Verdict, rule_lifts

TOP_VALUES = 10          # payload values shown per key and rule
MAX_TRACKED = 1000       # distinct values counted per key and rule before the rarest are dropped
MAX_KEYS = 50            # payload keys tracked per rule (keys come from the rules, so few)
MAX_VALUE_CHARS = 120    # longer payload values are counted by their first characters
MAX_SAMPLE = 4096        # numbers kept per key and rule for the histogram of a high-cardinality key
HIST_BINS = 12           # bars of that histogram
SPREAD_SHARE = 0.25      # the top values cover less than this share of a key: it is high-cardinality

_STATUS_INDEX = {SENT: 0, HELD_OUT: 1, SUPPRESSED: 2}

# Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
STATUS_COLOURS = (("sent", "#0072B2"), ("held out", "#E69F00"), ("suppressed", "#999999"))
REASON_COLOURS = {
    "no_consent": "#CC79A7",
    "cooldown": "#56B4E9",
    "frequency_cap": "#009E73",
    "quiet_hours_dropped": "#D55E00",
    "priority": "#F0E442",
}
_EXTRA_COLOURS = ("#332288", "#117733", "#88CCEE", "#882255", "#44AA99", "#7F7F7F")   # Paul Tol's, for new reasons

MAX_BINS = 120           # bars per chart: beyond this many days, bars are weeks, then months


# ----------------------------------------------------------------------------- collecting

class ValueCounts:
    """Counts of one payload key's values, bounded: beyond `cap` distinct values the rarer half
    is dropped (their occurrences go to `dropped`). Values seen often survive every pruning, so
    the top values are right; once pruned, a count is a lower bound (a value dropped earlier
    restarts from 1 when it comes back).

    While every value is a number (payload templates render numbers as text), the numbers are
    also kept: exact count, min and max, and an every-`stride`-th sample of at most `MAX_SAMPLE`
    (the stride doubles when it fills), for the histogram of a high-cardinality key."""

    __slots__ = ("counts", "total", "dropped", "pruned", "cap", "numeric", "lo", "hi", "sample", "stride")

    def __init__(self, cap: int = MAX_TRACKED) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0        # occurrences of the key, all values
        self.dropped = 0      # occurrences whose value is no longer tracked
        self.pruned = False   # some value was dropped: counts are lower bounds
        self.cap = cap
        self.numeric = True   # every value so far was a finite number
        self.lo = math.inf
        self.hi = -math.inf
        self.sample: list[float] = []
        self.stride = 1

    def add(self, label: str) -> None:
        counts = self.counts
        counts[label] = counts.get(label, 0) + 1
        self.total += 1
        if self.numeric:
            self._add_number(label)
        if len(counts) > self.cap:
            self._prune()

    def _add_number(self, label: str) -> None:
        try:
            x = float(label)
        except ValueError:
            x = math.nan
        if not math.isfinite(x):
            self.numeric = False
            self.sample = []
            return
        self.lo = min(self.lo, x)
        self.hi = max(self.hi, x)
        if (self.total - 1) % self.stride == 0:
            self.sample.append(x)
            if len(self.sample) >= MAX_SAMPLE:
                self.sample = self.sample[::2]
                self.stride *= 2

    def _prune(self) -> None:
        ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])   # stable: first seen wins ties
        keep = max(1, self.cap // 2)
        self.dropped += sum(n for _, n in ranked[keep:])
        self.counts = dict(ranked[:keep])
        self.pruned = True

    def top(self, n: int = TOP_VALUES) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    @property
    def high_cardinality(self) -> bool:
        """More distinct values than a top list shows, and the top ones say little: each was seen
        once, or together they cover under `SPREAD_SHARE` of the key (ids, amounts, coupon codes)."""
        if len(self.counts) <= TOP_VALUES or not self.total:
            return False
        top = self.top(TOP_VALUES)
        return top[0][1] == 1 or sum(n for _, n in top) < SPREAD_SHARE * self.total


class RuleFires:
    """One rule's aggregates. `days` maps a UTC day (YYYY-MM-DD) to [sent, held out, suppressed]."""

    __slots__ = ("days", "by_status", "reasons", "payload", "keys_dropped", "channels", "actions")

    def __init__(self) -> None:
        self.days: dict[str, list[int]] = {}
        self.by_status = [0, 0, 0]
        self.reasons: dict[str, int] = {}
        self.payload: dict[str, ValueCounts] = {}
        self.keys_dropped = 0
        self.channels: dict[str, int] = {}
        self.actions: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.by_status)


def value_label(value: object) -> str:
    """How a payload value is counted and shown: strings as they are, other values as JSON."""
    if type(value) is str:
        text = value
    elif type(value) in (int, float):
        text = repr(value)
    else:
        try:
            text = msgspec.json.encode(value).decode()
        except (TypeError, msgspec.EncodeError):
            text = repr(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return text


class ReportCollector:
    """Aggregates the triggers of a run for the HTML report; `add` each emitted batch.

    Memory is bounded by rules x days x 3 counters plus, per rule and payload key, at most
    `max_tracked` distinct values: no trigger is kept.
    """

    def __init__(self, max_tracked: int = MAX_TRACKED, max_keys: int = MAX_KEYS) -> None:
        self.rules: dict[str, RuleFires] = {}
        self.by_status = [0, 0, 0]   # sent, held out, suppressed
        self.other_status = 0        # a status this report does not know (none today)
        self.first_fired: str | None = None   # RFC 3339 UTC, as in the triggers
        self.last_fired: str | None = None
        self.max_tracked = max_tracked
        self.max_keys = max_keys

    @property
    def triggers(self) -> int:
        return sum(self.by_status) + self.other_status

    def add(self, triggers: Iterable[Trigger]) -> None:
        rules = self.rules
        by_status = self.by_status
        status_index = _STATUS_INDEX
        first, last = self.first_fired, self.last_fired
        for t in triggers:
            r = rules.get(t.rule_id)
            if r is None:
                r = rules[t.rule_id] = RuleFires()
            i = status_index.get(t.status)
            if i is None:
                self.other_status += 1
                continue
            fired = t.fired_at
            if first is None or fired < first:
                first = fired
            if last is None or fired > last:
                last = fired
            by_status[i] += 1
            r.by_status[i] += 1
            day = fired[:10]         # fired_at is RFC 3339 in UTC: its first 10 characters are the UTC day
            counts = r.days.get(day)
            if counts is None:
                counts = r.days[day] = [0, 0, 0]
            counts[i] += 1
            if i == 2:
                reason = t.reason or "unknown"
                r.reasons[reason] = r.reasons.get(reason, 0) + 1
            r.channels[t.channel] = r.channels.get(t.channel, 0) + 1
            r.actions[t.action] = r.actions.get(t.action, 0) + 1
            if t.payload:
                payload = r.payload
                for key, value in t.payload.items():
                    vc = payload.get(key)
                    if vc is None:
                        if len(payload) >= self.max_keys:
                            r.keys_dropped += 1
                            continue
                        vc = payload[key] = ValueCounts(self.max_tracked)
                    vc.add(value_label(value))
        self.first_fired, self.last_fired = first, last


# ----------------------------------------------------------------------------- rendering

def write_report(path: str | Path, collector: ReportCollector, summary: BacktestSummary, title: str,
                 rules_dir: str, events_file: str) -> None:
    """Write the report to `path` (UTF-8), replacing the file."""
    Path(path).write_text(render_report(collector, summary, title, rules_dir, events_file), encoding="utf-8")


def render_report(collector: ReportCollector, summary: BacktestSummary, title: str, rules_dir: str,
                  events_file: str) -> str:
    """One self-contained HTML page: header with inputs and totals, the per-rule summary with lift,
    each journey's funnel, fires over time per rule (small multiples), suppression reasons, top
    payload values."""
    rule_ids = list(summary.per_rule) + [r for r in collector.rules if r not in summary.per_rule]
    anchors = {rule_id: f"rule-{i}" for i, rule_id in enumerate(rule_ids)}
    lifts, program = rule_lifts(rule_ids, summary.by_customer, summary.program, summary.program_rules)
    bins, granularity = _bins(collector, summary.ended_at)
    parts = [
        _HEAD.format(title=escape(title), css=_CSS),
        _header(collector, summary, title, rules_dir, events_file),
        "<main>",
        _summary_section(summary, rule_ids, anchors, lifts, program),
        _journeys_section(summary, dict(zip(rule_ids, lifts)), anchors),
        _fires_section(collector, summary, rule_ids, anchors, bins, granularity),
        _conversion_section(summary, rule_ids, bins, granularity),
        _reasons_section(collector, rule_ids),
        _payload_section(collector, rule_ids, anchors),
        "</main>",
        "<footer>Generated by <code>triggers backtest --report</code>. Days are UTC. This page is "
        "self-contained: no scripts, no network.</footer>",
        "</body>\n</html>\n",
    ]
    return "\n".join(parts)


_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="trigger-engine">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style>
</head>
<body>"""

_CSS = """
:root { --ink: #1d2433; --muted: #5b6475; --line: #d9dee7; --bg: #f4f6f9; --card: #ffffff;
        --sent: #0072B2; --held: #E69F00; --supp: #999999; --accent: #1f3a5f; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
header { background: var(--accent); color: #fff; padding: 22px 32px 18px; }
header h1 { margin: 0 0 2px; font-size: 24px; font-weight: 600; letter-spacing: .2px; }
header .kind { text-transform: uppercase; font-size: 11px; letter-spacing: 1.5px; opacity: .75; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 12px 0 16px; font-size: 13px; }
header dt { opacity: .7; } header dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; word-break: break-all; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; }
.tile { background: rgba(255,255,255,.1); border-radius: 6px; padding: 8px 14px; min-width: 112px; }
.tile .n { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .l { font-size: 11px; text-transform: uppercase; letter-spacing: .8px; opacity: .8; }
.tile .dot { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 5px; vertical-align: 1px; }
.warn { margin-top: 12px; background: #fff4d6; color: #5a4300; border-radius: 6px; padding: 6px 12px; font-size: 13px; }
main { max-width: 1360px; margin: 0 auto; padding: 8px 32px 24px; }
section { margin-top: 26px; }
h2 { font-size: 18px; margin: 0 0 4px; font-weight: 600; }
.note { color: var(--muted); margin: 0 0 12px; font-size: 13px; }
table { border-collapse: collapse; background: var(--card); font-variant-numeric: tabular-nums; }
.tablewrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
.summary { width: 100%; }
.summary th, .summary td { padding: 6px 9px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
.summary th { background: #eef1f6; font-size: 12px; color: var(--muted); font-weight: 600; white-space: normal;
              vertical-align: bottom; line-height: 1.25; }
.summary th.lift, .summary td.lift { border-left: 1px solid var(--line); }
.summary td.rule, .summary th.rule { text-align: left; }
.summary td.verdict, .summary th:last-child { text-align: left; white-space: normal; min-width: 240px; }
.summary td.reasons, .summary th.reasons { text-align: left; color: var(--muted); font-size: 12px; line-height: 1.3; }
.summary tr.total td { font-weight: 600; background: #f7f8fb; border-bottom: 0; }
.summary a { color: var(--accent); text-decoration: none; font-weight: 600; }
.split { display: flex; width: 90px; height: 10px; border-radius: 2px; overflow: hidden; background: #eceff4; }
.split span { display: block; height: 100%; }
.sig { display: inline-block; font-size: 10px; font-weight: 700; padding: 0 5px; border-radius: 8px; margin-left: 4px;
       background: #dcebf7; color: #0b4f7c; }
.sig.neg { background: #f9e3d6; color: #8a3a00; }
.dash { color: #aab1bd; }
.ci { color: var(--muted); font-size: 11px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 0 0 12px; font-size: 13px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; }
.grid.payload { grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); align-items: start; }
.span2 { grid-column: span 2; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px 8px; }
.card h3 { margin: 0; font-size: 15px; font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; word-break: break-all; }
.card .meta { color: var(--muted); font-size: 12px; margin: 2px 0 6px; }
.card .meta b { color: var(--ink); font-weight: 600; }
.wide { grid-column: 1 / -1; }
.never-fired { margin-top: 14px; } .never-fired ul { margin: 6px 0 4px; padding-left: 20px; }
.never-fired li { margin: 2px 0; } .never-fired code { font-weight: 600; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: -apple-system, "Segoe UI", Roboto, Arial, "DejaVu Sans", sans-serif; fill: #5b6475; }
svg text.label { fill: #1d2433; }
.kv { display: flex; flex-wrap: wrap; gap: 14px; }
.kv table { border: 1px solid var(--line); min-width: 300px; max-width: 440px; }
.kv caption { text-align: left; font-weight: 600; padding: 4px 0; caption-side: top; font-size: 13px; }
.kv caption small { font-weight: 400; color: var(--muted); }
.kv td { padding: 3px 8px; border-bottom: 1px solid #eef0f4; font-size: 13px; }
.kv td.v { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; max-width: 220px;
           overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.kv td.n { text-align: right; width: 60px; }
.kv table.spread td.n { width: auto; white-space: nowrap; } .kv td.spread { color: var(--muted); }
.kv td.bar { width: 110px; }
.kv td.bar div { height: 8px; background: var(--sent); opacity: .55; border-radius: 1px; }
.empty { color: var(--muted); font-style: italic; }
.funnels { display: grid; gap: 14px; }
.card.journey h4 { margin: 12px 0 6px; font-size: 13px; font-weight: 600; }
.funnel td.kind, .funnel th.kind { text-align: left; color: var(--muted); }
.funnel tr.branch td.rule, .funnel tr.exit td.rule { padding-left: 28px; }
.funnel tr.branch td, .funnel tr.exit td { color: var(--muted); }
.funnel tr.group td { text-align: left; font-weight: 600; background: #f7f8fb; }
.funnel tr.inside td { border-top: 1px solid var(--line); }
.funnel td.bars, .funnel th.bars { width: 240px; text-align: left; }
.fbar { height: 7px; background: #eceff4; border-radius: 2px; margin: 2px 0; overflow: hidden; }
.fbar span { display: block; height: 100%; }
footer { max-width: 1360px; margin: 10px auto 30px; padding: 0 32px; color: var(--muted); font-size: 12px; }
@media print { body { background: #fff; } .card, table { break-inside: avoid; } }
"""


def _n(x: int) -> str:
    return f"{x:,}"


def shown_path(path: str) -> str:
    """A path as the page shows it: as given when relative, relative to the current directory
    when inside it, else its name only. A report is shared: it must not reveal the machine's layout."""
    p = Path(path)
    if not p.is_absolute():
        return path
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return p.name or path


def _header(c: ReportCollector, s: BacktestSummary, title: str, rules_dir: str, events_file: str) -> str:
    period = "no triggers"
    if c.first_fired and c.last_fired:
        period = f"{c.first_fired[:16].replace('T', ' ')} to {c.last_fired[:16].replace('T', ' ')} UTC"
    sent = sum(o.sent for o in s.per_rule.values())
    held = sum(o.held_out for o in s.per_rule.values())
    supp = sum(sum(o.suppressed.values()) for o in s.per_rule.values())
    colours = dict(STATUS_COLOURS)
    tiles = [
        ("events", _n(s.events), None), ("customers", _n(s.customers), None), ("triggers", _n(s.triggers), None),
        ("sent", _n(sent), colours["sent"]), ("held out", _n(held), colours["held out"]),
        ("suppressed", _n(supp), colours["suppressed"]),
        ("dead letters", _n(s.dead_letters), None), ("duplicates", _n(s.duplicates), None),
        ("late", _n(s.late), None), ("run time", f"{s.elapsed_s:.2f} s", None),
    ]
    tile_html = "".join(
        f'<div class="tile"><div class="n">{n}</div><div class="l">'
        + (f'<span class="dot" style="background:{col}"></span>' if col else "")
        + f"{escape(label)}</div></div>"
        for label, n, col in tiles
    )
    warnings = []
    if s.dead_letters:
        warnings.append(f"{_n(s.dead_letters)} event(s) could not be decoded (dead letters): they were not replayed.")
    if s.timers_dropped:
        warnings.append(f"{_n(s.timers_dropped)} deadline(s) not armed: more than 8 pending per rule and customer.")
    if c.triggers != s.triggers:
        warnings.append(f"The charts count {_n(c.triggers)} trigger(s), the run {_n(s.triggers)}: "
                        "the collector did not see every batch.")
    warn_html = "".join(f'<div class="warn">{escape(w)}</div>' for w in warnings)
    return (
        '<header>\n<div class="kind">Backtest report</div>\n'
        f"<h1>{escape(title)}</h1>\n"
        f"<dl><dt>Rules</dt><dd>{escape(shown_path(rules_dir))}</dd>"
        f"<dt>Events</dt><dd>{escape(shown_path(events_file))}</dd>"
        f"<dt>Triggers fired</dt><dd>{escape(period)}</dd>"
        f"<dt>Throughput</dt><dd>{s.events_per_s:,.0f} events/s</dd></dl>\n"
        f'<div class="tiles">{tile_html}</div>{warn_html}\n</header>'
    )


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _lift_cells(l: CustomerLift | None) -> str:
    """Customers as the unit (engine.policy.lift.customer_lift): conversion, revenue per customer, verdict."""
    if l is None or not l.control.customers or not l.contacted.customers:
        title = "no global control group" if l is None else "no control group (no held-out customers)"
        contacted = "" if l is None else f"{_n(l.contacted.converted)}/{_n(l.contacted.customers)} {_pct(l.contacted.rate)}"
        dash = f'<td class="dash" title="{title}">–</td>'
        return f'<td class="lift">{contacted or "–"}</td>' + dash * 4 + f'<td class="dash verdict">{escape(title)}</td>'
    a, b, c, r = l.contacted, l.control, l.conversion, l.revenue
    contacted = f"{_n(a.converted)}/{_n(a.customers)} {_pct(a.rate)}"
    control = f"{_n(b.converted)}/{_n(b.customers)} {_pct(b.rate)}"
    absolute = '<span class="dash">–</span>'
    if c.lift is not None and c.ci is not None:
        lo, hi = c.ci
        absolute = f"{100 * c.lift:+.1f}"
        if lo > 0:
            absolute += '<span class="sig" title="the 95% interval is above 0">up</span>'
        elif hi < 0:
            absolute += '<span class="sig neg" title="the 95% interval is below 0">down</span>'
        absolute += f'<br><small class="ci">[{100 * lo:+.1f}, {100 * hi:+.1f}]</small>'
    relative = '<span class="dash" title="undefined: no control customer converted">–</span>'
    if c.relative is not None and c.relative_ci is not None:
        high = "+∞" if c.relative_ci[1] is None else f"{100 * c.relative_ci[1]:+.1f}"
        relative = f'{100 * c.relative:+.0f}%<br><small class="ci">[{100 * c.relative_ci[0]:+.1f}, {high}]</small>'
    revenue = '<span class="dash">–</span>'
    if r.lift is not None and r.ci is not None and r.incremental_ci is not None:
        revenue = (f"{r.lift:+,.2f}<br><small class=\"ci\">[{r.ci[0]:+,.2f}, {r.ci[1]:+,.2f}]</small>"
                   f"<br><small>incremental {r.incremental:+,.0f} [{r.incremental_ci[0]:+,.0f}, "
                   f"{r.incremental_ci[1]:+,.0f}]</small>")
    verdict = escape(l.verdict)
    if l.verdict_kind is Verdict.INCONCLUSIVE:
        verdict = f'<span class="dash">{verdict}</span>'
    return (f'<td class="lift">{contacted}</td><td>{control}</td><td>{absolute}</td><td>{relative}</td>'
            f'<td>{revenue}</td><td class="verdict">{verdict}</td>')


def _utc(ms: int) -> str:
    """An epoch-ms instant as the page writes times: UTC, to the minute."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pending_note(s: BacktestSummary) -> str:
    """Why the pending column matters: deadlines due after the end of data are not fired unless drained."""
    if not s.pending_total:
        return ""
    n = s.pending_total
    what = f"{_n(n)} deadline{'s' if n != 1 else ''} pending at the end of data ({_utc(s.ended_at)})"
    verb = "was" if n == 1 else "were"
    if s.drained:
        text = f"{what} {verb} drained: fired at the end (--drain), after the replayed period."
    else:
        text = f"{what} {verb} not fired; --drain fires them."
    return f'<p class="note pending">{escape(text)}</p>\n'


def _split_bar(sent: int, held: int, supp: int) -> str:
    total = sent + held + supp
    if not total:
        return '<div class="split"></div>'
    spans = "".join(
        f'<span style="width:{100 * n / total:.2f}%;background:{col}"></span>'
        for n, (_, col) in zip((sent, held, supp), STATUS_COLOURS) if n
    )
    return f'<div class="split" title="sent {sent:,} / held out {held:,} / suppressed {supp:,}">{spans}</div>'


def _summary_section(s: BacktestSummary, rule_ids: list[str], anchors: dict[str, str], lifts: list[CustomerLift],
                     program: Program | None) -> str:
    """Two tables, so each fits a laptop's width: the decisions and responses per rule, then lift
    (`lifts`: each rule's, in `rule_ids` order, `rule_lifts`)."""
    rows, lift_rows = [], []
    total = RuleOutcome(suppressed={})
    for rule_id, lift in zip(rule_ids, lifts):
        o = s.per_rule.get(rule_id) or RuleOutcome(suppressed={})
        total.add(o)
        link = f'<a href="#{anchors[rule_id]}">{escape(rule_id)}</a>'
        rows.append(_summary_row(link, o, s.pending.get(rule_id, 0)))
        lift_rows.append(_lift_row(link, lift))
    rows.append(_summary_row("all rules", total, s.pending_total, css="total"))
    lift_rows.append(_lift_row("all rules", None if program is None else program.lift, css="total"))
    return (
        '<section id="summary">\n<h2>Per rule</h2>\n'
        '<p class="note">Decisions of the contact policy, and what customers did within the attribution window. '
        "Responded and converted count sent and held-out triggers, as the CLI's summary does.</p>\n"
        + _pending_note(s) +
        '<div class="tablewrap"><table class="summary">\n<thead><tr><th class="rule">rule</th><th>sent</th>'
        "<th>held out</th><th>suppressed</th><th>split</th><th>responded</th><th>converted</th>"
        '<th>pending at end</th><th class="reasons">suppression reasons</th></tr></thead>\n<tbody>\n'
        + "\n".join(rows) + "\n</tbody>\n</table></div>\n</section>\n"
        '<section id="lift">\n<h2>Lift</h2>\n'
        '<p class="note">Customers, each counted once per rule: contacted (got a sent trigger) against the '
        "control group (held out), conversion as the share of customers converted, revenue per customer "
        "(non-buyers included). Intervals are 95% (conversion: Newcombe, in points; relative: MOVER-R; revenue: "
        "Welch). The all-rules row is the global control group against every contacted customer, each "
        "conversion once.</p>\n"
        + _lift_table("rule", lift_rows) + "\n</section>"
    )


def _lift_table(first: str, rows: list[str]) -> str:
    """The lift table's head and `rows` (`_lift_row`): the lift section, and each journey's lift."""
    return ('<div class="tablewrap"><table class="summary lift">\n<thead><tr>'
            f'<th class="rule">{escape(first)}</th>'
            "<th>contacted conv.</th><th>control conv.</th><th>abs lift (95% CI, points)</th>"
            "<th>rel lift (95% CI, %)</th><th>rev/customer lift (95% CI)</th><th>verdict</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table></div>")


def _summary_row(label: str, o: RuleOutcome, pending: int, css: str = "") -> str:
    supp = sum(o.suppressed.values())
    reasons = "<br>".join(f"{escape(r)} {n:,}" for r, n in sorted(o.suppressed.items()))
    cls = f' class="{css}"' if css else ""
    return (
        f'<tr{cls}><td class="rule">{label}</td><td>{_n(o.sent)}</td><td>{_n(o.held_out)}</td><td>{_n(supp)}</td>'
        f"<td>{_split_bar(o.sent, o.held_out, supp)}</td>"
        f"<td>{_n(o.responded + o.held_out_responded)}</td><td>{_n(o.converted + o.held_out_converted)}</td>"
        f'<td>{_n(pending)}</td><td class="reasons">{reasons}</td></tr>'
    )


def _lift_row(label: str, l: CustomerLift | None, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<tr{cls}><td class="rule">{label}</td>{_lift_cells(l)}</tr>'


def _journeys_section(s: BacktestSummary, lifts: dict[str, CustomerLift], anchors: dict[str, str]) -> str:
    """Per journey, its funnel and its lift as a whole (the journey is one rule: its row of the lift table)."""
    if not s.funnels:
        return ""
    cards = [_funnel_card(f, s.journey_steps.get(journey), lifts.get(journey), anchors.get(journey), i)
             for i, (journey, f) in enumerate(s.funnels.items())]
    legend = _legend((("contacted", STATUS_COLOURS[0][1]), ("held out", STATUS_COLOURS[1][1])))
    return ('<section id="journeys">\n<h2>Journeys</h2>\n'
            '<p class="note">Per journey, the walks that entered it (a customer who enters again walks again), '
            "reached each step (in file order), took each branch and ended, by reason; the contacted and the "
            "held-out group side by side (held-out customers walk the same steps, their sends recorded, not sent). "
            "Shares are of the walks that entered; the bars are each group's share of its own entries. Below each "
            "funnel, the journey's lift as a whole: customers as the unit, as in the lift table.</p>\n"
            + legend + '\n<div class="funnels">\n' + "\n".join(cards) + "\n</div>\n</section>")


def _funnel_card(f: Funnel, steps: list[StepShape] | None, lift: CustomerLift | None, anchor: str | None,
                 i: int) -> str:
    e = f.entered
    name = escape(f.journey)
    title = f'<a href="#{anchor}" style="color:inherit">{name}</a>' if anchor else name
    meta = f"<b>{_n(e.total)}</b> entered: {_n(e.contacted)} contacted, {_n(e.held_out)} held out"
    refused = not_entered_text(f)
    if refused:
        meta += f" &middot; entry events that started no walk: {escape(refused)}"
    if e.total:
        body = ('<div class="tablewrap"><table class="summary funnel">\n<thead><tr><th class="rule">step</th>'
                '<th class="kind">kind</th><th>reached, contacted</th><th>reached, held out</th>'
                '<th>share of entered</th><th class="bars">contacted / held out</th>'
                '<th class="reasons">send outcomes</th></tr></thead>\n<tbody>\n'
                + "\n".join(_funnel_rows_html(funnel_rows(f, steps))) + "\n</tbody>\n</table></div>")
    else:
        body = '<p class="empty">Nobody entered this journey.</p>'
    lift_html = ('<h4>Lift of the journey as a whole</h4>' + _lift_table("journey", [_lift_row(name, lift)])
                 if lift is not None else "")
    return (f'<div class="card journey" id="journey-{i}"><h3>{title}</h3><div class="meta">{meta}</div>'
            f"{body}{lift_html}</div>")


def _funnel_rows_html(rows: list[Row]) -> list[str]:
    out = []
    exits = False
    for r in rows:
        if r.kind is RowKind.EXIT and not exits:
            out.append('<tr class="group"><td colspan="7">exits</td></tr>')
            exits = True
        css = {RowKind.STEP: "step", RowKind.BRANCH: "branch", RowKind.EXIT: "exit", RowKind.INSIDE: "inside"}[r.kind]
        kind = r.step_kind or ("" if r.kind is RowKind.INSIDE else r.kind.value)
        w = r.walks
        out.append(
            f'<tr class="{css}"><td class="rule">{escape(r.label)}</td><td class="kind">{escape(kind)}</td>'
            f'<td>{_n(w.contacted)}<br><small class="ci">{_pct(r.contacted_share)}</small></td>'
            f'<td>{_n(w.held_out)}<br><small class="ci">{_pct(r.held_out_share)}</small></td>'
            f"<td>{_pct(r.share)}</td><td class=\"bars\">{_funnel_bars(r)}</td>"
            f'<td class="reasons">{escape(outcomes_text(r.outcomes))}</td></tr>')
    return out


def _funnel_bars(r: Row) -> str:
    """Two bars: the contacted and the held-out group's share of their entries."""
    out = []
    for (label, colour), share in zip(STATUS_COLOURS[:2], (r.contacted_share, r.held_out_share)):
        width = 0.0 if share is None else 100 * share
        tip = f"{label}: {_pct(share)} of its entries"
        out.append(f'<div class="fbar" title="{escape(tip)}"><span style="width:{width:.1f}%;background:{colour}">'
                   "</span></div>")
    return "".join(out)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{col}"></i>{escape(label)}</span>' for label, col in items) + "</div>"


def _fires_section(c: ReportCollector, s: BacktestSummary, rule_ids: list[str], anchors: dict[str, str],
                   bins: list[dt.date], granularity: str) -> str:
    """One chart for all rules, one per rule that fired; the rules that never fired in one list."""
    ended_at = s.ended_at
    silent = [rule_id for rule_id in rule_ids if not _fired(c, s, rule_id)]
    every = {"day": "day", "week": "week (Monday to Sunday)", "month": "month"}[granularity]
    all_days: dict[str, list[int]] = {}
    for r in c.rules.values():
        for day, counts in r.days.items():
            acc = all_days.setdefault(day, [0, 0, 0])
            for i in range(3):
                acc[i] += counts[i]
    cards = [
        '<div class="card wide"><h3>all rules</h3>'
        f'<div class="meta"><b>{_n(c.triggers)}</b> triggers</div>'
        f"{_fires_chart(all_days, bins, granularity, 'all rules', ended_at, height=170, width=1280)}</div>"
    ]
    for rule_id in rule_ids:
        if rule_id in silent:
            continue
        r = c.rules.get(rule_id) or RuleFires()
        sent, held, supp = r.by_status
        channels = ", ".join(escape(ch) for ch, _ in sorted(r.channels.items(), key=lambda kv: -kv[1]))
        actions = ", ".join(escape(a) for a, _ in sorted(r.actions.items(), key=lambda kv: -kv[1]))
        meta = (f"<b>{_n(r.total)}</b> triggers: {_n(sent)} sent, {_n(held)} held out, {_n(supp)} suppressed"
                + (f" &middot; {actions} via {channels}" if actions else ""))
        cards.append(
            f'<div class="card" id="{anchors[rule_id]}"><h3>{escape(rule_id)}</h3><div class="meta">{meta}</div>'
            f"{_fires_chart(r.days, bins, granularity, rule_id, ended_at)}</div>"
        )
    return (
        '<section id="fires">\n<h2>Fires over time</h2>\n'
        f'<p class="note">Triggers per UTC {every}, stacked by status. Every chart shares the time axis; '
        "each has its own count axis. Hover a bar for its figures. The dashed line is the end of data "
        "(the last event replayed, or --until): deadlines due after it are pending, not fired (unless drained).</p>\n"
        + _legend(STATUS_COLOURS) + '\n<div class="grid">\n' + "\n".join(cards) + "\n</div>\n"
        + _never_fired(s, silent, anchors) + "</section>"
    )


def _fired(c: ReportCollector, s: BacktestSummary, rule_id: str) -> bool:
    r = c.rules.get(rule_id)
    o = s.per_rule.get(rule_id)
    return bool(r and r.total) or bool(o and o.sent + o.held_out + sum(o.suppressed.values()))


def silence_reason(s: BacktestSummary, rule_id: str) -> str:
    """Why a rule fired nothing: its events were missing from the input, its deadlines are all
    still pending at the end of data, or its condition never held on the events it saw."""
    pending = s.pending.get(rule_id, 0)
    if pending and not s.drained:
        return f"{pending:,} pending at the end of data"
    on = s.rule_events.get(rule_id, [])
    if on and "*" not in on and not any(s.event_types.get(t) for t in on):
        return "no " + " or ".join(f"'{t}'" for t in on) + " events in the input"
    if on and "*" in on and not s.events:
        return "no events in the input"
    return "its condition never held"


def _never_fired(s: BacktestSummary, silent: list[str], anchors: dict[str, str]) -> str:
    if not silent:
        return ""
    items = "".join(f'<li id="{anchors[rule_id]}"><code>{escape(rule_id)}</code>: '
                    f"{escape(silence_reason(s, rule_id))}</li>" for rule_id in silent)
    return (f'<div class="card never-fired"><h3>{len(silent):,} rule{"s" if len(silent) != 1 else ""} '
            f'never fired</h3><ul>{items}</ul></div>\n')


def _day_of(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def _bins(c: ReportCollector, ended_at: int = 0) -> tuple[list[dt.date], str]:
    """The shared time axis: the first day of every bar from the first fire to the last, and to
    the end of data (`ended_at`, epoch ms; 0: unknown) so its marker is on the axis."""
    days = [dt.date.fromisoformat(t[:10]) for t in (c.first_fired, c.last_fired) if t]
    if ended_at:
        days.append(_day_of(ended_at))
    if not days:
        return [], "day"
    first, last = min(days), max(days)
    span = (last - first).days + 1
    if span <= MAX_BINS:
        return [first + dt.timedelta(days=i) for i in range(span)], "day"
    if span <= MAX_BINS * 7:
        start = first - dt.timedelta(days=first.weekday())
        return [start + dt.timedelta(weeks=i) for i in range((last - start).days // 7 + 1)], "week"
    out, d = [], first.replace(day=1)
    while d <= last:
        out.append(d)
        d = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return out, "month"


def _bin_of(day: dt.date, granularity: str) -> dt.date:
    if granularity == "week":
        return day - dt.timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _next_bin(start: dt.date, granularity: str) -> dt.date:
    if granularity == "week":
        return start + dt.timedelta(weeks=1)
    if granularity == "month":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start + dt.timedelta(days=1)


def _bin_position(ms: int, bins: list[dt.date], granularity: str) -> float | None:
    """Where an instant falls on the time axis, in bars from its left edge (None: off the axis)."""
    if not bins:
        return None
    start = _bin_of(_day_of(ms), granularity)
    try:
        i = bins.index(start)
    except ValueError:
        return None
    begin = dt.datetime.combine(start, dt.time(), dt.UTC).timestamp() * 1000
    end = dt.datetime.combine(_next_bin(start, granularity), dt.time(), dt.UTC).timestamp() * 1000
    return i + (ms - begin) / (end - begin)


def _end_marker(ended_at: int, bins: list[dt.date], granularity: str, left: float, slot: float, top: float,
                plot_h: float, width: int) -> str:
    """The end of data as a labelled dashed vertical line: nothing after it was replayed."""
    pos = _bin_position(ended_at, bins, granularity) if ended_at else None
    if pos is None:
        return ""
    x = left + pos * slot
    anchor, text_x = ("end", x - 4) if x > width - 90 else ("start", x + 4)
    return (f'<g class="end-of-data"><title>end of data: {_utc(ended_at)}</title>'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#1d2433" '
            'stroke-width="1.2" stroke-dasharray="4 3"/>'
            f'<text x="{text_x:.1f}" y="{top + 10}" font-size="11" text-anchor="{anchor}" class="label">'
            "end of data</text></g>")


def _nice_ticks(top: int, want: int = 4) -> list[int]:
    """0 and round steps (1, 2, 5 x 10^k) up to at least `top`."""
    if top <= 0:
        return [0, 1]
    raw = top / want
    mag = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(1, int(step))
    n = math.ceil(top / step)
    return [i * step for i in range(n + 1)]


def _date_ticks(bins: list[dt.date], granularity: str, max_ticks: int) -> list[tuple[int, str]]:
    if not bins:
        return []
    span = (bins[-1] - bins[0]).days
    if granularity == "day" and span <= 10:
        idx = list(range(len(bins)))
    elif granularity == "day" and span <= 60:
        idx = [i for i, d in enumerate(bins) if d.weekday() == 0]
    else:
        idx = [i for i, d in enumerate(bins) if i == 0 and d.day == 1 or i > 0 and d.month != bins[i - 1].month]
    if not idx:
        idx = [0]
    step = 1
    while len(idx[::step]) > max_ticks:
        step += 1
    idx = idx[::step]
    month_ticks = granularity != "day" or span > 60
    labels, year = [], None
    for i in idx:
        d = bins[i]
        label = d.strftime("%b") if month_ticks else f"{d.strftime('%b')} {d.day}"
        if d.year != year:   # the year on the first tick and wherever it changes
            label += f" {d.year}"
            year = d.year
        labels.append((i, label))
    return labels


def _fires_chart(days: dict[str, list[int]], bins: list[dt.date], granularity: str, name: str, ended_at: int,
                 width: int = 640, height: int = 190) -> str:
    """Stacked bars per bin (sent at the bottom, then held out, suppressed), with axes."""
    left, right, top, bottom = 46, 10, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    index = {d: i for i, d in enumerate(bins)}
    stacks = [[0, 0, 0] for _ in bins]
    for day, counts in days.items():
        i = index.get(_bin_of(dt.date.fromisoformat(day), granularity))
        if i is not None:
            for k in range(3):
                stacks[i][k] += counts[k]
    peak = max((sum(s) for s in stacks), default=0)
    ticks = _nice_ticks(peak)
    y_max = ticks[-1]
    out = [f'<svg class="chart fires" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(name)}: triggers per {granularity} by status">']
    for t in ticks:
        y = top + plot_h - plot_h * t / y_max
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7ee" stroke-width="1"/>'
                   f'<text x="{left - 6}" y="{y + 3.5:.1f}" font-size="11" text-anchor="end">{t:,}</text>')
    n = len(bins)
    if n:
        slot = plot_w / n
        gap = 1.0 if slot >= 4 else 0.0
        for i, (d, stack) in enumerate(zip(bins, stacks)):
            if not sum(stack):
                continue
            x = left + i * slot + gap / 2
            y = top + plot_h
            label = d.isoformat() if granularity == "day" else f"{granularity} of {d.isoformat()}"
            tip = f"{label}: {stack[0]:,} sent, {stack[1]:,} held out, {stack[2]:,} suppressed"
            out.append(f"<g><title>{escape(tip)}</title>")
            for k, (_, colour) in enumerate(STATUS_COLOURS):
                if not stack[k]:
                    continue
                h = plot_h * stack[k] / y_max
                y -= h
                out.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(slot - gap, 0.5):.2f}" height="{h:.2f}" '
                           f'fill="{colour}"/>')
            out.append("</g>")
        for i, label in _date_ticks(bins, granularity, max_ticks=max(3, plot_w // 80)):
            x = left + (i + 0.5) * slot
            half = 3.2 * len(label)   # about half the label's width at font-size 11: keep it inside the chart
            text_x = min(max(x, half + 2), width - half - 2)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#8a93a3"/>'
                       f'<text x="{text_x:.1f}" y="{top + plot_h + 17}" font-size="11" text-anchor="middle">'
                       f"{escape(label)}</text>")
        out.append(_end_marker(ended_at, bins, granularity, left, slot, top, plot_h, width))
    if not peak:
        out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" font-size="13" '
                   'text-anchor="middle" font-style="italic">no triggers</text>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#8a93a3"/>')
    out.append("</svg>")
    return "".join(out)


def _conversion_section(s: BacktestSummary, rule_ids: list[str], bins: list[dt.date], granularity: str) -> str:
    """Conversion over time, contacted against control: per rule with a control group (and for
    all rules against the global control group), the share of customers converted among those
    first triggered up to each day. Cumulative, because a day's handful of customers says little."""
    cards = []
    outcomes: list[tuple[str, CustomerOutcome | None]] = [("all rules", s.program)] if s.program is not None else []
    outcomes += [(rule_id, s.by_customer.get(rule_id)) for rule_id in rule_ids]
    without = []
    for name, o in outcomes:
        if o is None or not o.days:
            continue
        if not o.control.customers:
            without.append(name)
            continue
        meta = (f"<b>{_n(o.contacted.converted)}</b>/{_n(o.contacted.customers)} contacted, "
                f"<b>{_n(o.control.converted)}</b>/{_n(o.control.customers)} control customers converted")
        wide = " wide" if name == "all rules" else ""
        cards.append(f'<div class="card{wide} conversion"><h3>{escape(name)}</h3><div class="meta">{meta}</div>'
                     f"{_conversion_chart(o.days, bins, granularity, name, s.ended_at, wide=bool(wide))}</div>")
    if not cards and not without:
        return ""
    rest = (f'<p class="note">No control group, so nothing to compare: {escape(", ".join(without))}.</p>'
            if without else "")
    legend = _legend((("contacted", STATUS_COLOURS[0][1]), ("control", STATUS_COLOURS[1][1])))
    return ('<section id="conversion">\n<h2>Conversion over time: contacted vs control</h2>\n'
            '<p class="note">Per UTC bin of the customers\' first trigger: the share converted within the '
            "attribution window among the customers first triggered up to then (cumulative), for the contacted "
            "and the control group. Customers as the unit; triggers whose window runs past the end of data are "
            "left out.</p>\n" + legend + '\n<div class="grid">\n' + "\n".join(cards) + "\n</div>\n" + rest
            + "</section>")


def _conversion_chart(days: dict[str, list[int]], bins: list[dt.date], granularity: str, name: str, ended_at: int,
                      wide: bool = False) -> str:
    """Two lines (contacted, control) of the cumulative conversion rate, with a point per bin that has customers."""
    width, height = (1280, 170) if wide else (640, 190)
    left, right, top, bottom = 46, 10, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    index = {d: i for i, d in enumerate(bins)}
    per_bin = [[0, 0, 0, 0] for _ in bins]
    for day, counts in days.items():
        i = index.get(_bin_of(dt.date.fromisoformat(day), granularity))
        if i is not None:
            for k in range(4):
                per_bin[i][k] += counts[k]
    series: list[list[tuple[int, float, int, int]]] = [[], []]   # (bin, rate, converted, customers)
    totals = [[0, 0], [0, 0]]
    for i, counts in enumerate(per_bin):
        for g in (0, 1):
            totals[g][0] += counts[2 * g]
            totals[g][1] += counts[2 * g + 1]
            if counts[2 * g] and totals[g][0]:
                series[g].append((i, totals[g][1] / totals[g][0], totals[g][1], totals[g][0]))
    peak = max((r for line in series for _, r, _, _ in line), default=0.0)
    ticks = _nice_ticks(max(1, math.ceil(100 * peak)))
    y_max = ticks[-1] / 100
    out = [f'<svg class="chart conversion" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(name)}: conversion over time, contacted and control">']
    for t in ticks:
        y = top + plot_h - plot_h * t / 100 / y_max
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7ee" stroke-width="1"/>'
                   f'<text x="{left - 6}" y="{y + 3.5:.1f}" font-size="11" text-anchor="end">{t}%</text>')
    slot = plot_w / len(bins) if bins else plot_w
    for g, (label, colour) in enumerate((("contacted", STATUS_COLOURS[0][1]), ("control", STATUS_COLOURS[1][1]))):
        points = [(left + (i + 0.5) * slot, top + plot_h - plot_h * rate / y_max, i, rate, converted, n)
                  for i, rate, converted, n in series[g]]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, *_ in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for px, py, i, rate, converted, n in points:
            when = bins[i].isoformat() if granularity == "day" else f"{granularity} of {bins[i].isoformat()}"
            tip = f"{label}, first triggered up to {when}: {converted:,}/{n:,} converted ({100 * rate:.1f}%)"
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.6" fill="{colour}"><title>{escape(tip)}</title></circle>')
    if bins:
        for i, label in _date_ticks(bins, granularity, max_ticks=max(3, plot_w // 80)):
            x = left + (i + 0.5) * slot
            half = 3.2 * len(label)
            text_x = min(max(x, half + 2), width - half - 2)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#8a93a3"/>'
                       f'<text x="{text_x:.1f}" y="{top + plot_h + 17}" font-size="11" text-anchor="middle">'
                       f"{escape(label)}</text>")
        out.append(_end_marker(ended_at, bins, granularity, left, slot, top, plot_h, width))
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#8a93a3"/>')
    out.append("</svg>")
    return "".join(out)


def _reason_colours(reasons: Iterable[str]) -> dict[str, str]:
    colours, extra = {}, 0
    for reason in reasons:
        if reason in REASON_COLOURS:
            colours[reason] = REASON_COLOURS[reason]
        else:
            colours[reason] = _EXTRA_COLOURS[extra % len(_EXTRA_COLOURS)]
            extra += 1
    return colours


def _reasons_section(c: ReportCollector, rule_ids: list[str]) -> str:
    rows = [(rule_id, c.rules[rule_id].reasons) for rule_id in rule_ids
            if rule_id in c.rules and c.rules[rule_id].reasons]
    head = ('<section id="reasons">\n<h2>Suppression reasons</h2>\n'
            '<p class="note">Suppressed triggers per rule, by the first policy check that failed '
            "(consent, cooldown, priority, quiet hours, frequency cap).</p>\n")
    if not rows:
        return head + '<p class="empty">No trigger was suppressed.</p>\n</section>'
    totals: dict[str, int] = {}
    for _, reasons in rows:
        for reason, n in reasons.items():
            totals[reason] = totals.get(reason, 0) + n
    order = sorted(totals, key=lambda r: (-totals[r], r))
    colours = _reason_colours(order)
    rows.sort(key=lambda row: -sum(row[1].values()))

    width, row_h, top, bottom = 1280, 26, 8, 26
    label_w = min(240, 14 + 7 * max(len(rule_id) for rule_id, _ in rows))
    left, right = label_w + 8, 60
    plot_w = width - left - right
    height = top + bottom + row_h * len(rows)
    peak = max(sum(r.values()) for _, r in rows)
    ticks = _nice_ticks(peak, want=6)
    x_max = ticks[-1]
    out = [f'<svg class="chart reasons" viewBox="0 0 {width} {height}" role="img" '
           'aria-label="suppressed triggers per rule by reason">']
    for t in ticks:
        x = left + plot_w * t / x_max
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="#e3e7ee"/>'
                   f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="middle">{t:,}</text>')
    for j, (rule_id, reasons) in enumerate(rows):
        y = top + j * row_h
        shown = rule_id if len(rule_id) <= 32 else rule_id[:31] + "…"
        out.append(f'<text x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" font-size="12" text-anchor="end" '
                   f'class="label"><title>{escape(rule_id)}</title>{escape(shown)}</text>')
        x = float(left)
        for reason in order:
            n = reasons.get(reason, 0)
            if not n:
                continue
            w = plot_w * n / x_max
            out.append(f'<rect x="{x:.2f}" y="{y + 4}" width="{w:.2f}" height="{row_h - 8}" fill="{colours[reason]}">'
                       f"<title>{escape(rule_id)}: {escape(reason)} {n:,}</title></rect>")
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" font-size="12">'
                   f"{sum(reasons.values()):,}</text>")
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}" stroke="#8a93a3"/>')
    out.append("</svg>")
    legend = _legend([(f"{reason} ({totals[reason]:,})", colours[reason]) for reason in order])
    return head + legend + '\n<div class="card">' + "".join(out) + "</div>\n</section>"


def _payload_section(c: ReportCollector, rule_ids: list[str], anchors: dict[str, str]) -> str:
    blocks = []
    for rule_id in rule_ids:
        r = c.rules.get(rule_id)
        if r is None or not r.payload:
            continue
        tables = [_spread_table(key, vc) if vc.high_cardinality else _top_table(key, vc)
                  for key, vc in r.payload.items()]
        extra = (f'<p class="note">{r.keys_dropped:,} value(s) of further payload keys not tracked.</p>'
                 if r.keys_dropped else "")
        span = ' span2' if len(r.payload) > 1 else ""
        blocks.append(f'<div class="card{span}"><h3><a href="#{anchors[rule_id]}" style="color:inherit">'
                      f'{escape(rule_id)}</a></h3><div class="kv">{"".join(tables)}</div>{extra}</div>')
    head = ('<section id="payload">\n<h2>Top payload values</h2>\n'
            f'<p class="note">The {TOP_VALUES} most common values of each payload key, per rule, over every '
            f"trigger (sent, held out and suppressed). Beyond {c.max_tracked:,} distinct values per key the rarest "
            "are dropped; counts marked ≥ are then lower bounds. A key with many distinct values, none common "
            "(ids, amounts, codes), is summarised instead: its distinct values and, for numbers, their "
            "histogram.</p>\n")
    if not blocks:
        return head + '<p class="empty">No rule fired a trigger with a payload.</p>\n</section>'
    return head + '<div class="grid payload">\n' + "\n".join(blocks) + "\n</div>\n</section>"


def _distinct(vc: ValueCounts) -> str:
    return f"over {len(vc.counts):,} distinct" if vc.pruned else f"{len(vc.counts):,} distinct"


def _top_table(key: str, vc: ValueCounts) -> str:
    top = vc.top(TOP_VALUES)
    peak = top[0][1] if top else 1
    rows = "".join(
        f'<tr><td class="v" title="{escape(value)}">{escape(value)}</td>'
        f'<td class="n">{"≥ " if vc.pruned else ""}{n:,}</td>'
        f'<td class="n">{100 * n / vc.total:.1f}%</td>'
        f'<td class="bar"><div style="width:{100 * n / peak:.1f}%"></div></td></tr>'
        for value, n in top
    )
    return (f"<table><caption>{escape(key)} <small>{vc.total:,} triggers, {_distinct(vc)}"
            f"</small></caption>{rows}</table>")


def _spread_table(key: str, vc: ValueCounts) -> str:
    """A high-cardinality key: how many distinct values, the most common one's count, and for
    numbers their range and histogram (a top list would be a list of ones)."""
    top = vc.top(3)
    common = f"the most common seen {top[0][1]:,} time{'s' if top[0][1] != 1 else ''}"
    rows = [f'<tr><td>distinct values</td><td class="n">{_distinct(vc).removesuffix(" distinct")}</td></tr>',
            f'<tr><td colspan="2" class="spread">{common}</td></tr>']
    if vc.numeric and vc.sample:
        ordered = sorted(vc.sample)
        median = ordered[len(ordered) // 2]
        rows.append(f'<tr><td>min / median / max</td><td class="n">{_num(vc.lo)} / {_num(median)} / '
                    f"{_num(vc.hi)}</td></tr>")
        rows.append(f'<tr><td colspan="2">{_histogram(key, vc)}</td></tr>')
    else:
        examples = ", ".join(f"<code>{escape(v)}</code>" for v, _ in top)
        rows.append(f'<tr><td colspan="2" class="spread">e.g. {examples}</td></tr>')
    return (f'<table class="spread"><caption>{escape(key)} <small>{vc.total:,} triggers, high cardinality'
            f"</small></caption>{''.join(rows)}</table>")


def _num(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) and abs(x) < 1e15 else f"{x:,.2f}"


def _histogram(key: str, vc: ValueCounts, width: int = 300, height: int = 64) -> str:
    """Equal-width bins from the exact min to max, counted over the sample (its share of each bin)."""
    lo, hi, sample = vc.lo, vc.hi, vc.sample
    span = hi - lo
    counts = [0] * HIST_BINS
    for x in sample:
        counts[min(HIST_BINS - 1, int((x - lo) / span * HIST_BINS)) if span else 0] += 1
    peak = max(counts)
    slot = width / HIST_BINS
    scale = vc.total / len(sample)   # the sample is every stride-th value: counts scaled back
    bars = []
    for i, n in enumerate(counts):
        if not n:
            continue
        h = (height - 14) * n / peak
        a, b = lo + span * i / HIST_BINS, lo + span * (i + 1) / HIST_BINS
        bars.append(f'<rect x="{i * slot + 0.5:.1f}" y="{height - 14 - h:.1f}" width="{slot - 1:.1f}" '
                    f'height="{h:.1f}" fill="#0072B2" opacity=".6"><title>{_num(a)} to {_num(b)}: '
                    f"about {round(n * scale):,}</title></rect>")
    return (f'<svg class="chart hist" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(key)}: histogram of its values">{"".join(bars)}'
            f'<text x="0" y="{height - 2}" font-size="10">{_num(lo)}</text>'
            f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{_num(hi)}</text></svg>')
