"""Where a rule set names event types, and which of them a sample of events never contains.

A misspelt `on: purchse` is valid YAML and a valid rule: it just never fires. Nothing in the
rules alone can tell, but a sample of the shop's events can: `triggers validate --events
FILE` lists every event type the rules name that the sample lacks, at its `file:line`, with
the nearest type the sample does have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import msgspec

from engine.rules.errors import did_you_mean
from engine.rules.model import Attribution, RuleSet, Source

__all__ = ["TypeUse", "missing_types", "type_uses"]

ANY = "*"


class TypeUse(msgspec.Struct, frozen=True):
    """One place that names an event type: `what` says where, e.g. "rule 'cart' on"."""

    type: str
    what: str
    source: Source


def type_uses(rules: RuleSet) -> Iterator[TypeUse]:
    """Every event type the rules name (the wildcard `*` aside), in file order."""
    for a in rules.aggregates.values():
        for t in a.on:
            yield TypeUse(t, f"aggregate '{a.name}' on", a.source)
    for r in rules.rules:
        for t in r.on:
            yield TypeUse(t, f"rule '{r.id}' on", r.source)
        for t in r.inactive_of:
            yield TypeUse(t, f"rule '{r.id}' inactive of", r.source)
        if r.unless is not None:
            for t in r.unless.events:
                yield TypeUse(t, f"rule '{r.id}' unless", r.unless.source)
        for n, step in enumerate(r.steps, 1):
            if step.unless is not None:
                for t in step.unless.events:
                    yield TypeUse(t, f"rule '{r.id}' step {n} unless", step.unless.source)
        if r.journey is not None:
            for t in r.journey.exit_on:
                yield TypeUse(t, f"rule '{r.id}' exit_on", r.source)
            for js in r.journey.steps:
                if js.wait_for is not None:
                    for t in js.wait_for.events:
                        yield TypeUse(t, f"rule '{r.id}' step '{js.id}' wait", js.wait_for.source)
    p = rules.policy
    if p is not None:   # only what the policy says: the defaults name types a shop may not have
        given, default = p.attribution, Attribution()
        for key in ("responses", "conversions"):
            if getattr(given, key) != getattr(default, key):
                for t in getattr(given, key):
                    yield TypeUse(t, f"policy attribution {key}", p.source)


def missing_types(rules: RuleSet, seen: Counter[str]) -> list[str]:
    """`file:line: warning: …` for each use of a type that `seen` (types of a sample) lacks."""
    lines = []
    for use in type_uses(rules):
        if use.type == ANY or seen[use.type]:
            continue
        hint = did_you_mean(use.type, [t for t in seen if seen[t]])
        lines.append(f"{use.source.file}:{use.source.line}: warning: {use.what} '{use.type}': "
                     f"no such event in the sample{hint}")
    return lines
