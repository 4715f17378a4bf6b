"""connectors.base: the one Sink contract, its stats, and the one backoff."""

from __future__ import annotations

import random
import threading

import pytest

from connectors.base import Backoff, Sink, SinkStats
from engine.operators import sinks as live_sinks
from engine.testing import ListSink


def test_backoff_is_full_jitter_below_a_doubling_capped_bound() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert backoff.attempt == 200
    bounds = [min(1.0, 0.1 * 2**n) for n in range(200)]
    assert all(0.0 <= d < b for d, b in zip(delays, bounds))
    assert max(delays[10:]) > 0.5    # grows to the cap ...
    assert min(delays[10:]) < 0.2    # ... and stays spread out below it
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() < 0.1


def test_a_sink_must_say_how_it_settles() -> None:
    class NoSettle(Sink):
        def write_batch(self, items) -> None: ...

        def close(self) -> None: ...

    with pytest.raises(TypeError, match="settle"):
        NoSettle()   # type: ignore[abstract]


def test_stats_say_since_when_deliveries_fail() -> None:
    stats = SinkStats()
    assert (stats.waiting_since, stats.last_error) == (None, None)
    stats.failing("HTTP 503")
    since = stats.waiting_since
    assert since is not None
    stats.failing("timed out")
    assert (stats.waiting_since, stats.last_error) == (since, "timed out")
    stats.recovered()
    assert (stats.waiting_since, stats.last_error) == (None, None)


def test_settle_sinks_settles_what_this_thread_wrote_to() -> None:
    settled: list[str] = []

    class Recording(ListSink):
        def settle(self) -> None:
            settled.append(threading.current_thread().name)

    out: list = []
    partition = live_sinks.ConnectorSink("rec", lambda _w: Recording(out)).build("s", 0, 1)
    partition.write_batch([1, 2])
    live_sinks.settle_sinks()
    assert out == [1, 2] and settled == [threading.current_thread().name]
    assert partition.connector is not None and partition.connector.stats.delivered == 2
    worker = threading.Thread(target=live_sinks.settle_sinks, name="other")
    worker.start()
    worker.join()
    assert settled == [threading.current_thread().name]   # another thread wrote to nothing
    live_sinks._written.pop(threading.get_ident(), None)   # leave no sink for later tests to settle


def test_connectors_import_from_the_engine_only_the_trigger_record() -> None:
    """Loggers, metrics and health hooks are passed in from engine.operators, never imported."""
    import ast
    from pathlib import Path

    allowed = {"engine.actions", "engine.actions.trigger", "engine.errors"}
    root = Path(__file__).resolve().parents[2] / "connectors"
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            engine = {n for n in names if n == "engine" or n.startswith("engine.")}
            if engine - allowed:
                found.setdefault(str(path.relative_to(root)), set()).update(engine - allowed)
    assert found == {}
