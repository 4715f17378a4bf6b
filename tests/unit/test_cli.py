"""The `triggers` command line: validate and backtest, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from engine.actions.trigger import Trigger
from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
SAMPLE = ROOT / "examples" / "sample-events.jsonl"


def test_validate_spec_example_passes(capsys):
    assert main(["validate", str(FIX / "spec_rules")]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_bundled_rules_passes():
    assert main(["validate", str(ROOT / "rules")]) == 0


@pytest.mark.parametrize(("name", "line", "message"), [
    ("aggregate_typo.yaml", 7, "rule 'vip-5000': if (column 1): unknown aggregate 'lifetime_spnd' (did you mean 'lifetime_spend'?)"),
    ("event_field_syntax.yaml", 5, "rule 'shoes-view': if (column 1): write event.<property>, e.g. event.category"),
    ("and_operator.yaml", 8, "rule 'big-buyer': if (column 15): write 'and' instead of '&&'"),
    ("payload_template.yaml", 7, "rule 'cart': payload 'sku' (column 2): unknown"),
    ("step_condition.yaml", 8, "rule 'welcome': step 2 if (column 1): syntax error"),
    ("function_typo.yaml", 7, "unknown function 'day_since' (did you mean 'days_since'?)"),
    ("inactive_reads_event.yaml", 2, "rule 'winback': an inactivity rule fires when no event came, so it cannot read event.sku"),
])
def test_validate_expression_errors_name_file_and_line(capsys, name, line, message):
    path = FIX / "broken_expr" / name
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}:{line}: ")
    assert message in err[0]


def test_validate_broken_directory_lists_every_file_with_line(capsys):
    broken = FIX / "broken"
    assert main(["validate", str(broken)]) == 1
    lines = [l for l in capsys.readouterr().err.splitlines() if not l.endswith(f"in {broken}")]
    files = sorted(p.name for p in broken.glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        assert any(l.startswith(f"{broken / f}:") and l.split(":")[1].isdigit() for l in lines), f


def test_validate_missing_dir(capsys):
    assert main(["validate", "/nonexistent/rules"]) == 1
    assert "/nonexistent/rules" in capsys.readouterr().err


def test_backtest_writes_triggers_and_summary(tmp_path, capsys):
    out = tmp_path / "triggers.jsonl"
    assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(SAMPLE), "--out", str(out)]) == 0
    triggers = [msgspec.json.decode(line, type=Trigger) for line in out.read_bytes().splitlines()]
    assert triggers
    err = capsys.readouterr().err
    for rule in {t.rule_id for t in triggers}:
        assert rule in err
    assert "5,000 events" in err
    # deterministic: a second run writes the same bytes
    out2 = tmp_path / "again.jsonl"
    main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(SAMPLE), "--out", str(out2), "--quiet"])
    assert out2.read_bytes() == out.read_bytes()


def test_backtest_bad_lines_go_to_dead_letters(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id":"e1","type":"add_to_cart","customer_id":"c1","ts":"2026-01-01T10:00:00Z","properties":{"sku":"A","cart_value":5}}\n'
        'not json\n'
        '{"event_id":"e2","type":"purchase","ts":"2026-01-01T10:01:00Z"}\n'
    )
    out, dead = tmp_path / "t.jsonl", tmp_path / "dead.jsonl"
    assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(events), "--out", str(out),
                 "--dead-letters", str(dead), "--drain"]) == 0   # the cart's wait ends after the last event
    letters = [json.loads(l) for l in dead.read_text().splitlines()]
    assert [l["source"] for l in letters] == [f"{events}:2", f"{events}:3"]
    assert "not JSON" in letters[0]["reason"] and "customer_id" in letters[1]["reason"]
    assert "2 dead letters" in capsys.readouterr().err
    assert any(json.loads(l)["rule_id"] == "cart-abandoned" for l in out.read_text().splitlines())


def test_backtest_until_bounds_recurring(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id":"e1","type":"identify","customer_id":"c1","ts":"2026-01-01T10:00:00Z",'
                      '"properties":{"birthday":"1990-05-01","timezone":"Europe/Berlin"}}\n')
    out = tmp_path / "t.jsonl"
    main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(events), "--out", str(out), "--quiet"])
    assert "birthday" not in out.read_text()
    main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(events), "--out", str(out), "--quiet",
          "--until", "2026-12-31T00:00:00Z"])
    (b,) = [json.loads(l) for l in out.read_text().splitlines() if '"birthday"' in l]
    assert b["fired_at"] == "2026-05-01T07:00:00.000Z"


def test_console_script_help():
    res = subprocess.run([sys.executable, "-m", "engine.cli", "backtest", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "--until" in res.stdout and "--dead-letters" in res.stdout


def test_backtest_summary_and_report(tmp_path, capsys):
    summary = tmp_path / "s.json"
    assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(SAMPLE), "--out",
                 str(tmp_path / "t.jsonl"), "--summary", str(summary), "--quiet"]) == 0
    data = json.loads(summary.read_text())
    assert data["events"] == 5000 and "cart-abandoned" in data["per_rule"]
    capsys.readouterr()
    assert main(["report", str(summary)]) == 0
    table = capsys.readouterr().out
    assert "cart-abandoned" in table and "conv. lift" in table and "rev/customer lift" in table
    assert "inconclusive: control has" in table and "all rules" in table
    assert main(["report", str(summary), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cart = next(l for l in report["rules"] if l["rule_id"] == "cart-abandoned")
    customers = data["by_customer"]["cart-abandoned"]
    assert cart["contacted"]["customers"] == customers["contacted"]["customers"] > 0
    assert cart["control"]["customers"] == customers["control"]["customers"] > 0
    for kind in ("conversion", "revenue"):
        assert cart[kind]["unit"] == "customer" and len(cart[kind]["ci"]) == 2
        low, high = cart[kind]["ci"]
        assert low <= cart[kind]["lift"] <= high
        assert cart["verdict"].startswith(cart["verdict_kind"])
    program = report["program"]
    assert program["lift"]["rule_id"] == "all rules" and len(program["rules"]) == len(data["per_rule"])
    # each conversion once per customer: never more converted customers than any rule's sum
    assert program["lift"]["contacted"]["converted"] <= sum(
        c["contacted"]["converted"] for c in data["by_customer"].values())


def test_report_says_what_was_pending_at_the_end_and_the_cuped_adjustment(tmp_path, capsys):
    """The report's figures leave out the deadlines pending at the end of data: it says how many
    (and nothing when drained); CUPED is shown where the pre-period revenue cut the variance."""
    for drain in (False, True):
        summary = tmp_path / f"s{drain}.json"
        assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(SAMPLE), "--out",
                     str(tmp_path / "t.jsonl"), "--summary", str(summary), "--quiet"] + ["--drain"] * drain) == 0
        pending = json.loads(summary.read_text())["pending_total"]
        capsys.readouterr()
        assert main(["report", str(summary)]) == 0
        table = capsys.readouterr().out
        assert pending > 0 and (f"{pending:,} deadlines were pending at the end of data" in table) is not drain
        assert main(["report", str(summary), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        shown = [l["rule_id"] for l in report["rules"]
                 if l["revenue"]["cuped"] and l["revenue"]["cuped"]["variance_reduction"] >= 0.05]
        assert shown and all(f"CUPED, {rule}:" in table for rule in shown)


def test_report_of_an_old_summary_says_to_run_again(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"triggers": 3, "per_rule": {"r": {"sent": 2, "held_out": 1}}}))
    assert main(["report", str(old)]) == 2
    assert "run the backtest again" in capsys.readouterr().err


def test_report_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{")
    assert main(["report", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_backtest_html_report(tmp_path):
    report = tmp_path / "r.html"
    assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(SAMPLE), "--out", str(tmp_path / "t.jsonl"),
                 "--report", str(report), "--quiet", "--no-progress"]) == 0
    html = report.read_text()
    assert "cart-abandoned" in html and html.count("<svg") > 9


def test_a_reader_that_goes_away_stops_the_command_quietly(tmp_path):
    """`triggers backtest ... | head -1`: the pipe closes early; no traceback, the SIGPIPE status."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "backtest", "--rules", "rules", "--events",
                             "examples/sample-events.jsonl", "--no-progress", "--quiet"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"{")
    proc.stdout.close()          # as `head -1` does after its line
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and proc.returncode == 141, err.decode()[-2000:]


def test_backtest_html_report_names_its_inputs_without_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    report = tmp_path / "r.html"
    assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(SAMPLE.resolve()),
                 "--out", str(tmp_path / "t.jsonl"), "--report", str(report), "--quiet", "--no-progress"]) == 0
    html = report.read_text()
    assert str(ROOT) not in html and "<h1>Backtest of rules</h1>" in html


def test_validate_with_a_sample_warns_about_event_types_it_never_contains(tmp_path, capsys):
    """Issue 13: `on: purchse` (a typo) validates, and never fires; with `--events` validate
    says so at file:line and suggests the nearest type the sample has; still exit 0."""
    rees46 = ROOT.parent / "shared" / "data" / "rees46-clickstream-sample.jsonl"
    events = rees46 if rees46.is_file() else SAMPLE
    (tmp_path / "rules.yaml").write_text(
        "rules:\n"
        "  - id: thanks\n"
        "    type: transactional\n"
        "    on: purchse\n"
        "    then: {action: thank-you, channel: email}\n"
        "  - id: cart\n"
        "    type: transactional\n"
        "    on: add_to_cart\n"
        "    unless: {event: [purchase], within: 1h}\n"
        "    then: {action: cart-reminder, channel: email}\n")
    assert main(["validate", str(tmp_path)]) == 0
    assert "warning" not in capsys.readouterr().err          # the rules alone cannot tell
    assert main(["validate", str(tmp_path), "--events", str(events)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"{tmp_path / 'rules.yaml'}:2: warning: rule 'thanks' on 'purchse': no such event "
                                "in the sample (did you mean 'purchase'?)"]
    assert "1 warning(s)" in out


def test_validate_the_bundled_rules_against_the_bundled_sample_has_no_warning(capsys):
    assert main(["validate", str(ROOT / "rules"), "--events", str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err and "0 warning(s)" in out


def test_processes_that_fail_make_the_supervisor_fail_with_their_status(tmp_path):
    """`triggers run --processes 2` passes a process's error on (here: both refuse a settings file
    that does not parse, exit 2)."""
    from engine.cli.processes import supervise

    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml\n")
    assert supervise(["run", "--config", str(bad), "--rules", str(ROOT / "rules")], 2) == 2
