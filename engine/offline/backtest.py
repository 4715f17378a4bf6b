"""Backtest: replay an event file through the rules in event time, with the in-memory store.

Deterministic by construction: the clock is the events' own time, deadlines fire in
(due, customer) order, and nothing reads the wall clock, so the same file and rules always
give the same triggers with the same ids. At the end of the file the clock jumps past every
pending one-shot deadline (absence, delay, inactivity, series steps), so they fire;
recurring dates fire only up to the end of the replayed period, or `until` when given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from engine.policy.attribution import RuleOutcome
from engine.events.decode import DeadLetter, EventDecoder, read_jsonl
from engine.core.evaluate import Evaluator
from engine.core.isolation import JOURNAL_LIMIT, IsolatedEvaluator
from engine.events.model import Event
from engine.offline.progress import Progress
from engine.rules.compiler import CompiledRules
from engine.core.schedule import DeadlineIndex
from engine.state.customer import CustomerState
from engine.state.memory import InMemoryStore
from engine.actions.trigger import Trigger

BATCH = 2000    # lines decoded and triggers written per step


class BacktestSummary(msgspec.Struct):
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    late: int = 0
    triggers: int = 0
    timers_dropped: int = 0
    customers: int = 0
    elapsed_s: float = 0.0
    per_rule: dict[str, RuleOutcome] = {}   # rule id -> decisions and responses

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Replay:
    """The event-time replay loop; `feed` batches of events in file order, then `finish`.

    Events and deadlines the core cannot handle (engine errors) go to `dead_letter`, with the
    customer's state as it was before them (`engine.core.isolation`), as in the live engine.
    """

    def __init__(self, rules: CompiledRules, emit: Callable[[list[Trigger]], None], until: int | None = None,
                 store: InMemoryStore | None = None,
                 dead_letter: Callable[[list[DeadLetter]], None] | None = None, where: str = "backtest") -> None:
        self.evaluator = Evaluator(rules)
        self.isolated = IsolatedEvaluator(self.evaluator, where)
        self.store = store if store is not None else InMemoryStore()
        self.emit = emit
        self.dead_letter = dead_letter
        self.until = until
        self._deadlines = DeadlineIndex()
        self._clock = 0
        self.triggers = 0
        self.dead_letters = 0                  # refused by the core (the decoder's are counted by the caller)
        self.rejected: list[DeadLetter] = []   # refused by the core, not yet handed to `dead_letter`
        self._checkpointed_at = 0              # the event count at the last checkpoint of the journal
        self.stopped = False   # set once an event passes `until`

    def feed(self, events: Iterable[Event]) -> None:
        out: list[Trigger] = []
        states = self.store.states
        evaluator = self.evaluator
        on_event = self.isolated.on_event
        deadlines = self._deadlines
        until = self.until
        for ev in events:
            ts = ev.ts
            if until is not None and ts > until:
                self.stopped = True
                break
            next_due = deadlines.next_due()
            if next_due is not None and next_due < ts:
                self._fire_due(ts - 1, out)
            if ts > self._clock:
                self._clock = ts
            cid = ev.customer_id
            state, dead = on_event(states.get(cid), ev, out)
            if state is not None:
                states[cid] = state
            if dead is not None:
                self.rejected.append(dead)
                evaluator.earlier_deadline = True   # the restored state's deadlines
            if evaluator.earlier_deadline:
                evaluator.earlier_deadline = False
                deadlines.update(cid, evaluator.next_due(state) if state is not None else None)
        if evaluator.counters.events - self._checkpointed_at >= JOURNAL_LIMIT:
            self._checkpoint()
        self._write(out)

    def _checkpoint(self) -> None:
        """Every state journaled since the last checkpoint is encoded: the storability check a
        live commit makes, and what bounds the journal's memory (engine.core.isolation)."""
        states = self.store.states
        self._checkpointed_at = self.evaluator.counters.events
        _, replaced, dead = self.isolated.checkpoint(self.isolated.journal, states.get)
        for cid, state in replaced.items():
            if state is None:
                states.pop(cid, None)
                self._deadlines.forget(cid)
            else:
                states[cid] = state
                self._schedule(cid, state)
        self.rejected += dead

    def finish(self) -> None:
        """End of file: jump the clock past pending one-shot deadlines; recurring up to the period's end."""
        horizon = self.until if self.until is not None else self._clock
        out: list[Trigger] = []
        self._fire_due(None, out, recurring_until=horizon)
        self._checkpoint()
        self._write(out)

    def _schedule(self, cid: str, state: CustomerState, recurring_until: int | None = None) -> None:
        self._deadlines.update(cid, self.evaluator.next_due(state, recurring_until))

    def _fire_due(self, now: int | None, out: list[Trigger], recurring_until: int | None = None) -> None:
        """Fire every customer's deadlines due at or before `now` (None: all), in deadline order."""
        states, on_time, pop = self.store.states, self.isolated.on_time, self._deadlines.pop
        while (entry := pop(now)) is not None:
            due, cid = entry
            state, dead = on_time(states[cid], cid, due, out, recurring_until)
            if dead is not None:
                states[cid] = state
                self.rejected.append(dead)
            self._schedule(cid, state, recurring_until)

    def _write(self, out: list[Trigger]) -> None:
        if self.rejected:
            rejected, self.rejected = self.rejected, []
            if self.dead_letter is not None:
                self.dead_letter(rejected)
            self.dead_letters += len(rejected)
        if not out:
            return
        self.triggers += len(out)
        self.emit(out)

    def summary(self, dead_letters: int, elapsed_s: float) -> BacktestSummary:
        c = self.evaluator.counters
        return BacktestSummary(
            events=c.events, dead_letters=dead_letters + self.dead_letters, duplicates=c.duplicates, late=c.late,
            triggers=self.triggers, timers_dropped=c.timers_dropped, customers=len(self.store),
            elapsed_s=elapsed_s, per_rule=dict(self.evaluator.outcomes),
        )


def backtest_file(
    rules: CompiledRules,
    events_path: str | Path,
    emit: Callable[[list[Trigger]], None],
    dead_letter: Callable[[list[DeadLetter]], None],
    until: int | None = None,
    progress: bool = True,
) -> BacktestSummary:
    """Replay a JSONL event file; triggers go to `emit`, undecodable lines to `dead_letter`."""
    start = time.perf_counter()
    decoder = EventDecoder()
    replay = Replay(rules, emit, until, dead_letter=dead_letter, where=str(events_path))
    path = Path(events_path)
    bar = Progress(path.stat().st_size if progress and str(path) != "-" else 0, "backtest") if progress else None
    dead = 0
    done_bytes = 0
    batch: list[tuple[bytes, str]] = []
    for item in read_jsonl(path):
        batch.append(item)
        if len(batch) >= BATCH:
            dead += _step(decoder, replay, batch, dead_letter)
            if bar is not None:
                done_bytes += sum(len(raw) + 1 for raw, _ in batch)
                bar.update(done_bytes, replay.evaluator.counters.events)
            batch = []
            if replay.stopped:
                break
    if batch and not replay.stopped:
        dead += _step(decoder, replay, batch, dead_letter)
    replay.finish()
    if bar is not None:
        bar.done()
    return replay.summary(dead, time.perf_counter() - start)


def _step(decoder: EventDecoder, replay: Replay, batch: list[tuple[bytes, str]],
          dead_letter: Callable[[list[DeadLetter]], None]) -> int:
    events, dead = decoder.decode_batch(batch)
    if dead:
        dead_letter(dead)
    replay.feed(events)
    return len(dead)
