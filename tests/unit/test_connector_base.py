"""connectors.base: the one Sink contract, its stats, and the one backoff."""

from __future__ import annotations

import random

import pytest

from connectors.base import Backoff, Failure, Sink, SinkStats
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


def test_a_sink_must_say_how_it_delivers_and_settles() -> None:
    class NoDeliver(Sink):
        def write_batch(self, items) -> None: ...

        def settle(self) -> None: ...

        def close(self) -> None: ...

    with pytest.raises(TypeError, match="deliver"):
        NoDeliver()   # type: ignore[abstract]

    class NoSettle(Sink):
        def deliver(self, items) -> list[Failure]:
            return []

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


def test_the_test_double_answers_per_item_as_every_connector_does() -> None:
    out: list = []
    sink = ListSink(out, refuse=lambda n: "odd" if n % 2 else None, fail_next=1)
    assert sink.deliver([1, 2]) == [Failure(0, "down", False), Failure(1, "down", False)]
    assert out == [] and sink.stats.last_error == "down"
    assert sink.deliver([1, 2, 3]) == [Failure(0, "odd", True), Failure(2, "odd", True)]
    assert out == [2] and sink.stats.delivered == 1 and sink.stats.waiting_since is None


def test_connectors_import_from_the_engine_only_the_trigger_record() -> None:
    """Loggers, metrics and health hooks are passed in from engine.operators, never imported (the
    placeholder splitter the rules' payload templates use is a leaf, shared by the webhook's body)."""
    import ast
    from pathlib import Path

    allowed = {"engine.actions", "engine.actions.trigger", "engine.actions.placeholders", "engine.errors"}
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
