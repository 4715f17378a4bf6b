"""bench.e2e's in-process latency run: the release clock starts at the engine's first read.

It used to start about a second after the harness began preparing the run, and preparing took
about that long: the engine then found the first second of events already waiting, and that
backlog was reported as the p99 (1,656 ms at 20,000 events/s, where the steady state was 15-50)."""

from __future__ import annotations

import time

from bench.e2e import WARMUP_S, Pace, PacedLog, latencies
from engine.actions.trigger import SENT, Trigger


def test_nothing_is_released_before_the_first_read_starts_the_clock() -> None:
    pace = Pace()
    log = PacedLog("p", [b"a", b"b", b"c"], [0.0, 0.05, 60.0], pace, None)
    time.sleep(0.12)   # the engine starting: the clock does not run yet
    assert [v for v, _, _ in log.read(10)] == [b"a"]
    assert pace.start is not None
    time.sleep(0.06)
    assert [v for v, _, _ in log.read(10)] == [b"b"]
    assert log.read(10) == []


def test_the_clock_is_shared_by_the_partitions() -> None:
    pace = Pace()
    first = PacedLog("p0", [b"a"], [0.0], pace, None)
    second = PacedLog("p1", [b"b"], [0.05], pace, None)
    first.read(10)
    time.sleep(0.06)   # the second partition's first read comes later: its record is due by then
    assert [v for v, _, _ in second.read(10)] == [b"b"]


def _trigger(cause: str, fired_at: str) -> Trigger:
    return Trigger("t", "r", "c", "a", "email", SENT, None, fired_at, cause, {})


def test_latencies_report_the_warm_up_apart() -> None:
    ts = "2026-12-02T10:00:00.000Z"
    lines = [f'{{"event_id": "e{i}", "ts": "{ts}"}}'.encode() for i in range(3)]
    released = {"e0": 100.0, "e1": 100.0 + WARMUP_S + 0.5, "e2": 100.0 + WARMUP_S + 0.6}
    out = [(100.9, _trigger("e0", ts)), (released["e1"] + 0.004, _trigger("e1", ts)),
           (released["e2"] + 0.006, _trigger("e2", ts)),
           (200.0, _trigger("e2", "2026-12-02T10:30:00.000Z"))]   # fired by a deadline: not counted
    result = latencies(out, released, lines)
    assert result["n"] == 2
    assert 3.9 < result["p50_ms"] < 6.1 and result["max_ms"] < 6.1
    assert result["warmup_max_ms"] == 900.0
