"""A journey's funnel as the reports lay it out (SPEC §3a): the backtest's summary, `report` and
the HTML page show the same rows, so they cannot disagree.

One row per step in file order (walks that reached it), the branches taken under it (where each
leads), a send's outcomes beside it, then the ways out by reason and the walks still inside.
Shares are of each group's entries: the held-out group walks the same steps, so a step reached by
60% of the contacted walks and 40% of the held-out ones shows what the sends did.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from engine.core.funnel import Exit, Funnel, Pair
from engine.rules.compiler import CompiledRules
from engine.rules.journey_schema import successors

WIDTH = 100        # the text block fits this many columns (send outcomes wrap)
LABEL_MAX = 28     # a longer label pushes its line out rather than being cut (ids stay greppable)


class StepShape(msgspec.Struct):
    """What a funnel needs of a step besides its counts: its kind, where each way out leads."""

    id: str
    kind: str                         # engine.rules.model.StepKind value: send, delay, wait, condition, split
    targets: dict[str, str] = {}      # "next", "yes", "no" or a split's target -> step id or "end"


def journey_shapes(rules: CompiledRules) -> dict[str, list[StepShape]]:
    """Every journey's steps in file order (journey id -> shapes)."""
    out: dict[str, list[StepShape]] = {}
    for journey in rules.journeys:
        spec = journey.rule.journey
        assert spec is not None
        steps = spec.steps
        out[journey.id] = [StepShape(s.id, s.kind.value, {key.removeprefix("split."): target
                                                          for key, target in successors(steps, i)})
                           for i, s in enumerate(steps)]
    return out


class RowKind(StrEnum):
    STEP = "step"          # walks that reached a step
    BRANCH = "branch"      # walks that took one way out of the step above
    EXIT = "exit"          # walks that ended, for one reason
    INSIDE = "inside"      # walks still in progress at the end of the run


class Row(msgspec.Struct, frozen=True):
    """One line of a funnel table."""

    kind: RowKind
    label: str                        # a step id, a branch ("yes → recommend", "→ a"), an exit reason
    walks: Pair
    contacted_share: float | None     # of the contacted walks that entered (None: none entered)
    held_out_share: float | None
    share: float | None               # of every walk that entered
    step_kind: str = ""               # a step's kind (StepShape.kind)
    outcomes: dict[str, int] = {}     # a send step: "sent", "held_out", "suppressed:<reason>" -> count


def _share(n: int, of: int) -> float | None:
    return n / of if of else None


def _row(kind: RowKind, label: str, walks: Pair, entered: Pair, step_kind: str = "",
         outcomes: dict[str, int] | None = None) -> Row:
    return Row(kind, label, walks, _share(walks.contacted, entered.contacted), _share(walks.held_out, entered.held_out),
               _share(walks.total, entered.total), step_kind, outcomes or {})


def _outcome_order(outcome: str) -> tuple[int, str]:
    return ({"sent": 0, "held_out": 1}.get(outcome, 2), outcome)


def funnel_rows(funnel: Funnel, steps: list[StepShape] | None = None) -> list[Row]:
    """The funnel's rows: each step (file order) with its branches, then exits, then still inside.
    `steps` (the journey's shapes) give kinds and branch targets; every branch a step has is
    listed, taken or not; a branch the counts know but the shapes do not (an edit) comes last."""
    shapes = {s.id: s for s in steps or ()}
    entered = funnel.entered
    rows: list[Row] = []
    for step_id in funnel.steps:
        shape = shapes.get(step_id)
        outcomes = dict(sorted(funnel.sends.get(step_id, {}).items(), key=lambda kv: _outcome_order(kv[0])))
        rows.append(_row(RowKind.STEP, step_id, funnel.reached.get(step_id) or Pair(), entered,
                         shape.kind if shape is not None else "", outcomes))
        taken = funnel.branches.get(step_id, {})
        targets = {k: v for k, v in shape.targets.items() if k != "next"} if shape is not None else {}
        for branch in [*targets, *(b for b in taken if b not in targets)]:
            target = targets.get(branch)
            label = f"{branch} → {target}" if target is not None and target != branch else f"→ {branch}"
            rows.append(_row(RowKind.BRANCH, label, taken.get(branch) or Pair(), entered))
    for why in sorted(funnel.exits, key=lambda k: (k != Exit.COMPLETED.value, -funnel.exits[k].total, k)):
        rows.append(_row(RowKind.EXIT, why, funnel.exits[why], entered))
    rows.append(_row(RowKind.INSIDE, "still inside", funnel.inside, entered))
    return rows


def outcomes_text(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in outcomes.items())


def not_entered_text(funnel: Funnel) -> str:
    """Entry events that started no walk, by reason ("" when none)."""
    return ", ".join(f"{why} {n:,}" for why, n in sorted(funnel.not_entered.items()))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def funnel_lines(funnel: Funnel, steps: list[StepShape] | None = None, indent: str = "  ") -> list[str]:
    """The funnel as a text block of at most `WIDTH` columns (a label longer than `LABEL_MAX` excepted):
    a heading, the rows with counts and shares per group and send outcomes, the refused entries."""
    e = funnel.entered
    head = (f"journey '{funnel.journey}': {e.total:,} entered ({e.contacted:,} contacted, {e.held_out:,} held out)")
    if not e.total:
        refused = not_entered_text(funnel)
        return [head + (f"; not entered: {refused}" if refused else "")]
    rows = funnel_rows(funnel, steps)

    def label_of(r: Row) -> str:
        return indent + ("  " + r.label if r.kind in (RowKind.BRANCH, RowKind.EXIT) else r.label)

    label_w = min(max(len(label_of(r)) for r in rows), len(indent) + LABEL_MAX)
    kind_w = max([len("kind")] + [len(r.step_kind) for r in rows])
    count_w = max(len(f"{n:,}") for r in rows for n in (r.walks.contacted, r.walks.held_out))
    col_w = max(len("contacted"), count_w + 7)

    def cells(r: Row) -> str:
        return (f"{r.walks.contacted:>{count_w},} {_pct(r.contacted_share):>6}".rjust(col_w) + "  "
                + f"{r.walks.held_out:>{count_w},} {_pct(r.held_out_share):>6}".rjust(col_w))

    lines = [head + "; shares of each group's entries",
             f"{indent + 'step':<{label_w}}  {'kind':<{kind_w}}  {'contacted':>{col_w}}  {'held out':>{col_w}}"
             "  send outcomes"]
    exits_shown = False
    for r in rows:
        if r.kind is RowKind.EXIT and not exits_shown:
            lines.append(f"{indent}exits")
            exits_shown = True
        if r.kind is RowKind.INSIDE and not exits_shown:
            lines.append(f"{indent}exits: none")
        prefix = f"{label_of(r):<{label_w}}  {r.step_kind:<{kind_w}}  {cells(r)}"
        lines += _with_outcomes(prefix, [f"{k} {n:,}" for k, n in r.outcomes.items()], indent)
    refused = not_entered_text(funnel)
    if refused:
        lines.append(f"{indent}not entered (entry events): {refused}")
    return lines


def _with_outcomes(prefix: str, parts: list[str], indent: str) -> list[str]:
    """`prefix` and the outcomes after it, wrapped at `WIDTH` under their first one."""
    if not parts:
        return [prefix.rstrip()]
    if WIDTH - len(prefix) - 2 < 24:   # too little room beside the columns: the outcomes go below
        return [prefix.rstrip()] + pack(parts, indent * 3, indent * 3)
    return pack(parts, prefix + "  ", " " * (len(prefix) + 2))


def pack(parts: list[str], first: str, then: str, width: int = WIDTH) -> list[str]:
    """`parts` joined by ", " after `first`, a new line (starting with `then`) wherever the next
    would pass `width` (the comma ending a line included); a part is never cut."""
    lines: list[str] = []
    current = first
    for i, part in enumerate(parts):
        if i and len(current) + 2 + len(part) >= width:
            lines.append(current + ",")
            current = then + part
        else:
            current += (", " if i else "") + part
    lines.append(current)
    return lines


__all__ = ["Row", "RowKind", "StepShape", "funnel_lines", "funnel_rows", "journey_shapes", "not_entered_text",
           "outcomes_text", "pack"]
