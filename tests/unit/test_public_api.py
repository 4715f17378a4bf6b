"""The public names of `engine` are a choice, pinned here (as httpx's test_exported_members):
adding or removing one is a decision this test makes visible in review."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import engine
from engine.errors import EngineError

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = {
    # events
    "Event", "EventDecoder", "DeadLetter", "decode_jsonl", "read_jsonl",
    # rules
    "CompiledRules", "load_and_compile",
    # state and the action
    "CustomerState", "InMemoryStore", "Trigger",
    # offline tools
    "BacktestSummary", "backtest_file", "DiffResult", "diff_backtests", "explain_customer",
    # the live run's settings
    "Settings", "load_settings",
    # errors
    "EngineError", "RuleError", "RulesInvalid", "SettingsError", "StateLost", "ExplainError", "UnknownCustomer",
}
ERRORS = {"EngineError", "RuleError", "RulesInvalid", "SettingsError", "StateLost", "ExplainError", "UnknownCustomer"}


def test_all_is_the_chosen_api():
    assert set(engine.__all__) == PUBLIC
    assert len(engine.__all__) == len(PUBLIC)
    assert set(engine._EXPORTS) | {"EngineError"} == PUBLIC


def test_every_public_name_resolves_to_its_definition():
    for name in engine.__all__:
        value = getattr(engine, name)
        assert getattr(value, "__name__", name) == name, name
        assert name in dir(engine)


def test_public_errors_derive_from_the_root():
    for name in ERRORS:
        assert issubclass(getattr(engine, name), EngineError), name


def test_unknown_name_is_an_attribute_error():
    try:
        engine.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("engine.no_such_name resolved")


def test_import_engine_stays_light():
    """`import engine` loads only itself and the error root: names come on first use."""
    code = ("import json, sys, engine; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('engine', 'bytewax', 'confluent_kafka', 'redis', 'connectors'))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == ["engine", "engine.errors"]
