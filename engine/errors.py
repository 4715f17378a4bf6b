"""The one root of the errors the engine raises for a user to read (as httpx's `_exceptions.py`).

`except EngineError` catches every refusal the engine words for a person (a file, a line, a
rule, a partition, what to do), and nothing else: a bare `ValueError`, `KeyError` or
`TypeError` escaping the engine is a bug, not a message. Each error is defined next to the
code that raises it (so that a module's contract stays in its docstring); this module only
draws the tree and imports nothing from the engine, so any module may derive from it.

    EngineError
    ├── RuleError             engine.rules.errors    one problem of a rules file, as `file:line: rule 'id': …`
    ├── RulesInvalid          engine.rules.errors    rules refused; `.errors` lists every RuleError (validate, load, reload)
    ├── ExprError             engine.rules.expr      an expression or template refused, at `.col` (the loader makes it a RuleError)
    ├── SettingsError         engine.operators.settings   the settings file or a TRIGGERS_* variable is invalid
    ├── FlowError             engine.operators.flow       the live dataflow cannot be built (topic missing, Kafka refused)
    ├── ResumeRefused         engine.operators.resume     starting would hide a loss of state, or cannot work
    ├── StateLost             engine.state.store          a commit found the store lost what this engine committed
    ├── Fatal                 engine.operators.partition  a condition waiting cannot fix (Redis refused the credentials)
    ├── RepartitionError      engine.operators.repartition  the repartition stage cannot go on
    ├── ExplainError          engine.offline.explain      a request `triggers explain` cannot answer (exit 2)
    │   └── UnknownCustomer                               no events or state for that customer (exit 1)
    ├── CommandError          engine.cli.common           a `triggers` command refused its arguments (exit status attached)
    └── SinkError             connectors.base             a sink could not deliver a batch, even after retrying
"""

from __future__ import annotations

__all__ = ["EngineError"]


class EngineError(Exception):
    """An error whose message is written for the user: it says what is wrong, where, and how to fix it."""
