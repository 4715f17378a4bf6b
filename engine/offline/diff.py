"""What a rules change does to the triggers, over the same events (`triggers diff`, whose
command line is `engine.cli.diff`).

Both rule sets are backtested over one decoding of the events (the replays run side by side,
batch by batch, so the file is read once and memory holds triggers, not events), and their
triggers are matched by `trigger_id`. The id is a stable hash of rule, customer and cause,
so a trigger present in both runs is the same decision of the same rule for the same cause;
what may differ between the runs is its status, reason, payload, fired_at (and action or
channel, when the rule's `then` changed).

Per rule (present in either set) the result counts the triggers only in OLD (removed), only
in NEW (added), in both but changed, and in both unchanged, with the customers affected and a
few examples of each kind. The full lists are on `DiffResult.changes` (and `--out`, JSONL).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import msgspec

from engine.actions.trigger import Trigger
from engine.core.times import format_ts, parse_ts
from engine.events.decode import decode_jsonl
from engine.events.model import Event
from engine.offline.backtest import BATCH, BacktestSummary, Replay, pending_note
from engine.rules.compiler import CompiledRules, load_and_compile

__all__ = ["DiffResult", "DiffSummary", "Example", "RuleDiff", "TriggerChange", "diff_backtests", "print_diff",
           "write_changes"]

ADDED = "added"        # only in NEW
REMOVED = "removed"    # only in OLD
CHANGED = "changed"    # in both, with a different outcome
COMPARED = ("status", "reason", "payload", "fired_at", "action", "channel")
EXAMPLES = 3           # examples per rule and kind of change


class TriggerChange(msgspec.Struct, omit_defaults=False):
    """One trigger that differs between the runs; also the line format of `--out`."""

    change: str                 # "added" (only in NEW), "removed" (only in OLD), "changed"
    trigger_id: str
    rule_id: str
    customer_id: str
    old: Trigger | None         # None when added
    new: Trigger | None         # None when removed
    fields: list[str] = []      # changed: which of COMPARED differ

    @property
    def trigger(self) -> Trigger:
        """The NEW trigger, or the OLD one when it was removed."""
        return self.new if self.new is not None else self.old  # type: ignore[return-value]


class Example(msgspec.Struct, omit_defaults=False):
    customer_id: str
    action: str
    fired_at: str
    status: str                 # "sent", "held_out", "suppressed (cooldown)"; changed: "old → new"
    detail: str = ""            # changed: the other fields that differ, "fired_at 2026-… → 2026-…"


class RuleDiff(msgspec.Struct, omit_defaults=False):
    rule_id: str
    rule: str                   # "same", "changed" (definition), "added" (only in NEW), "removed" (only in OLD)
    old_triggers: int
    new_triggers: int
    removed: int                # triggers only in OLD
    added: int                  # triggers only in NEW
    changed: int                # in both, status/reason/payload/fired_at/action/channel differ
    unchanged: int
    customers: int              # distinct customers with a removed, added or changed trigger
    affected: list[str] = []    # their ids, sorted
    removed_examples: list[Example] = []
    added_examples: list[Example] = []
    changed_examples: list[Example] = []


class DiffSummary(msgspec.Struct, omit_defaults=False):
    """What `--json` prints: everything but the full lists of changes."""

    old_rules: str
    new_rules: str
    events: int
    dead_letters: int
    until: str | None
    old_triggers: int
    new_triggers: int
    removed: int
    added: int
    changed: int
    unchanged: int
    customers: int
    rules_added: list[str]      # rule ids only in NEW
    rules_removed: list[str]    # rule ids only in OLD
    rules_changed: list[str]    # rule ids in both with a different definition
    policy_changed: bool
    rules: list[RuleDiff]
    ended_at: str | None = None     # the end of data (the last event or until), where both clocks stopped
    old_pending: int = 0            # one-shot deadlines due after it, not fired (fired when `drained`)
    new_pending: int = 0
    drained: bool = False


class DiffResult(msgspec.Struct, omit_defaults=False):
    summary: DiffSummary
    changes: list[TriggerChange]   # every difference, by rule, customer and fired_at
    old_backtest: BacktestSummary | None = None   # each side's own summary (lift): `--report`
    new_backtest: BacktestSummary | None = None
    old_triggers: dict[str, list[Trigger]] = {}   # each side's triggers by id (volumes): `--report`
    new_triggers: dict[str, list[Trigger]] = {}

    @property
    def rules(self) -> dict[str, RuleDiff]:
        return {r.rule_id: r for r in self.summary.rules}

    @property
    def added(self) -> list[TriggerChange]:
        return [c for c in self.changes if c.change == ADDED]

    @property
    def removed(self) -> list[TriggerChange]:
        return [c for c in self.changes if c.change == REMOVED]

    @property
    def changed(self) -> list[TriggerChange]:
        return [c for c in self.changes if c.change == CHANGED]

    @property
    def empty(self) -> bool:
        return not self.changes


class _Collect:
    """Triggers of one run, grouped by id (a repeated id keeps every occurrence, in order)."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[Trigger]] = {}
        self.count = 0

    def __call__(self, batch: list[Trigger]) -> None:
        by_id = self.by_id
        for t in batch:
            same = by_id.get(t.trigger_id)
            if same is None:
                by_id[t.trigger_id] = [t]
            else:
                same.append(t)
        self.count += len(batch)


def _as_rules(rules: CompiledRules | str | Path) -> CompiledRules:
    return rules if isinstance(rules, CompiledRules) else load_and_compile(rules)


def _event_batches(events: Iterable[Event] | str | Path, dead: list[int]) -> Iterator[list[Event]]:
    """Batches of decoded events; a path is read and decoded once, dead letters counted in `dead`."""
    if isinstance(events, (str, Path)):
        for batch in decode_jsonl(events, BATCH):
            dead[0] += len(batch.dead)
            yield batch.events
        return
    batch_events: list[Event] = []
    for ev in events:
        batch_events.append(ev)
        if len(batch_events) >= BATCH:
            yield batch_events
            batch_events = []
    if batch_events:
        yield batch_events


def _definition(value: Any) -> Any:
    """A rule or policy as plain data without where it was written, to compare definitions."""
    if isinstance(value, dict):
        return {k: _definition(v) for k, v in value.items() if k not in ("source", "condition_line")}
    if isinstance(value, (list, tuple)):
        return [_definition(v) for v in value]
    return value


def _status(t: Trigger) -> str:
    return f"{t.status} ({t.reason})" if t.reason else t.status


def _example(c: TriggerChange) -> Example:
    t = c.trigger
    if c.change != CHANGED:
        return Example(t.customer_id, t.action, t.fired_at, _status(t))
    old, new = c.old, c.new
    assert old is not None and new is not None
    status = _status(old) if _status(old) == _status(new) else f"{_status(old)} → {_status(new)}"
    detail = "; ".join(
        f"{f} {_show(getattr(old, f))} → {_show(getattr(new, f))}" for f in c.fields if f not in ("status", "reason")
    )
    return Example(t.customer_id, t.action, t.fired_at, status, detail)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def diff_backtests(old_rules: CompiledRules | str | Path, new_rules: CompiledRules | str | Path,
                   events: Iterable[Event] | str | Path, until: int | str | None = None,
                   drain: bool = False) -> DiffResult:
    """Backtest OLD and NEW over the same events and match their triggers by `trigger_id`.

    `old_rules`/`new_rules`: compiled rules or rules directories (RulesInvalid when invalid).
    `events`: decoded events in file order, or a JSONL file (decoded once; undecodable lines
    are counted as dead letters and skipped, as in a backtest). `until`: epoch ms or RFC 3339;
    events after it are not replayed. As in `triggers backtest`, both clocks stop at the last
    event (or `until`): deadlines due later are pending in both, not compared; `drain` fires them.
    """
    old_c, new_c = _as_rules(old_rules), _as_rules(new_rules)
    until_ms = parse_ts(until) if isinstance(until, str) else until
    run = _replay_both(old_c, new_c, events, until_ms, drain)
    match = _Match(run.old, run.new)
    rows = _rule_rows(old_c, new_c, match)
    old_policy = _definition(msgspec.to_builtins(old_c.ruleset.policy))
    new_policy = _definition(msgspec.to_builtins(new_c.ruleset.policy))
    summary = DiffSummary(
        old_rules=_where(old_rules), new_rules=_where(new_rules),
        events=run.events, dead_letters=run.dead_letters,
        until=format_ts(until_ms) if until_ms is not None else None,
        old_triggers=run.old.count, new_triggers=run.new.count,
        removed=sum(r.removed for r in rows), added=sum(r.added for r in rows),
        changed=sum(r.changed for r in rows), unchanged=sum(r.unchanged for r in rows),
        customers=len({c.customer_id for c in match.changes}),
        rules_added=[r.rule_id for r in rows if r.rule == "added"],
        rules_removed=[r.rule_id for r in rows if r.rule == "removed"],
        rules_changed=[r.rule_id for r in rows if r.rule == "changed"],
        policy_changed=old_policy != new_policy,
        rules=rows,
        ended_at=format_ts(run.old_summary.ended_at) if run.events or until_ms is not None else None,
        old_pending=run.old_summary.pending_total, new_pending=run.new_summary.pending_total, drained=drain,
    )
    return DiffResult(summary, match.changes, run.old_summary, run.new_summary, run.old.by_id, run.new.by_id)


class _Runs(msgspec.Struct):
    old: _Collect
    new: _Collect
    events: int
    dead_letters: int
    old_summary: BacktestSummary
    new_summary: BacktestSummary


def _replay_both(old_c: CompiledRules, new_c: CompiledRules, events: Iterable[Event] | str | Path,
                 until_ms: int | None, drain: bool) -> _Runs:
    """Both replays side by side, batch by batch: the events are decoded once."""
    old_out, new_out = _Collect(), _Collect()
    old_replay = Replay(old_c, old_out, until_ms, drain=drain)
    new_replay = Replay(new_c, new_out, until_ms, drain=drain)
    dead = [0]
    for batch in _event_batches(events, dead):
        old_replay.feed(batch)
        new_replay.feed(batch)
        if old_replay.stopped:
            break
    old_replay.finish()
    new_replay.finish()
    return _Runs(old_out, new_out, old_replay.evaluator.counters.events, dead[0],
                 old_replay.summary(dead[0], 0.0), new_replay.summary(dead[0], 0.0))


class _Match:
    """The triggers of both runs paired by id: the changes, sorted, and the counts per rule."""

    def __init__(self, old_out: _Collect, new_out: _Collect) -> None:
        changes: list[TriggerChange] = []
        self.per_rule_old: dict[str, int] = {}
        self.per_rule_new: dict[str, int] = {}
        self.unchanged: dict[str, int] = {}
        for tid, olds in old_out.by_id.items():
            news = new_out.by_id.get(tid, [])
            for i, old in enumerate(olds):
                self.per_rule_old[old.rule_id] = self.per_rule_old.get(old.rule_id, 0) + 1
                if i >= len(news):
                    changes.append(TriggerChange(REMOVED, tid, old.rule_id, old.customer_id, old, None))
                    continue
                new = news[i]
                fields = [f for f in COMPARED if getattr(old, f) != getattr(new, f)]
                if fields:
                    changes.append(TriggerChange(CHANGED, tid, old.rule_id, old.customer_id, old, new, fields))
                else:
                    self.unchanged[old.rule_id] = self.unchanged.get(old.rule_id, 0) + 1
        for tid, news in new_out.by_id.items():
            olds = old_out.by_id.get(tid, [])
            for new in news[len(olds):]:
                changes.append(TriggerChange(ADDED, tid, new.rule_id, new.customer_id, None, new))
            for new in news:
                self.per_rule_new[new.rule_id] = self.per_rule_new.get(new.rule_id, 0) + 1
        changes.sort(key=lambda c: (c.rule_id, c.customer_id, c.trigger.fired_at, c.trigger_id))
        self.changes = changes


def _rule_rows(old_c: CompiledRules, new_c: CompiledRules, match: _Match) -> list[RuleDiff]:
    """One row per rule of either set (and per rule id only the triggers know, e.g. timers of removed rules)."""
    old_defs = {r.id: _definition(msgspec.to_builtins(r.rule)) for r in old_c.rules}
    new_defs = {r.id: _definition(msgspec.to_builtins(r.rule)) for r in new_c.rules}
    rule_ids = [r.id for r in old_c.rules] + [r.id for r in new_c.rules if r.id not in old_defs]
    rule_ids += sorted((set(match.per_rule_old) | set(match.per_rule_new)) - set(rule_ids))
    by_rule: dict[str, list[TriggerChange]] = {}
    for c in match.changes:
        by_rule.setdefault(c.rule_id, []).append(c)
    rows = []
    for rid in rule_ids:
        mine = by_rule.get(rid, [])
        if rid in old_defs and rid in new_defs:
            state = "same" if old_defs[rid] == new_defs[rid] else "changed"
        else:
            state = "removed" if rid in old_defs else "added"
        kinds = {k: [c for c in mine if c.change == k] for k in (REMOVED, ADDED, CHANGED)}
        rows.append(RuleDiff(
            rule_id=rid, rule=state,
            old_triggers=match.per_rule_old.get(rid, 0), new_triggers=match.per_rule_new.get(rid, 0),
            removed=len(kinds[REMOVED]), added=len(kinds[ADDED]), changed=len(kinds[CHANGED]),
            unchanged=match.unchanged.get(rid, 0),
            customers=len({c.customer_id for c in mine}),
            affected=sorted({c.customer_id for c in mine}),
            removed_examples=[_example(c) for c in _spread(kinds[REMOVED])],
            added_examples=[_example(c) for c in _spread(kinds[ADDED])],
            changed_examples=[_example(c) for c in _spread(kinds[CHANGED])],
        ))
    return rows


def _spread(changes: list[TriggerChange]) -> list[TriggerChange]:
    """Up to EXAMPLES changes, of different customers where possible."""
    picked: list[TriggerChange] = []
    seen: set[str] = set()
    for c in changes:
        if c.customer_id not in seen:
            picked.append(c)
            seen.add(c.customer_id)
            if len(picked) == EXAMPLES:
                return picked
    for c in changes:
        if len(picked) == EXAMPLES:
            break
        if c not in picked:
            picked.append(c)
    return picked


def _where(rules: CompiledRules | str | Path) -> str:
    if isinstance(rules, CompiledRules):
        files = rules.ruleset.files
        return str(Path(files[0]).parent) if files else "<compiled rules>"
    return str(rules)


# -- output ------------------------------------------------------------------------------------

def print_diff(result: DiffResult, stream: TextIO) -> None:
    """The readable report: totals, one row per rule, then examples of each change."""
    s = result.summary
    until = f", until {s.until}" if s.until else ""
    dead = f" ({s.dead_letters:,} dead letters skipped)" if s.dead_letters else ""
    print(f"old: {s.old_rules}  →  new: {s.new_rules}", file=stream)
    print(f"{s.events:,} events{dead}{until}: {s.old_triggers:,} triggers before, {s.new_triggers:,} after; "
          f"{s.removed:,} removed, {s.added:,} added, {s.changed:,} changed, {s.unchanged:,} unchanged, "
          f"{s.customers:,} customers affected", file=stream)
    for label, ids in (("rules added", s.rules_added), ("rules removed", s.rules_removed),
                       ("rules changed", s.rules_changed)):
        if ids:
            print(f"{label}: {', '.join(ids)}", file=stream)
    if s.policy_changed:
        print("contact policy changed: every rule's statuses may move", file=stream)
    if s.old_pending or s.new_pending:
        print("note: " + pending_note(f"{s.old_pending:,} deadlines before, {s.new_pending:,} after", s.ended_at or "-",
                                      s.drained), file=stream)
    if result.empty:
        print("no trigger differs", file=stream)
    print(file=stream)
    width = max([len("rule")] + [len(r.rule_id) for r in s.rules])
    print(f"{'rule':<{width}}  {'definition':<10}  {'old':>6}  {'new':>6}  {'removed':>7}  {'added':>6}  "
          f"{'changed':>7}  {'same':>6}  {'customers':>9}", file=stream)
    for r in s.rules:
        print(f"{r.rule_id:<{width}}  {r.rule:<10}  {r.old_triggers:>6,}  {r.new_triggers:>6,}  {r.removed:>7,}  "
              f"{r.added:>6,}  {r.changed:>7,}  {r.unchanged:>6,}  {r.customers:>9,}", file=stream)
    lines = []
    for r in s.rules:
        for kind, examples in (("removed", r.removed_examples), ("added", r.added_examples),
                               ("changed", r.changed_examples)):
            for e in examples:
                detail = f"  [{e.detail}]" if e.detail else ""
                lines.append((r.rule_id, kind, e, detail))
    if lines:
        print("\nexamples:", file=stream)
        cw = max(len(e.customer_id) for _, _, e, _ in lines)
        aw = max(len(e.action) for _, _, e, _ in lines)
        for rid, kind, e, detail in lines:
            print(f"  {rid:<{width}}  {kind:<7}  {e.customer_id:<{cw}}  {e.action:<{aw}}  {e.fired_at}  "
                  f"{e.status}{detail}", file=stream)


def write_changes(result: DiffResult, path: str) -> None:
    """Every difference as JSONL (`-`: stdout), one `TriggerChange` per line."""
    encoder = msgspec.json.Encoder()
    data = b"".join(encoder.encode(c) + b"\n" for c in result.changes)
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(path).write_bytes(data)
