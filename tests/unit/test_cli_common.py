"""What the `triggers` commands share (engine.cli.common): refusals, rules errors, --until."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.cli.common import CommandError, check_events_file, load_rules, parse_until, print_rules_invalid
from engine.errors import EngineError
from engine.rules.errors import MAX_ERRORS, RuleError, RulesInvalid

ROOT = Path(__file__).resolve().parents[2]


def test_command_error_is_an_engine_error_with_a_status():
    e = CommandError("no such events file: x")
    assert isinstance(e, EngineError) and e.exit_code == 2
    assert CommandError("bad", exit_code=1).exit_code == 1


def test_parse_until():
    assert parse_until(None) is None
    assert parse_until("1970-01-01T00:00:01Z") == 1000
    with pytest.raises(CommandError, match="--until"):
        parse_until("yesterday")


def test_check_events_file(tmp_path):
    check_events_file("-")
    with pytest.raises(CommandError, match="no such events file"):
        check_events_file(str(tmp_path / "nope.jsonl"))


def test_rules_errors_are_printed_the_same_way(capsys):
    errors = [RuleError("r.yaml", 3, "unknown aggregate 'x'", "a"), RuleError("r.yaml", 9, "bad", None)]
    print_rules_invalid(RulesInvalid(errors), "rules/")
    assert capsys.readouterr().err.splitlines() == [
        "r.yaml:3: rule 'a': unknown aggregate 'x'", "r.yaml:9: bad", "2 error(s) in rules/"]
    print_rules_invalid(RulesInvalid(errors), "new/", prog="triggers diff", label="NEW")
    assert capsys.readouterr().err.splitlines()[-1] == "triggers diff: 2 error(s) in the NEW rules new/"
    many = [RuleError("r.yaml", i, "bad") for i in range(MAX_ERRORS + 1)]
    print_rules_invalid(RulesInvalid(many), "rules/")
    assert capsys.readouterr().err.splitlines()[-1] == f"{MAX_ERRORS}+ error(s) in rules/"


def test_load_rules_prints_and_returns_none(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("rules:\n  - id: x\n    when: nope\n")
    assert load_rules(str(tmp_path), prog="triggers explain") is None
    assert capsys.readouterr().err.splitlines()[-1].startswith("triggers explain: ")


def test_main_prints_a_command_error_with_the_command(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith("triggers report: cannot read ")
    assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(tmp_path / "none.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"triggers backtest: no such events file: {tmp_path / 'none.jsonl'}"
