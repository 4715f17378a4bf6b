"""A journey's funnel in the backtest summary, `report` (text and JSON) and the HTML report (SPEC §3a).

SPEC §3a's welcome journey with a 20% control group; hand-made customers whose walks are worked out
below, so each count is exact. The held-out draw and the split are deterministic per customer:
c6 and c11 are held out, c3's split draw goes to `a`, c7's to `b` (asserted first, so a change of the
draws shows here rather than as a wrong count).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from engine.cli import main
from engine.cli.backtest import print_summary
from engine.cli.report import build_report
from engine.core.funnel import Funnel, Pair
from engine.offline.backtest import BacktestSummary, backtest_file
from engine.offline.funnel_table import RowKind, funnel_lines, funnel_rows
from engine.offline.report_html import ReportCollector, render_report
from engine.policy.contact import draw, in_control_group
from engine.rules.compiler import load_and_compile

RULES = (Path(__file__).resolve().parents[1] / "fixtures" / "spec_journey" / "rules.yaml").read_text().replace(
    "    reenter: after_end\n", "    reenter: after_end\n    control_group: 20%\n")   # SPEC §3a's example, 20% held out

CONTACTED = ("c1", "c2", "c3", "c4", "c5", "c7")
HELD_OUT = ("c6", "c11")


def ev(n: int, type_: str, customer: str, ts: str, **props: object) -> str:
    return json.dumps({"event_id": f"e{n}", "type": type_, "customer_id": customer, "ts": ts, "properties": props})


# in time order; T0 = 2026-03-01T10:00Z
EVENTS = [
    # c3 and c7 spent before signing up: big spenders (a purchase outside a walk exits nothing)
    ev(1, "purchase", "c3", "2026-02-28T10:00:00Z", amount=600),
    ev(2, "purchase", "c7", "2026-02-28T10:00:00Z", amount=700),
    *(ev(10 + i, "signup", c, "2026-03-01T10:00:00Z") for i, c in enumerate(("c1", "c2", "c3", "c4", "c7", "c6", "c11"))),
    # c1 (contacted) and c6 (held out) click in time: yes -> recommend -> end
    ev(20, "email_clicked", "c1", "2026-03-02T10:00:00Z", campaign="welcome-1"),
    ev(21, "email_clicked", "c6", "2026-03-02T10:00:00Z", campaign="welcome-1"),
    # c2 clicks another campaign's mail: not the awaited event
    ev(22, "email_clicked", "c2", "2026-03-02T11:00:00Z", campaign="spring"),
    # c4 buys while waiting: exit_on purchase
    ev(23, "purchase", "c4", "2026-03-02T12:00:00Z", amount=50),
    # c2, c3, c7 (contacted) and c11 (held out): no click by the deadline -> remind -> big-spender;
    # c3 and c7 are big spenders -> vip -> split: c3 to a, c7 to b (1d) then a
    # c5 signs up at the end and is still waiting; its second signup is refused (already inside)
    ev(30, "signup", "c5", "2026-03-31T09:00:00Z"),
    ev(31, "signup", "c5", "2026-03-31T10:00:00Z"),   # the last event: the end of data
]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "welcome.yaml").write_text(RULES)
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(EVENTS) + "\n")
    return rules, events


def run(files: tuple[Path, Path], drain: bool = False) -> tuple[BacktestSummary, ReportCollector]:
    """The backtest as `triggers backtest` runs it (`backtest_file`), its triggers collected for the page."""
    rules, events = files
    collector = ReportCollector()
    summary = backtest_file(load_and_compile(str(rules)), events, collector.add, lambda dead: None,
                            progress=False, drain=drain)
    return summary, collector


def test_the_draws_the_counts_below_rely_on():
    assert [c for c in CONTACTED + HELD_OUT if in_control_group(c, "welcome", "", 0.2)] == list(HELD_OUT)
    assert draw("c3", "welcome\x1fvip", "split") < 0.5 <= draw("c7", "welcome\x1fvip", "split")


def test_funnel_counts_walks_per_step_branch_exit_and_group(files):
    s, _ = run(files)
    f = s.funnels["welcome"]
    assert list(s.funnels) == ["welcome"]
    assert f.steps == ["hello", "clicked", "recommend", "remind", "big-spender", "vip", "a", "b"]
    assert f.entered == Pair(6, 2)
    assert f.reached == {"hello": Pair(6, 2), "clicked": Pair(6, 2), "recommend": Pair(1, 1), "remind": Pair(3, 1),
                         "big-spender": Pair(3, 1), "vip": Pair(2, 0), "a": Pair(2, 0), "b": Pair(1, 0)}
    assert f.branches == {"clicked": {"yes": Pair(1, 1), "no": Pair(3, 1)},
                          "big-spender": {"yes": Pair(2, 0), "no": Pair(1, 1)},
                          "vip": {"a": Pair(1, 0), "b": Pair(1, 0)}}
    assert f.sends == {"hello": {"sent": 6, "held_out": 2}, "recommend": {"sent": 1, "held_out": 1},
                       "remind": {"sent": 3, "held_out": 1}, "a": {"sent": 2}}
    assert f.exits == {"completed": Pair(4, 2), "exit_on:purchase": Pair(1, 0)}
    assert f.inside == Pair(1, 0)   # c5, waiting for its click at the end of data
    assert f.not_entered == {"already_inside": 1}
    assert s.pending == {"welcome": 1}
    # the held-out group is the rule's: its triggers are held out, as the per-rule counts say
    assert (s.per_rule["welcome"].sent, s.per_rule["welcome"].held_out) == (12, 4)
    assert [(x.id, x.kind) for x in s.journey_steps["welcome"]] == [
        ("hello", "send"), ("clicked", "wait"), ("recommend", "send"), ("remind", "send"),
        ("big-spender", "condition"), ("vip", "split"), ("a", "send"), ("b", "delay")]
    assert s.journey_steps["welcome"][1].targets == {"yes": "recommend", "no": "remind"}


def test_drained_moves_count(files):
    """--drain fires c5's wait: `no`, remind, big-spender `no`, end."""
    f = run(files, drain=True)[0].funnels["welcome"]
    assert f.branches["clicked"] == {"yes": Pair(1, 1), "no": Pair(4, 1)}
    assert f.reached["remind"] == Pair(4, 1) and f.sends["remind"] == {"sent": 4, "held_out": 1}
    assert f.branches["big-spender"] == {"yes": Pair(2, 0), "no": Pair(2, 1)}
    assert f.exits == {"completed": Pair(5, 2), "exit_on:purchase": Pair(1, 0)}
    assert f.inside == Pair(0, 0)


def test_a_journey_nobody_entered_has_an_empty_funnel(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "welcome.yaml").write_text(RULES)
    events = tmp_path / "events.jsonl"
    events.write_text(ev(1, "page_view", "c1", "2026-03-01T10:00:00Z") + "\n")
    s = backtest_file(load_and_compile(str(rules)), events, lambda b: None, lambda d: None, progress=False)
    assert s.funnels == {"welcome": Funnel("welcome", ["hello", "clicked", "recommend", "remind", "big-spender",
                                                       "vip", "a", "b"])}
    assert funnel_lines(s.funnels["welcome"]) == ["journey 'welcome': 0 entered (0 contacted, 0 held out)"]


def test_summary_json_round_trips_the_funnel(files, tmp_path):
    rules, events = files
    path = tmp_path / "s.json"
    assert main(["backtest", "--rules", str(rules), "--events", str(events), "--out", str(tmp_path / "t.jsonl"),
                 "--summary", str(path), "--quiet", "--no-progress"]) == 0
    data = json.loads(path.read_text())
    assert data["funnels"]["welcome"]["entered"] == {"contacted": 6, "held_out": 2}
    assert data["funnels"]["welcome"]["exits"]["exit_on:purchase"] == {"contacted": 1, "held_out": 0}
    decoded = msgspec.json.decode(path.read_bytes(), type=BacktestSummary)
    again, _ = run(files)
    assert decoded.funnels == again.funnels and decoded.journey_steps == again.journey_steps
    # a summary written before journeys decodes with no funnel
    assert msgspec.json.decode(b'{"events": 1}', type=BacktestSummary).funnels == {}


def test_rows_put_branches_under_their_step_and_exits_last(files):
    s, _ = run(files)
    rows = funnel_rows(s.funnels["welcome"], s.journey_steps["welcome"])
    shown = [(r.kind.value, r.label, r.walks.contacted, r.walks.held_out) for r in rows]
    assert shown == [
        ("step", "hello", 6, 2), ("step", "clicked", 6, 2), ("branch", "yes → recommend", 1, 1),
        ("branch", "no → remind", 3, 1), ("step", "recommend", 1, 1), ("step", "remind", 3, 1),
        ("step", "big-spender", 3, 1), ("branch", "yes → vip", 2, 0), ("branch", "no → end", 1, 1),
        ("step", "vip", 2, 0), ("branch", "→ a", 1, 0), ("branch", "→ b", 1, 0), ("step", "a", 2, 0),
        ("step", "b", 1, 0), ("exit", "completed", 4, 2), ("exit", "exit_on:purchase", 1, 0),
        ("inside", "still inside", 1, 0)]
    remind = rows[5]
    assert (remind.contacted_share, remind.held_out_share, remind.share) == (0.5, 0.5, 0.5)
    assert remind.outcomes == {"sent": 3, "held_out": 1}
    assert next(r for r in rows if r.kind is RowKind.STEP and r.label == "a").held_out_share == 0.0


def test_backtest_prints_the_funnel_after_the_per_rule_table(files, capsys):
    rules, events = files
    assert main(["backtest", "--rules", str(rules), "--events", str(events), "--out", "/dev/null",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("rule ") and lines[1].startswith("welcome ")
    block = lines[3:lines.index("", 3)]
    assert block[0] == "journey 'welcome': 8 entered (6 contacted, 2 held out); shares of each group's entries"
    assert max(len(line) for line in block) <= 100
    assert block[1:] == [
        "  step                kind       contacted   held out  send outcomes",
        "  hello               send        6 100.0%   2 100.0%  sent 6, held_out 2",
        "  clicked             wait        6 100.0%   2 100.0%",
        "    yes → recommend               1  16.7%   1  50.0%",
        "    no → remind                   3  50.0%   1  50.0%",
        "  recommend           send        1  16.7%   1  50.0%  sent 1, held_out 1",
        "  remind              send        3  50.0%   1  50.0%  sent 3, held_out 1",
        "  big-spender         condition   3  50.0%   1  50.0%",
        "    yes → vip                     2  33.3%   0   0.0%",
        "    no → end                      1  16.7%   1  50.0%",
        "  vip                 split       2  33.3%   0   0.0%",
        "    → a                           1  16.7%   0   0.0%",
        "    → b                           1  16.7%   0   0.0%",
        "  a                   send        2  33.3%   0   0.0%  sent 2",
        "  b                   delay       1  16.7%   0   0.0%",
        "  exits",
        "    completed                     4  66.7%   2 100.0%",
        "    exit_on:purchase              1  16.7%   0   0.0%",
        "  still inside                    1  16.7%   0   0.0%",
        "  not entered (entry events): already_inside 1",
    ]
    assert lines[lines.index("", 3) + 1].startswith("15 events")   # the totals follow the funnels


def test_long_send_outcomes_wrap_within_100_columns():
    f = Funnel("j", ["s"], entered=Pair(10, 2), reached={"s": Pair(10, 2)},
               sends={"s": {"sent": 3, "held_out": 2, "suppressed:no_consent": 2, "suppressed:frequency_cap": 1,
                            "suppressed:quiet_hours_dropped": 1, "suppressed:cooldown": 1}},
               exits={"completed": Pair(3, 2), "suppressed:no_consent": Pair(2, 0)})
    lines = funnel_lines(f)
    assert max(len(line) for line in lines) <= 100
    text = " ".join(line.strip() for line in lines)
    for outcome in ("sent 3", "held_out 2", "suppressed:no_consent 2", "suppressed:cooldown 1"):
        assert outcome in text


def test_report_shows_the_funnel_with_the_journeys_lift(files, tmp_path, capsys):
    rules, events = files
    path = tmp_path / "s.json"
    main(["backtest", "--rules", str(rules), "--events", str(events), "--out", "/dev/null", "--summary", str(path),
          "--quiet", "--no-progress"])
    capsys.readouterr()
    assert main(["report", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (journey,) = report["journeys"]
    assert journey["journey"] == "welcome"
    assert journey["funnel"]["entered"] == {"contacted": 6, "held_out": 2}
    assert journey["funnel"]["branches"]["clicked"] == {"yes": {"contacted": 1, "held_out": 1},
                                                        "no": {"contacted": 3, "held_out": 1}}
    assert [x["kind"] for x in journey["steps"]][:2] == ["send", "wait"]
    # the journey's lift is its rule's (customers: c5's triggers are not observed, their window runs past the end)
    (rule,) = report["rules"]
    assert journey["lift"] == rule
    assert (journey["lift"]["contacted"]["customers"], journey["lift"]["contacted"]["converted"]) == (5, 1)   # c4
    assert (journey["lift"]["control"]["customers"], journey["lift"]["control"]["converted"]) == (2, 0)
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "journey 'welcome': 8 entered (6 contacted, 2 held out)" in out
    assert "lift of the journey (customers as the unit): contacted conv. 1/5 20.0%, control conv. 0/2 0.0%" in out
    assert "verdict: inconclusive: control has 2 customers" in out
    tail = out[out.index("journey 'welcome'"):]
    assert max(len(line) for line in tail.splitlines()) <= 100


def test_build_report_reuses_the_rule_lift(files):
    s, _ = run(files)
    report = build_report(s)
    assert report.journeys[0].lift is report.rules[0]


def test_html_report_has_a_funnel_section_per_journey(files):
    s, collector = run(files)
    html = render_report(collector, s, "t", "rules", "events.jsonl")
    section = html[html.index('<section id="journeys">'):]
    section = section[:section.index("</section>")]
    assert '<h3><a href="#rule-0" style="color:inherit">welcome</a></h3>' in section
    assert "<b>8</b> entered: 6 contacted, 2 held out" in section
    assert "entry events that started no walk: already_inside 1" in section
    rows = re.findall(r'<tr class="(\w+)"><td class="rule">([^<]+)</td><td class="kind">([^<]*)</td>'
                      r'<td>([\d,]+)<br><small class="ci">([^<]+)</small></td>'
                      r'<td>([\d,]+)<br><small class="ci">([^<]+)</small></td><td>([^<]+)</td>', section)
    by_label = {r[1]: r for r in rows}
    assert len(rows) == 17
    assert by_label["hello"] == ("step", "hello", "send", "6", "100.0%", "2", "100.0%", "100.0%")
    assert by_label["yes → recommend"] == ("branch", "yes → recommend", "branch", "1", "16.7%", "1", "50.0%", "25.0%")
    assert by_label["exit_on:purchase"] == ("exit", "exit_on:purchase", "exit", "1", "16.7%", "0", "0.0%", "12.5%")
    assert by_label["still inside"][3:6] == ("1", "16.7%", "0")
    assert '<tr class="group"><td colspan="7">exits</td></tr>' in section
    assert section.count('class="fbar"') == 2 * 17
    assert 'style="width:50.0%;background:#E69F00"' in section   # the held-out share reaching `remind`
    assert "sent 3, held_out 1" in section
    assert "Lift of the journey as a whole" in section and "1/5 20.0%" in section and "0/2 0.0%" in section


def test_html_escapes_step_ids_and_says_when_nobody_entered(files):
    s, collector = run(files)
    evil = "<b>x</b>"
    f = s.funnels["welcome"]
    s.funnels = {evil: Funnel(evil, [evil]),
                 "welcome": Funnel("welcome", [evil, *f.steps], f.entered, {evil: Pair(1, 0), **f.reached})}
    html = render_report(collector, s, "t", "rules", "events.jsonl")
    section = html[html.index('<section id="journeys">'):]
    assert evil not in section and escape_text(evil) in section
    assert "Nobody entered this journey." in section


def escape_text(text: str) -> str:
    from html import escape
    return escape(text)


def test_text_summary_of_a_run_without_journeys_has_no_funnel(capsys):
    import sys
    print_summary(BacktestSummary(events=1), sys.stderr)
    assert "journey" not in capsys.readouterr().err
