"""Backtest: replay an event file through the rules in event time, with the in-memory store.

Deterministic by construction: the clock is the events' own time, deadlines fire in
(due, customer) order, and nothing reads the wall clock, so the same file and rules always
give the same triggers with the same ids.

The clock stops at the end of data: the last event's time, or `until` when given (SPEC §5).
Deadlines due at or before it fire; those due later are *pending* and counted per rule, not
fired: a backtest shows what happened in the replayed period, and a win-back fired after it
could never have been answered inside it. `drain` fires every pending one-shot deadline
(absence, delay, inactivity, series steps, journey steps, deferred sends) at the end, as a live
engine would later, and those they arm in turn, up to the rules' `drain_span` after the end (a
journey that loops through a wait would never drain: its laps after that stay pending, counted
as `undrained`); recurring dates never fire after the end.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import takewhile
from pathlib import Path

import msgspec

from engine.actions.trigger import Trigger
from engine.core.calendar import parse_date
from engine.core.evaluate import Evaluator
from engine.core.funnel import Funnel
from engine.core.isolation import JOURNAL_LIMIT
from engine.core.session import Session
from engine.events.ahead import decode_jsonl_ahead
from engine.events.decode import JSONL_BATCH, DeadLetter
from engine.events.model import Event
from engine.offline.funnel_table import StepShape, journey_shapes
from engine.offline.progress import Progress
from engine.policy.attribution import RuleOutcome
from engine.policy.customers import CustomerCollector, CustomerOutcome
from engine.policy.timing import TimingEvaluation, TimingScore
from engine.rules.compiler import CompiledRules
from engine.state.memory import InMemoryStore

BATCH = JSONL_BATCH   # lines decoded and triggers written per step


class BacktestSummary(msgspec.Struct):
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    late: int = 0                           # arrived more than the rules' lateness behind the newest event
    lateness: int = 0                       # the rules' time.lateness, ms
    late_causes: int = 0                    # late events not armed: a newer cause's wait was pending
    applied_early: int = 0                  # held events applied before the frontier reached them (too many held)
    triggers: int = 0
    timers_dropped: int = 0
    customers: int = 0
    elapsed_s: float = 0.0
    per_rule: dict[str, RuleOutcome] = {}   # rule id -> decisions and responses (per trigger)
    ended_at: int = 0                       # the end of data: the last event's time or `until`, epoch ms
    pending: dict[str, int] = {}            # rule id -> one-shot deadlines due after `ended_at`
    pending_total: int = 0
    drained: bool = False                   # the pending deadlines were fired at the end (--drain)
    undrained: int = 0                      # drained: deadlines still pending past the drain's horizon (loops)
    timing: dict[str, TimingScore] = {}     # rule id -> its best-hour and best-channel picks scored (SPEC §3b)
    by_customer: dict[str, CustomerOutcome] = {}   # rule id -> customers by group (the unit of lift)
    program: CustomerOutcome | None = None  # global control vs contacted over its rules; None: no global control
    program_rules: list[str] = []           # the rules that use the global control group
    event_types: dict[str, int] = {}        # events replayed per type: why a rule never fired
    rule_events: dict[str, list[str]] = {}  # rule id -> the event types that run it ([]: run by the clock)
    funnels: dict[str, Funnel] = {}         # journey id -> its funnel (engine.core.funnel), every journey of the rules
    journey_steps: dict[str, list[StepShape]] = {}   # journey id -> its steps' kinds and targets, for the funnel's rows
    unusable_dates: dict[str, int] = {}     # profile attribute of a recurring rule -> customers whose value is no date

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def pending_note(count: str, when: str, drained: bool) -> str:
    """The line every summary ends with when deadlines were pending at the end of data; `count`
    says how many ("7 deadlines", "3 deadlines before, 5 after"), `when` the end."""
    what = "were fired after it (--drain)" if drained else "were not fired; --drain fires them"
    return f"{count} pending at the end of data ({when}) {what}"


class Replay:
    """The event-time replay; `feed` batches of events in file order, then `finish`.

    A `Session` in event-time order over the in-memory store's states. Events and deadlines
    the core cannot handle (engine errors) go to `dead_letter`, with the customer's state as
    it was before them (`engine.core.isolation`), as in the live engine.
    """

    def __init__(self, rules: CompiledRules, emit: Callable[[list[Trigger]], None], until: int | None = None,
                 store: InMemoryStore | None = None,
                 dead_letter: Callable[[list[DeadLetter]], None] | None = None, where: str = "backtest",
                 drain: bool = False) -> None:
        """`until`: the end of the replayed period (events after it are not replayed); `drain`:
        fire the deadlines pending at the end instead of only counting them."""
        self.store = store if store is not None else InMemoryStore()
        self.session = Session(rules, where, self.store.states, until=until)
        self.emit = emit
        self.dead_letter = dead_letter
        self.until = until
        self.drain = drain
        self.ended_at = 0                      # set by `finish`
        self.pending: dict[str, int] = {}      # set by `finish`: rule id -> deadlines due after the end
        self.undrained = 0                     # set by a draining `finish`: deadlines past its horizon
        self.customers = CustomerCollector(rules)   # per-customer outcomes for lift (engine.policy.customers)
        self.event_types: Counter[str] = Counter()   # per type, the events replayed
        self.triggers = 0
        self.dead_letters = 0                  # refused by the core (the decoder's are counted by the caller)
        self._checkpointed_at = 0              # the event count at the last checkpoint of the journal
        # SPEC §3b: how often each chosen hour and channel held the customer's next response
        self.timing = self.evaluator.policy.timing.evaluation = TimingEvaluation()

    @property
    def evaluator(self) -> Evaluator:
        return self.session.evaluator

    @property
    def stopped(self) -> bool:
        """An event passed `until`: the rest of the file is not replayed."""
        return self.session.stopped

    def feed_file(self, path: str | Path, progress: Progress | None = None) -> int:
        """Feed a JSONL event file (`-`: stdin) batch by batch, decoded ahead where that pays
        (engine.events.ahead), until an event passes `until`: the one loop of the backtest, the
        backfill and explain's population. The file's undecodable lines go to `dead_letter` (when
        given); their number is returned, since `dead_letters` counts only the core's refusals.
        `progress` is told the bytes and events done after each batch."""
        dead = 0
        done_bytes = 0
        for batch in decode_jsonl_ahead(Path(path), BATCH):
            if batch.dead:
                dead += len(batch.dead)
                if self.dead_letter is not None:
                    self.dead_letter(batch.dead)
            self.feed(batch.events)
            if progress is not None:
                done_bytes += batch.size
                progress.update(done_bytes, self.evaluator.counters.events)
            if self.stopped:
                break
        return dead

    def feed(self, events: Iterable[Event]) -> None:
        events = events if isinstance(events, list) else list(events)
        self.customers.events(events)
        self._count_types(events)
        out: list[Trigger] = []
        self.session.apply(events, out)
        if self.evaluator.counters.events - self._checkpointed_at >= JOURNAL_LIMIT:
            self._checkpoint()
        self._write(out)

    def _count_types(self, events: list[Event]) -> None:
        """Per type, the events replayed. With `until`: in arrival order up to the first after it
        (which stops the session); with a lateness the session orders events by time first, so
        every event at or before `until` is replayed, whatever came before it in the file."""
        until = self.until
        if until is None:
            self.event_types.update(e.type for e in events)
        elif self.session.lateness:
            self.event_types.update(e.type for e in events if e.ts <= until)
        else:
            self.event_types.update(e.type for e in takewhile(lambda e: e.ts <= until, events))

    def _checkpoint(self) -> None:
        """Every state journaled since the last checkpoint is encoded: the storability check a
        live commit makes, and what bounds the journal's memory (engine.core.isolation)."""
        self._checkpointed_at = self.evaluator.counters.events
        self.session.checkpoint_changed()
        # As the live worker does after each commit: the states are many small containers without
        # reference cycles, which every full collection of the cyclic GC would walk again (a tenth
        # of a backtest's time on 10,000 customers); frozen, they are still freed by refcount.
        gc.freeze()

    def finish(self) -> None:
        """End of data: held events are applied and the deadlines due by the end fire; those
        due later are counted in `pending` (and fired too with `drain`)."""
        end = self.until if self.until is not None else self.session.clock
        self.ended_at = end
        out: list[Trigger] = []
        self.session.advance(end, out, recurring_until=end)
        self.pending = self.session.pending()
        if self.drain:   # everything after `end`, in (due, customer) order, up to the drain's horizon
            self.session.advance(end + self.evaluator.rules.drain_span, out, recurring_until=end)
            self.undrained = sum(self.session.pending().values())
        self._checkpoint()
        self._write(out)
        # what the checkpoints froze goes back to the collector: a process that runs several
        # replays (tests, diff, a library user) must not keep cyclic garbage of theirs for ever
        gc.unfreeze()

    def _write(self, out: list[Trigger]) -> None:
        rejected = self.session.take_rejected()
        if rejected:
            if self.dead_letter is not None:
                self.dead_letter(rejected)
            self.dead_letters += len(rejected)
        if not out:
            return
        self.triggers += len(out)
        self.customers.triggers(out)
        self.emit(out)

    def summary(self, dead_letters: int, elapsed_s: float) -> BacktestSummary:
        c = self.evaluator.counters
        # the end of data, not a drained clock: a window that runs past the last event is not observed
        by_customer, program = self.customers.outcomes(self.ended_at)
        return BacktestSummary(
            events=c.events, dead_letters=dead_letters + self.dead_letters, duplicates=c.duplicates, late=self.session.late,
            lateness=self.session.lateness, late_causes=c.late_causes, applied_early=self.session.early,
            triggers=self.triggers, timers_dropped=c.timers_dropped, customers=len(self.store),
            elapsed_s=elapsed_s, per_rule=dict(self.evaluator.outcomes), ended_at=self.ended_at,
            pending=dict(self.pending), pending_total=sum(self.pending.values()), drained=self.drain,
            undrained=self.undrained,
            by_customer=by_customer, program=program, program_rules=sorted(self.customers.global_rules),
            event_types=dict(sorted(self.event_types.items())),
            rule_events={r.id: list(r.rule.on) if r.on_events else [] for r in self.session.rules.rules},
            funnels=self.funnels(), journey_steps=journey_shapes(self.session.rules),
            timing=dict(self.timing.scores), unusable_dates=self.unusable_dates(),
        )

    def unusable_dates(self) -> dict[str, int]:
        """Per profile attribute a recurring rule reads, the customers who have one that is no date
        (README "Dates of recurring rules"): their rule never fires, which a summary must say.
        Counted once at the end, over the final states, not per event."""
        attrs = sorted({r.date_attr for r in self.session.rules.recurring})
        counts = {}
        for attr in attrs:
            n = sum(1 for st in self.session.states.values()
                    if st.profile.get(attr) is not None and parse_date(st.profile.get(attr)) is None)
            if n:
                counts[attr] = n
        return counts

    def funnels(self) -> dict[str, Funnel]:
        """Every journey's funnel over the run, drained moves included, in file order; a journey
        nobody entered has an empty one (it shows as such rather than missing)."""
        counted = self.evaluator.funnels
        out = {j.id: counted.get(j.id) or Funnel(j.id, [s.id for s in j.steps]) for j in self.session.rules.journeys}
        out.update((k, f) for k, f in counted.items() if k not in out)
        return out


def backtest_file(
    rules: CompiledRules,
    events_path: str | Path,
    emit: Callable[[list[Trigger]], None],
    dead_letter: Callable[[list[DeadLetter]], None],
    until: int | None = None,
    progress: bool = True,
    drain: bool = False,
) -> BacktestSummary:
    """Replay a JSONL event file; triggers go to `emit`, undecodable lines to `dead_letter`.
    `until` and `drain` as in `Replay`."""
    start = time.perf_counter()
    replay = Replay(rules, emit, until, dead_letter=dead_letter, where=str(events_path), drain=drain)
    path = Path(events_path)
    bar = Progress(path.stat().st_size if progress and str(path) != "-" else 0, "backtest") if progress else None
    dead = replay.feed_file(path, bar)
    replay.finish()
    if bar is not None:
        bar.done()
    return replay.summary(dead, time.perf_counter() - start)
