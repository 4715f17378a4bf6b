"""Real-time trigger engine for trigger-based marketing.

The folders follow the data flow:
event → decode (`events/`) → state (`state/`) → rules (`rules/`) and the core that applies them
(`core/`) → policy (`policy/`) → action (`actions/`) → connector (`connectors/`, outside `engine/`).
`offline/` holds the tools over event files (backtest, diff, explain, report), `operators/` the
Bytewax runtime of the live run, `cli/` the `triggers` command.
"""
