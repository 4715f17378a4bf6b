"""Per-customer state: its struct (`customer`), the store protocols (`store`: `PartitionStore`, what
the live worker calls; `StateStore`, states by id for tools) and the stores side by side: in memory
(`memory`, for backtests, the quick start and the live path in tests) and Redis (`redis`)."""
