"""/healthz says what the engine waits for: Redis, Kafka, or a sink whose receiver is failing."""

from __future__ import annotations

import time

from connectors.base import SinkStats
from engine.operators.metrics import Health


def test_nothing_to_wait_for_is_ok() -> None:
    health = Health()
    health.polled("p-0")
    ok, report = health.report()
    assert ok and report == {"status": "ok", "waiting_for": {}, "partitions": {"p-0": report["partitions"]["p-0"]},
                          "relays": {}}


def test_waits_are_reported_per_component_and_turn_unhealthy_after_a_while() -> None:
    health = Health(unhealthy_after_s=0.05)
    health.polled("p-0")
    health.polled("p-1")
    health.waiting("redis", "p-0", "commit")
    health.waiting("redis", "p-1", "state load")
    sink = SinkStats()   # what `Health.watch` reads while a sink retries
    health.watch("webhook", sink)
    ok, report = health.report()
    assert ok and list(report["waiting_for"]) == ["redis"]
    assert report["waiting_for"]["redis"]["what"] == ["commit", "state load"]

    sink.waiting_since, sink.last_error = time.time(), "HTTP 503 Service Unavailable"
    time.sleep(0.1)
    health.polled("p-0")
    health.polled("p-1")
    ok, report = health.report()
    assert not ok and report["status"] == "unhealthy"
    assert sorted(report["waiting_for"]) == ["redis", "sink:webhook"]
    assert report["waiting_for"]["sink:webhook"]["what"] == ["HTTP 503 Service Unavailable"]

    health.waiting("redis", "p-0", None)
    health.waiting("redis", "p-1", None)
    sink.waiting_since = None
    ok, report = health.report()
    assert ok and report["waiting_for"] == {}


def test_a_partition_that_ended_takes_its_waits_with_it() -> None:
    health = Health()
    health.polled("p-0")
    health.waiting("kafka", "p-0", "broker down")
    health.forget("p-0")
    assert health.report()[1]["waiting_for"] == {}
