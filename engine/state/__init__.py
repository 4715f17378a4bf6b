"""Per-customer state: its struct (`customer`), the store protocol (`store`) and the stores
side by side: in memory (`memory`, for backtests and the quick start) and Redis (`redis`)."""
