"""Synthetic rule sets of a given size, for measuring how evaluation scales with the rule count.

The bundled rules plus N more on other event types (two rules per type), the shape of a real
rules directory that grows by adding campaigns: each event still meets only the rules of
its own type, so thanks to the index by event type the cost per event should hardly grow.
"""

from __future__ import annotations

from pathlib import Path

from engine.rules.compiler import CompiledRules, compile_rules
from engine.rules.loader import load_rules

ROOT = Path(__file__).resolve().parents[1]


def rules_yaml(extra: int) -> str:
    lines = ["rules:"]
    for k in range(extra):
        kind = k % 3
        event_type = f"app_event_{k // 2}"
        if kind == 0:
            body = f"    if: event.value > {k}\n    then: {{action: a{k}, channel: email}}"
        elif kind == 1:
            body = f"    if: purchases >= {k % 50 + 1} and event.value > 1\n    then: {{action: a{k}, channel: push}}"
        else:
            body = f"    unless: {{event: [purchase], within: 1h}}\n    then: {{action: a{k}, channel: email}}"
        rule_type = "transactional" if kind == 2 else "behavioral"
        lines.append(f"  - id: synthetic-{k}\n    type: {rule_type}\n    on: {event_type}\n{body}")
    return "\n".join(lines) + "\n"


def rule_set(total: int, tmp: Path) -> CompiledRules:
    """The bundled rules (9) plus synthetic ones, `total` in all (at least the bundled ones)."""
    bundled = load_rules(ROOT / "rules")
    extra = max(0, total - len(bundled.rules))
    d = tmp / f"rules-{total}"
    d.mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "rules").glob("*.yaml"):
        (d / f.name).write_text(f.read_text())
    (d / "synthetic.yaml").write_text(rules_yaml(extra))
    return compile_rules(load_rules(d))
