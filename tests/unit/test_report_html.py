"""The backtest's HTML report: aggregation of triggers and the rendered page (no browser here;
tests/integration/test_report_browser.py renders it in Chromium)."""

from __future__ import annotations

import re
from html import escape

import msgspec

from engine.actions.trigger import Trigger
from engine.offline.backtest import BacktestSummary
from engine.offline.report_html import HIST_BINS, MAX_SAMPLE, ReportCollector, ValueCounts, render_report, write_report
from engine.policy.attribution import RuleOutcome
from engine.policy.customers import CustomerOutcome, GroupTotals

EVIL = "<script>alert(1)</script>"


def trig(rule: str, fired_at: str, status: str = "sent", reason: str | None = None, n: int = 0,
         **payload: object) -> Trigger:
    return Trigger(trigger_id=f"t-{rule}-{fired_at}-{n}", rule_id=rule, customer_id=f"c-{n}", action="act",
                   channel="email", status=status, reason=reason, fired_at=fired_at, cause_event_id=f"e-{n}",
                   payload=dict(payload))


def summary_of(per_rule: dict[str, RuleOutcome], triggers: int,
               by_customer: dict[str, CustomerOutcome] | None = None) -> BacktestSummary:
    return BacktestSummary(events=100, customers=10, triggers=triggers, elapsed_s=0.5, per_rule=per_rule,
                           by_customer=by_customer or {})


def customers(a: tuple[int, int, float], b: tuple[int, int, float]) -> CustomerOutcome:
    """(customers, converted, revenue of each converted one) for contacted and control."""
    def group(n: int, x: int, revenue: float) -> GroupTotals:
        g = GroupTotals()
        for i in range(n):
            g.add(i < x, revenue if i < x else 0.0, 0.0)
        return g
    return CustomerOutcome(group(*a), group(*b))


def collected(triggers: list[Trigger], batch: int = 3) -> ReportCollector:
    c = ReportCollector()
    for i in range(0, len(triggers), batch):
        c.add(triggers[i:i + batch])
    return c


def test_counts_per_utc_day_and_status_across_batches():
    c = collected([
        trig("cart", "2026-01-01T00:00:00.000Z"),
        trig("cart", "2026-01-01T23:59:59.999Z", "held_out"),
        trig("cart", "2026-01-02T00:00:00.000Z", "suppressed", "cooldown"),
        trig("cart", "2026-01-02T10:00:00.000Z", "suppressed", "no_consent"),
        trig("cart", "2026-01-02T11:00:00.000Z", "suppressed", "no_consent"),
        trig("vip", "2026-01-05T09:00:00.000Z"),
    ])
    cart = c.rules["cart"]
    assert cart.days == {"2026-01-01": [1, 1, 0], "2026-01-02": [0, 0, 3]}
    assert cart.by_status == [1, 1, 3]
    assert cart.reasons == {"cooldown": 1, "no_consent": 2}
    assert c.rules["vip"].days == {"2026-01-05": [1, 0, 0]}
    assert c.by_status == [2, 1, 3] and c.triggers == 6
    assert (c.first_fired, c.last_fired) == ("2026-01-01T00:00:00.000Z", "2026-01-05T09:00:00.000Z")
    assert cart.channels == {"email": 5} and cart.actions == {"act": 5}


def test_top_payload_values_per_key_and_rule():
    ts = "2026-01-01T00:00:00.000Z"
    c = collected([trig("cart", ts, n=i, sku=sku, value=9.5) for i, sku in enumerate("AABACAAB")]
                  + [trig("other", ts, sku="Z")])
    skus = c.rules["cart"].payload["sku"]
    assert skus.top(2) == [("A", 5), ("B", 2)]
    assert skus.total == 8 and not skus.pruned
    assert c.rules["cart"].payload["value"].top() == [("9.5", 8)]
    assert c.rules["other"].payload["sku"].top() == [("Z", 1)]


def test_payload_values_of_any_json_type_are_labelled():
    ts = "2026-01-01T00:00:00.000Z"
    c = collected([trig("r", ts, a=True, b=None, c=[1, "x"], d={"k": 1}, e=3, f="x" * 500)])
    p = c.rules["r"].payload
    assert [p[k].top()[0][0] for k in "abcde"] == ["true", "null", '[1,"x"]', '{"k":1}', "3"]
    assert len(p["f"].top()[0][0]) == 120


def test_distinct_values_tracked_are_bounded_and_frequent_ones_survive():
    c = ReportCollector(max_tracked=50)
    ts = "2026-01-01T00:00:00.000Z"
    for i in range(5000):   # a unique sku per trigger, and a hot one every 10th trigger
        c.add([trig("cart", ts, n=i, sku="HOT" if i % 10 == 0 else f"sku-{i}")])
    skus = c.rules["cart"].payload["sku"]
    assert len(skus.counts) <= 50
    assert skus.pruned and skus.total == 5000
    assert skus.top(1)[0][0] == "HOT" and skus.top(1)[0][1] >= 450
    assert skus.dropped + sum(skus.counts.values()) == 5000


def test_value_counts_prune_keeps_the_most_common():
    vc = ValueCounts(cap=4)
    for label in ["a", "a", "a", "b", "b", "c", "d", "e"]:
        vc.add(label)
    assert len(vc.counts) <= 4 and vc.top(2) == [("a", 3), ("b", 2)]


def _report(triggers: list[Trigger], per_rule: dict[str, RuleOutcome],
            by_customer: dict[str, CustomerOutcome] | None = None, **kw: str) -> str:
    c = collected(triggers)
    return render_report(c, summary_of(per_rule, len(triggers), by_customer), kw.get("title", "Run"),
                         kw.get("rules_dir", "rules/"), kw.get("events_file", "events.jsonl"))


def test_report_has_every_rule_and_one_chart_per_rule_that_fired():
    ts = "2026-02-01T08:00:00.000Z"
    triggers = [trig("cart-abandoned", ts, sku="A-1"), trig("vip-5000", ts, "suppressed", "cooldown")]
    per_rule = {"cart-abandoned": RuleOutcome(sent=1, suppressed={}),
                "vip-5000": RuleOutcome(suppressed={"cooldown": 1}),
                "never-fired": RuleOutcome(suppressed={})}
    html = _report(triggers, per_rule)
    for rule_id in per_rule:
        assert rule_id in html
    # one chart per rule that fired and one for all rules together; never-fired is in the list instead
    assert html.count('<svg class="chart fires"') == len(per_rule) - 1 + 1
    for i in range(len(per_rule) - 1):
        card = re.search(rf'<div class="card" id="rule-{i}">(.*?)</div>\s*(?=<div class="card|</div>)', html, re.S)
        assert card is not None and card.group(1).count("<svg") == 1
    assert '<li id="rule-2"><code>never-fired</code>: its condition never held</li>' in html
    assert html.count('<svg class="chart reasons"') == 1
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_summary_table_shows_the_cli_figures_and_lift_with_interval():
    per_rule = {"cart-abandoned": RuleOutcome(sent=703, held_out=318, converted=403, held_out_converted=115,
                                              responded=10, held_out_responded=5,
                                              suppressed={"cooldown": 4, "no_consent": 2}),
                "birthday": RuleOutcome(sent=5, suppressed={})}
    by_customer = {"cart-abandoned": customers((703, 403, 20.0), (318, 115, 20.0))}
    html = _report([], per_rule, by_customer)
    row = re.search(r"<tr><td class=\"rule\"><a [^>]*>cart-abandoned</a>.*?</tr>", html, re.S).group(0)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[1:4] == ["703", "318", "6"]
    assert cells[5:7] == ["15", "518"]   # responded and converted: sent plus held out, as the CLI prints
    assert "cooldown 4" in row and "no_consent 2" in row
    lift = re.search(r'<section id="lift">.*?</section>', html, re.S).group(0)   # its own table: fits 1,400 px
    row = re.search(r"<tr><td class=\"rule\"><a [^>]*>cart-abandoned</a>.*?</tr>", lift, re.S).group(0)
    # the same counts, customers as the unit: +21.2 points [+14.6, +27.4] (Newcombe), +59% relative
    assert "+21.2" in row and "[+14.6, +27.4]" in row and "+59%" in row
    assert f"{20 * (403 / 703 - 115 / 318):+,.2f}" in row and "lift" in row   # revenue per customer, verdict
    birthday = re.search(r"<tr><td class=\"rule\"><a [^>]*>birthday</a>.*?</tr>", lift, re.S).group(0)
    assert "no control group" in birthday


def test_user_text_is_escaped():
    ts = "2026-02-01T08:00:00.000Z"
    triggers = [trig(EVIL, ts, "suppressed", EVIL, **{EVIL: EVIL}), trig("ok", ts, note=EVIL)]
    per_rule = {EVIL: RuleOutcome(suppressed={EVIL: 1}), "ok": RuleOutcome(sent=1, suppressed={})}
    html = _report(triggers, per_rule, title=EVIL, rules_dir=f"rules/{EVIL}", events_file=f'"{EVIL}.jsonl')
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'title="&lt;script&gt;' in html   # attribute values too


def test_no_network_references_and_no_scripts():
    ts = "2026-02-01T08:00:00.000Z"
    triggers = [trig("r", ts, url="https://shop.example.com/p/1"), trig("r", ts, "held_out")]
    html = _report(triggers, {"r": RuleOutcome(sent=1, held_out=1, suppressed={})})
    without_user_text = html.replace("https://shop.example.com/p/1", "")   # a payload value, shown as text
    assert "http://" not in without_user_text and "https://" not in without_user_text
    refs = re.findall(r"""\b(?:src|href|xlink:href)\s*=\s*["']?([^"'\s>]*)""", html, re.I)
    assert refs and all(ref.startswith("#") or ref.startswith("data:") for ref in refs), refs
    assert not re.search(r"@import|url\(", html)
    assert "<script" not in html.lower()


def test_long_periods_are_drawn_per_week_then_per_month():
    week = _report([trig("r", "2026-01-01T00:00:00.000Z"), trig("r", "2026-12-31T00:00:00.000Z")],
                   {"r": RuleOutcome(sent=2, suppressed={})})
    assert "Triggers per UTC week" in week
    month = _report([trig("r", "2024-01-01T00:00:00.000Z"), trig("r", "2026-12-31T00:00:00.000Z")],
                    {"r": RuleOutcome(sent=2, suppressed={})})
    assert "Triggers per UTC month" in month
    assert month.count("<rect") == 2 * 2   # per chart (all rules, r): one bar per month with fires


def test_empty_run_renders(tmp_path):
    path = tmp_path / "report.html"
    write_report(path, ReportCollector(), summary_of({"r": RuleOutcome(suppressed={})}, 0), "Empty", "rules", "e.jsonl")
    html = path.read_text(encoding="utf-8")
    assert "No trigger was suppressed" in html and html.count('<svg class="chart fires"') == 1
    assert "no triggers" in html and "1 rule never fired" in html


def _rule_row(html: str, rule_id: str) -> list[str]:
    row = re.search(rf"<tr><td class=\"rule\"><a [^>]*>{re.escape(rule_id)}</a>.*?</tr>", html, re.S).group(0)
    return re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)


def test_pending_deadlines_per_rule_and_the_note_says_they_were_not_fired():
    per_rule = {"win-back": RuleOutcome(sent=2, suppressed={}), "cart": RuleOutcome(sent=1, suppressed={})}
    ended_at = 1_767_225_600_000 + 90 * 60_000   # 2026-01-01 01:30 UTC
    summary = BacktestSummary(per_rule=per_rule, triggers=3, ended_at=ended_at, pending={"win-back": 7},
                              pending_total=7)
    html = render_report(ReportCollector(), summary, "Run", "rules", "e.jsonl")
    header = re.search(r"<thead>(.*?)</thead>", html, re.S).group(1)
    column = re.findall(r"<th[^>]*>(.*?)</th>", header).index("pending at end")
    assert _rule_row(html, "win-back")[column] == "7" and _rule_row(html, "cart")[column] == "0"
    total = re.search(r'<tr class="total">(.*?)</tr>', html, re.S).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", total)[column] == "7"
    assert "7 deadlines pending at the end of data (2026-01-01 01:30 UTC) were not fired; --drain fires them" in html

    drained = render_report(ReportCollector(), msgspec.structs.replace(summary, drained=True), "Run", "rules", "e")
    assert "7 deadlines pending at the end of data (2026-01-01 01:30 UTC) were drained" in drained
    assert "were not fired" not in drained


def test_no_pending_note_when_nothing_is_pending():
    html = _report([], {"r": RuleOutcome(suppressed={})})
    assert "pending at the end of data" not in html


def test_every_time_chart_marks_the_end_of_data_where_it_is():
    triggers = [trig("a", "2026-01-01T08:00:00.000Z"), trig("b", "2026-01-03T08:00:00.000Z")]
    ended_at = 1_767_225_600_000 + int(3.5 * 86_400_000)   # 2026-01-04 12:00 UTC: the axis runs to that day
    summary = msgspec.structs.replace(summary_of({"a": RuleOutcome(sent=1, suppressed={}),
                                                  "b": RuleOutcome(sent=1, suppressed={})}, 2), ended_at=ended_at)
    html = render_report(collected(triggers), summary, "Run", "rules", "e.jsonl")
    charts = re.findall(r'<svg class="chart fires".*?</svg>', html, re.S)
    assert len(charts) == 3
    for chart in charts:
        markers = re.findall(r'<g class="end-of-data"><title>end of data: 2026-01-04 12:00 UTC</title>'
                             r'<line x1="([\d.]+)"', chart)
        assert len(markers) == 1 and "end of data</text>" in chart
        left, right = map(float, re.findall(r'<line x1="([\d.]+)" x2="([\d.]+)" y1="[\d.]+" y2="[\d.]+" '
                                            r'stroke="#8a93a3"/></svg>', chart)[0])
        assert abs((float(markers[0]) - left) / (right - left) - 3.5 / 4) < 0.01


def test_no_end_marker_without_an_end_of_data():
    html = _report([trig("a", "2026-01-01T08:00:00.000Z")], {"a": RuleOutcome(sent=1, suppressed={})})
    assert "end-of-data" not in html


def test_rules_that_never_fired_are_listed_once_with_the_reason():
    per_rule = {"fired": RuleOutcome(sent=1, suppressed={}), "coupon": RuleOutcome(suppressed={}),
                "two": RuleOutcome(suppressed={}), "strict": RuleOutcome(suppressed={}),
                "win-back": RuleOutcome(suppressed={}), "birthday": RuleOutcome(suppressed={})}
    summary = msgspec.structs.replace(
        summary_of(per_rule, 1), event_types={"view": 90, "purchase": 10},
        rule_events={"fired": ["view"], "coupon": ["coupon_issued"], "two": ["a", "b"], "strict": ["purchase"],
                     "win-back": [], "birthday": []},
        pending={"win-back": 12}, pending_total=12)
    html = render_report(collected([trig("fired", "2026-02-01T08:00:00.000Z")]), summary, "Run", "rules", "e")
    items = dict(re.findall(r"<li id=\"rule-\d+\"><code>(.*?)</code>: (.*?)</li>", html))
    assert items == {"coupon": "no &#x27;coupon_issued&#x27; events in the input",
                     "two": "no &#x27;a&#x27; or &#x27;b&#x27; events in the input",
                     "strict": "its condition never held", "win-back": "12 pending at the end of data",
                     "birthday": "its condition never held"}
    assert "5 rules never fired" in html
    assert html.count('<svg class="chart fires"') == 2   # all rules and "fired"


def test_the_header_shows_no_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "rules" / "prod"
    outside = tmp_path.parent / "elsewhere" / "events-2026.jsonl"
    html = _report([], {"r": RuleOutcome(suppressed={})}, rules_dir=str(inside), events_file=str(outside))
    header = re.search(r"<header>.*?</header>", html, re.S).group(0)
    assert "<dd>rules/prod</dd>" in header and "<dd>events-2026.jsonl</dd>" in header
    assert str(tmp_path) not in html
    relative = _report([], {"r": RuleOutcome(suppressed={})}, rules_dir="rules/", events_file="../e.jsonl")
    assert "<dd>rules/</dd>" in relative and "<dd>../e.jsonl</dd>" in relative


def test_a_key_of_unique_values_is_summarised_not_listed():
    ts = "2026-02-01T08:00:00.000Z"
    triggers = [trig("after-sale", ts, n=i, order=f"o-{i:05d}", tier="gold" if i % 2 else "silver")
                for i in range(50)]
    html = _report(triggers, {"after-sale": RuleOutcome(sent=50, suppressed={})})
    order = re.search(r'<table class="spread"><caption>order .*?</table>', html, re.S).group(0)
    assert "high cardinality" in order and '<td class="n">50</td>' in order and "seen 1 time<" in order
    assert "<code>o-00000</code>" in order and "chart hist" not in order   # not numbers: examples, no histogram
    assert html.count('title="o-0') == 0   # no top list of ones
    tier = re.search(r"<table><caption>tier .*?</table>", html, re.S).group(0)   # two common values: listed
    assert 'title="gold"' in tier and 'title="silver"' in tier


def test_a_numeric_key_of_many_values_gets_a_histogram():
    ts = "2026-02-01T08:00:00.000Z"
    values = [i * 1.5 for i in range(1, 201)]
    triggers = [trig("cart", ts, n=i, value=f"{v}") for i, v in enumerate(values)]
    html = _report(triggers, {"cart": RuleOutcome(sent=len(values), suppressed={})})
    value = re.search(r'<table class="spread"><caption>value .*?</table>', html, re.S).group(0)
    median = sorted(values)[len(values) // 2]
    assert f"{min(values):,.2f} / {median:,.2f} / {max(values):,.0f}" in value
    hist = re.search(r'<svg class="chart hist".*?</svg>', value, re.S).group(0)
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', hist)]
    assert len(heights) == HIST_BINS and min(heights) > 0.9 * max(heights)   # uniform values: even bars


def test_the_number_sample_is_bounded_and_min_max_exact():
    vc = ValueCounts(cap=10)
    n = 5 * MAX_SAMPLE + 7
    for i in range(n):
        vc.add(str(i))
    assert vc.numeric and len(vc.sample) < MAX_SAMPLE and (vc.lo, vc.hi) == (0, n - 1) and vc.total == n
    assert vc.sample == [float(i) for i in range(0, n, vc.stride)][:len(vc.sample)]   # every stride-th
    vc.add("not a number")
    assert not vc.numeric and vc.sample == []


def test_conversion_over_time_contacted_against_control_through_a_real_replay(tmp_path):
    """Issue 12: a chart per rule with a control group (and one for all rules against the global
    control), cumulative by the customers' first trigger, ending at the overall rates; rules
    without a control group are named, not charted."""
    from pathlib import Path

    from engine.offline.backtest import backtest_file
    from engine.rules.compiler import load_and_compile

    root = Path(__file__).resolve().parents[2]
    collector = ReportCollector()
    s = backtest_file(load_and_compile(root / "rules"), root / "examples" / "sample-events.jsonl", collector.add,
                      lambda dead: None, progress=False)
    html = render_report(collector, s, "t", "rules", "events.jsonl")
    section = html[html.index('<section id="conversion">'):].split("</section>")[0]
    charted = [name for name, o in [("all rules", s.program), *s.by_customer.items()]
               if o is not None and o.days and o.control.customers]
    assert len(charted) >= 3 and section.count('class="chart conversion"') == len(charted)
    for name, o in [("all rules", s.program), *s.by_customer.items()]:
        if o is None or not o.days:
            continue
        days = list(o.days.values())
        assert sum(d[0] for d in days) == o.contacted.customers and sum(d[2] for d in days) == o.control.customers
        assert sum(d[1] for d in days) == o.contacted.converted and sum(d[3] for d in days) == o.control.converted
        if name in charted:   # the last point of each line is the group's overall rate
            card = section[section.index(f"<h3>{escape(name)}</h3>"):].split("</svg>")[0]
            tips = re.findall(r"<title>(contacted|control), first triggered up to [^:]+: ([\d,]+)/([\d,]+) converted",
                              card)
            last = {g: (int(x.replace(",", "")), int(n.replace(",", ""))) for g, x, n in tips}
            assert last["contacted"] == (o.contacted.converted, o.contacted.customers)
            assert last["control"] == (o.control.converted, o.control.customers)
    without = [r for r, o in s.by_customer.items() if o.days and not o.control.customers]
    assert without and all(r in section.split("No control group")[1] for r in without)
    assert section.count('class="end-of-data"') == len(charted)
