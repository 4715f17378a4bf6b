"""The evaluation core: state + event (or clock) + compiled rules → state + triggers, deadlines, per-event isolation.

`session.Session` is the one driver every caller uses (backtest, live partition, explain);
`observe.Observer` is what the evaluator and the policy tell as they work (explain listens)."""
