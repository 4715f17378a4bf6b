"""What /metrics says about a run's input and rules: late and duplicate events per partition,
whether the rules on disk are the ones applied (`triggers_rules_valid`), and that every counter
is exposed as `<name>_total` (Prometheus' naming rule)."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY

from engine.operators import metrics
from engine.operators.partition import Batch, PartitionWorker
from engine.rules.compiler import load_and_compile
from engine.rules.reload import LiveRules
from engine.state.memory import InMemoryStore
from engine.testing import MemoryLog


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def purchase(event_id: str, customer: str, ts: int) -> bytes:
    return (f'{{"event_id": "{event_id}", "type": "purchase", "customer_id": "{customer}", "ts": {ts}, '
            f'"properties": {{}}}}').encode()


def test_late_and_duplicate_events_are_counted_per_partition(tmp_path: Path, first_purchase_rules: Path) -> None:
    lines = [purchase("p1", "c1", 10_000), purchase("p1", "c1", 10_000),   # a re-delivery
             purchase("p2", "c2", 20_000), purchase("p3", "c3", 15_000),   # 5 s behind the newest: late
             purchase("p2", "c2", 20_000)]
    worker = PartitionWorker(MemoryLog("metrics-p", lines), InMemoryStore(),
                             LiveRules(tmp_path, load_and_compile(tmp_path), watch=False), 0)
    labels = {"partition": "metrics-p"}
    before = sample("triggers_duplicate_events_total", labels), sample("triggers_late_events_total", labels)
    worker.process(Batch(worker, worker.event_log.read(100), True, 30_000, False))
    after = sample("triggers_duplicate_events_total", labels), sample("triggers_late_events_total", labels)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)
    assert worker.stats.triggers == 3   # one first purchase each: the duplicates fired nothing


def test_rules_valid_is_0_from_a_rejected_change_until_a_valid_one(tmp_path: Path, first_purchase_rules: Path) -> None:
    rules_file = first_purchase_rules
    rules = rules_file.read_text()
    live = LiveRules(tmp_path, load_and_compile(tmp_path), interval_s=0)
    metrics.track_rules(live)
    assert (sample("triggers_rules_valid"), sample("triggers_rules_rejected_total")) == (1, 0)

    rules_file.write_text(rules.replace("purchases == 1", "purchases =="))
    live.poll()
    assert (sample("triggers_rules_valid"), sample("triggers_rules_rejected_total")) == (0, 1)
    assert sample("triggers_rules_version") == 0           # the old rules still run

    rules_file.write_text(rules.replace("purchases == 1", "purchases == 2"))
    os.utime(rules_file, ns=(1, 1))                          # a new fingerprint even within the mtime's grain
    live.poll()
    assert (sample("triggers_rules_valid"), sample("triggers_rules_rejected_total")) == (1, 1)
    assert sample("triggers_rules_version") == 1


def test_every_counter_is_exposed_as_total() -> None:
    """prometheus_client names a counter's samples `<name>_total`; a gauge that only grows (what
    `triggers_rules_rejected` was) would be a counter without the suffix."""
    text = metrics.generate_latest(REGISTRY).decode()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE triggers_"))
    counters = {name for name, kind in types.items() if kind == "counter"}
    assert counters == {f"triggers_{n}_total" for n in (
        "events", "late_events", "duplicate_events", "dead_letters", "fired", "commits", "redis_errors",
        "kafka_errors", "relay_delivered", "relay_retries", "relay_dead_letters", "rules_rejected")}
    assert not any(name.endswith("_total") for name, kind in types.items() if kind != "counter")
