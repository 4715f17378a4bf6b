"""Real-time trigger engine for trigger-based marketing.

The folders follow the data flow:
event → decode (`events/`) → state (`state/`) → rules (`rules/`) and the core that applies them
(`core/`) → policy (`policy/`) → action (`actions/`) → connector (`connectors/`, outside `engine/`).
`offline/` holds the tools over event files (backtest, diff, explain, report), `operators/` the
Bytewax runtime of the live run, `cli/` the `triggers` command.

The public API is `__all__` below (pinned by tests/unit/test_public_api.py); anything else is
internal and may move. Names are imported on first use, so `import engine` loads nothing but
this module and `engine.errors`: a script that only compiles rules never imports Bytewax,
Kafka or Redis clients.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError

_EXPORTS: dict[str, str] = {
    # events: the input and its decoding
    "Event": "engine.events.model",
    "EventDecoder": "engine.events.decode",
    "DeadLetter": "engine.events.decode",
    "decode_jsonl": "engine.events.decode",
    "read_jsonl": "engine.events.decode",
    # rules: compiled once, then applied
    "CompiledRules": "engine.rules.compiler",
    "load_and_compile": "engine.rules.compiler",
    # state and the action
    "CustomerState": "engine.state.customer",
    "InMemoryStore": "engine.state.memory",
    "Trigger": "engine.actions.trigger",
    # offline tools over event files
    "BacktestSummary": "engine.offline.backtest",
    "backtest_file": "engine.offline.backtest",
    "DiffResult": "engine.offline.diff",
    "diff_backtests": "engine.offline.diff",
    "explain_customer": "engine.offline.explain",
    # the live run's settings
    "Settings": "engine.operators.settings",
    "load_settings": "engine.operators.settings",
    # errors (the tree is drawn in engine.errors)
    "RuleError": "engine.rules.errors",
    "RulesInvalid": "engine.rules.errors",
    "SettingsError": "engine.operators.settings",
    "StateLost": "engine.state.store",
    "ExplainError": "engine.offline.explain",
    "UnknownCustomer": "engine.offline.explain",
}

__all__ = [
    "BacktestSummary", "CompiledRules", "CustomerState", "DeadLetter", "DiffResult", "EngineError", "Event",
    "EventDecoder", "ExplainError", "InMemoryStore", "RuleError", "RulesInvalid", "Settings", "SettingsError",
    "StateLost", "Trigger", "UnknownCustomer", "backtest_file", "decode_jsonl", "diff_backtests",
    "explain_customer", "load_and_compile", "load_settings", "read_jsonl",
]

if TYPE_CHECKING:
    from engine.actions.trigger import Trigger
    from engine.events.decode import DeadLetter, EventDecoder, decode_jsonl, read_jsonl
    from engine.events.model import Event
    from engine.offline.backtest import BacktestSummary, backtest_file
    from engine.offline.diff import DiffResult, diff_backtests
    from engine.offline.explain import ExplainError, UnknownCustomer, explain_customer
    from engine.operators.settings import Settings, SettingsError, load_settings
    from engine.rules.compiler import CompiledRules, load_and_compile
    from engine.rules.errors import RuleError, RulesInvalid
    from engine.state.customer import CustomerState
    from engine.state.memory import InMemoryStore
    from engine.state.store import StateLost


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value   # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
