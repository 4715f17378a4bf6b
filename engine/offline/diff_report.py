"""`triggers diff --report FILE.html`: a rules change side by side for the people who decide on
it: per rule, each side's volume per channel and status and its lift (customers as the unit,
`engine.policy.lift`), with what the change removes, adds and changes.

One self-contained page (no scripts, no network), styled like the backtest report
(`engine.offline.report_html`), whose stylesheet it shares.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from engine.actions.trigger import Trigger
from engine.offline.backtest import pending_note
from engine.offline.diff import DiffResult
from engine.offline.report_html import _CSS, _HEAD, shown_path
from engine.policy.lift import CustomerLift, Verdict, customer_lift

__all__ = ["Volumes", "count_volumes", "render_diff_report", "write_diff_report"]

Volumes = dict[str, dict[str, dict[str, int]]]
"""rule id -> channel -> status -> triggers."""

_STATUSES = (("sent", "sent"), ("held_out", "held out"), ("suppressed", "suppressed"))

_DIFF_CSS = """
table.diff { border-collapse: collapse; width: 100%; background: var(--card); font-size: 13px; }
table.diff th, table.diff td { border-bottom: 1px solid var(--line); padding: 6px 8px; vertical-align: top; text-align: left; }
table.diff th { font-size: 11px; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); }
table.diff th.side { border-left: 2px solid var(--line); }
table.diff td.side { border-left: 2px solid var(--line); }
table.diff td.num { text-align: right; font-variant-numeric: tabular-nums; }
.chan { white-space: nowrap; } .chan b { font-weight: 600; }
.verdict { color: var(--muted); font-size: 12px; }
.state-changed, .state-added, .state-removed { font-weight: 600; }
.state-added { color: #1a7f37; } .state-removed { color: #b42318; } .state-changed { color: #9a6700; }
"""


def count_volumes(triggers: dict[str, list[Trigger]]) -> Volumes:
    """Triggers grouped by id (as a diff collects them) -> counts per rule, channel and status."""
    volumes: Volumes = {}
    for same_id in triggers.values():
        for t in same_id:
            by_status = volumes.setdefault(t.rule_id, {}).setdefault(t.channel, {})
            by_status[str(t.status)] = by_status.get(str(t.status), 0) + 1
    return volumes


def write_diff_report(path: str | Path, result: DiffResult) -> None:
    Path(path).write_text(render_diff_report(result), encoding="utf-8")


def render_diff_report(result: DiffResult) -> str:
    """The page: what was compared, the totals, then one row per rule with both sides."""
    old, new = result.old_backtest, result.new_backtest
    assert old is not None and new is not None, "diff_backtests fills both sides' summaries"
    old_volumes, new_volumes = count_volumes(result.old_triggers), count_volumes(result.new_triggers)
    s = result.summary
    old_lifts = {rid: customer_lift(rid, o) for rid, o in old.by_customer.items()}
    new_lifts = {rid: customer_lift(rid, o) for rid, o in new.by_customer.items()}
    rows = "\n".join(
        f'<tr><td><b>{escape(r.rule_id)}</b><br><span class="state-{escape(r.rule)}">{escape(r.rule)}</span></td>'
        f'<td class="side">{_volume(old_volumes.get(r.rule_id))}</td><td>{_lift(old_lifts.get(r.rule_id))}</td>'
        f'<td class="side">{_volume(new_volumes.get(r.rule_id))}</td><td>{_lift(new_lifts.get(r.rule_id))}</td>'
        f'<td class="side num">{r.removed:,}</td><td class="num">{r.added:,}</td><td class="num">{r.changed:,}</td>'
        f'<td class="num">{r.customers:,}</td></tr>'
        for r in s.rules
    )
    notes = []
    if s.policy_changed:
        notes.append("The contact policy changed: every rule's statuses may move.")
    if s.old_pending or s.new_pending:
        notes.append(pending_note(f"{s.old_pending:,} deadlines before, {s.new_pending:,} after", s.ended_at or "-",
                                  s.drained) + ".")
    note_html = "".join(f'<div class="warn">{escape(n)}</div>' for n in notes)
    tiles = [("events", s.events), ("triggers before", s.old_triggers), ("triggers after", s.new_triggers),
             ("removed", s.removed), ("added", s.added), ("changed", s.changed), ("customers affected", s.customers)]
    tile_html = "".join(f'<div class="tile"><div class="n">{n:,}</div><div class="l">{escape(label)}</div></div>'
                        for label, n in tiles)
    header = (
        '<header>\n<div class="kind">Rules diff</div>\n'
        f"<h1>{escape(shown_path(s.old_rules))} → {escape(shown_path(s.new_rules))}</h1>\n"
        f"<dl><dt>Old rules</dt><dd>{escape(shown_path(s.old_rules))}</dd>"
        f"<dt>New rules</dt><dd>{escape(shown_path(s.new_rules))}</dd>"
        f"<dt>End of data</dt><dd>{escape(s.ended_at or '-')}</dd></dl>\n"
        f'<div class="tiles">{tile_html}</div>{note_html}\n</header>'
    )
    table = (
        '<section><h2>Per rule: before and after</h2>'
        '<p class="verdict">Volume: triggers per channel and status. Lift: customers as the unit '
        "(converted share, contacted minus control, points, with its 95% interval) and its verdict. "
        "Removed, added, changed: triggers matched by trigger_id.</p>"
        '<table class="diff"><thead><tr><th>rule</th><th class="side">before: volume</th><th>before: lift</th>'
        '<th class="side">after: volume</th><th>after: lift</th><th class="side">removed</th><th>added</th>'
        f"<th>changed</th><th>customers</th></tr></thead><tbody>\n{rows}\n</tbody></table></section>"
    )
    title = f"Diff {shown_path(s.old_rules)} → {shown_path(s.new_rules)}"
    return "\n".join([
        _HEAD.format(title=escape(title), css=_CSS + _DIFF_CSS), header, "<main>", table, "</main>",
        "<footer>Generated by <code>triggers diff --report</code>. This page is self-contained: no scripts, "
        "no network.</footer>", "</body>\n</html>\n",
    ])


def _volume(channels: dict[str, dict[str, int]] | None) -> str:
    if not channels:
        return '<span class="verdict">no triggers</span>'
    lines = []
    for channel, by_status in sorted(channels.items()):
        parts = ", ".join(f"{by_status[k]:,} {label}" for k, label in _STATUSES if by_status.get(k))
        lines.append(f'<div class="chan"><b>{escape(channel)}</b> {sum(by_status.values()):,}: {parts}</div>')
    return "".join(lines)


def _lift(lift: CustomerLift | None) -> str:
    if lift is None:
        return '<span class="verdict">no sent or held-out trigger</span>'
    c = lift.conversion
    figure = ""
    if c.lift is not None and c.ci is not None:
        figure = f"{100 * c.lift:+.1f} pts [{100 * c.ci[0]:+.1f}, {100 * c.ci[1]:+.1f}]<br>"
    kind = "" if lift.verdict_kind is Verdict.INCONCLUSIVE else "<b>"
    end = "" if not kind else "</b>"
    groups = f"{lift.contacted.customers:,} contacted, {lift.control.customers:,} control customers"
    return f'{figure}<span class="verdict">{kind}{escape(lift.verdict)}{end}<br>{groups}</span>'
