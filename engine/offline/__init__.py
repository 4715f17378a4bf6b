"""Offline tools over event files: backtest, diff, explain, the report."""
