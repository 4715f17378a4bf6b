"""`bench.layers` measures the layers it says: no rules, the folder's aggregates alone, the folder."""

from __future__ import annotations

from pathlib import Path

from bench.layers import layered_rules, replay_us
from engine.events.model import Event

ROOT = Path(__file__).resolve().parents[2]


def test_the_layers_are_no_rules_the_aggregates_alone_and_the_whole_folder():
    sets = layered_rules(ROOT / "rules")
    full, aggregates, none = sets["all rules"], sets["aggregates only"], sets["no rules"]
    assert full.rules and not aggregates.rules and not none.rules
    assert set(aggregates.ruleset.aggregates) == set(full.ruleset.aggregates) and full.ruleset.aggregates
    assert not none.ruleset.aggregates
    views = [Event(f"e{i}", "product_view", f"c{i % 7}", 1_767_225_600_000 + i * 60_000, {"category": "shoes"})
             for i in range(200)]
    assert all(replay_us(rules, [views[:100], views[100:]]) > 0 for rules in sets.values())
