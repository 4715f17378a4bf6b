"""Benchmarks and workload generation.

`bench.workload` generates a deterministic, realistic webshop event stream in the native
event format (SPEC §2); the benchmarks replay it, and the real files in the shared data
directory, through the engine and print figures and ratios.
"""
