"""Real-time trigger engine for trigger-based marketing.

The data flow, one module (or folder) per stage:
event (`events`) -> decode (`events`) -> state (`state/`) -> rules (`rules/`, `evaluate`)
-> policy (`policy`) -> action (`triggers`) -> connector (`connectors/`).
The pure core (everything but `operators/`, `state/redis` and `connectors/`) imports no
Bytewax, Kafka or Redis, so the backtest and the live dataflow run the same code.
"""
