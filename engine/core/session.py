"""The one driver of the core: compiled rules, a mapping of customer states, a deadline index
and the per-event isolation, moved forward by events (`apply`) and by the clock (`tick`,
`advance`).

The backtest (`engine.offline.backtest.Replay`), the live partition worker
(`engine.operators.partition.PartitionWorker`) and `triggers explain` all drive a `Session`,
so the order "deadlines due before an event, the event, the deadlines the clock made due"
and the re-indexing of deadlines are written once and cannot drift between them.

Event time under disorder (SPEC §6), one definition for all three:
- The clock is the newest event time seen (live, also the wall clock when a partition is idle
  and caught up: `tick`). The *frontier* is the clock minus the rules' `time: {lateness: D}`,
  and never moves back.
- An event is held until the frontier reaches it, then applied; held events are applied in
  (time, event id) order, so that even events of the same instant are applied in one order
  whatever their arrival (a file sorted by time and id replays the same with D = 0). Before
  each applied event, every customer's deadlines due strictly before it fire, one instant at a
  time in (due, customer) order; deadlines due before the frontier fire when it passes them
  (`fired_at` is still the deadline).
- So if no event arrives more than D behind the newest one before it, the events are applied
  in the time-sorted order and every deadline fires between the same events as in the sorted
  stream: the triggers are the sorted stream's, whatever the batching (this works event by
  event, not batch by batch) and whatever the partitioning (customers are independent).
- An event that arrives behind the frontier is *late*: counted (`late`) and applied at once,
  where it can still change aggregates and later decisions, but not a deadline that already
  fired, nor a wait armed by a newer cause (`engine.rules.kinds`).
With D = 0 nothing is held: events are applied as they arrive.

A *ceiling* (`cap`, live only, set by the partition worker) holds events and deadlines after it
back even once the frontier passed them: the population's best hour (SPEC §3b) on a day needs
the responses of every partition up to two days before, so no partition gets more than a day
ahead of the slowest one's committed frontier (`engine.operators.population`). Held back this
way, events are still applied in the sorted order, only later; the clock a partition commits
(`applied_through`) is what it applied, so other partitions never count on what it holds.

The states mapping is the caller's (the backtest's in-memory store, the live worker's cache):
the session reads and writes it, the caller loads into it (`loaded`) and evicts from it
(`forget`). Loading from a store, commits and offsets stay with the caller; for exactly-once
across restarts the caller stores `frontier`, `newest` and `replay_from` with its offsets and
re-reads from `replay_from`, re-applying only events after the frontier (they were held).
Dead letters of events and deadlines the core refused collect in `rejected` (the state is as
before them, `engine.core.isolation`), for the caller to take with `take_rejected`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence

from engine.actions.trigger import Trigger
from engine.core.evaluate import Evaluator
from engine.core.isolation import IsolatedEvaluator
from engine.core.observe import Observer
from engine.core.schedule import DeadlineIndex
from engine.events.decode import DeadLetter
from engine.events.model import Event
from engine.policy.timing import Population
from engine.rules.compiler import CompiledRules
from engine.state.customer import CustomerState, encode_state

BEGINNING = -(2**62)     # the frontier and clock before any event
MAX_HELD = 1_000_000     # events held for ordering at most; past it the oldest are applied early

_TS, _ID, _SEQ, _EVENT, _OFFSET, _DONE, _LATE = range(7)   # a held entry: [ts, event id, seq, event, offset, applied, late]


class Session:
    """Not thread-safe: one per worker (a backtest, a live partition, an explanation)."""

    __slots__ = ("evaluator", "isolated", "states", "deadlines", "until", "stopped", "newest", "frontier",
                 "lateness", "held", "_arrivals", "_seq", "late", "early", "max_held", "fired", "rejected",
                 "observer", "population", "cap")

    def __init__(self, rules: CompiledRules, where: str, states: dict[str, CustomerState] | None = None, *,
                 until: int | None = None, observer: Observer | None = None, max_held: int = MAX_HELD,
                 population: Population | None = None) -> None:
        """`where` names the input in dead letters; `until`: an event after it stops the session
        (`stopped`), as a backtest's end of period; `observer`: told what the evaluator and the
        policy do (explain), None on the hot path; `max_held`: the most events held for
        ordering (past it the oldest are applied early, counted in `early`); `population`: the
        responses of all customers (live: shared through the store), kept across reloads."""
        self.observer = observer
        self.population = population if population is not None else Population()
        self.cap: int | None = None     # live: events and deadlines after it wait (see above)
        # every apply path below fires what is due before an event first
        self.evaluator = Evaluator(rules, observer, self.population, due_fired_before=True)
        self.isolated = IsolatedEvaluator(self.evaluator, where)
        self.states: dict[str, CustomerState] = states if states is not None else {}
        self.deadlines = DeadlineIndex()
        for cid, state in self.states.items():   # states handed in: their deadlines fire before their events
            self.deadlines.update(cid, self.evaluator.next_due(state))
        self.until = until
        self.stopped = False            # an event passed `until`: nothing after it is applied
        self.newest = BEGINNING         # the newest event time seen (or wall clock ticked), epoch ms
        self.frontier = BEGINNING       # events at or before it are applied; deadlines before it fired
        self.lateness = rules.lateness
        self.held: list[list] = []      # heap of [ts, event id, seq, event, offset, applied]
        self._arrivals: deque[list] = deque()   # the same entries in arrival order (for `replay_from`)
        self._seq = 0
        self.late = 0                   # events that arrived behind the frontier
        self.early = 0                  # held events applied early because `max_held` was reached
        self.max_held = max_held
        self.fired: list[str] = []      # customers whose deadlines fired (the live worker's dirty set)
        self.rejected: list[DeadLetter] = []

    @property
    def rules(self) -> CompiledRules:
        return self.evaluator.rules

    @property
    def clock(self) -> int:
        """The newest event time seen (0 before any)."""
        return self.newest if self.newest != BEGINNING else 0

    # -- events and the clock -----------------------------------------------------------------

    def apply(self, events: Iterable[Event], out: list[Trigger], offsets: Sequence[int] | None = None) -> int:
        """Take events in arrival order; the triggers of those applied (and of deadlines passed)
        go to `out`. `offsets` (live): each event's source offset, for `replay_from`.

        Returns how many events the core refused (dead-lettered into `rejected`). Stops at the
        first event applied after `until`, which sets `stopped`."""
        if self.lateness == 0 and not self.held and self.cap is None:
            refused = self._apply_in_arrival_order(events, out)
        else:
            refused = self._apply_held(events, out, offsets)
        limit = self.limit
        if not self.stopped:
            due = self.deadlines.next_due()
            if due is not None and due < limit:
                self._fire_in_order(limit - 1, out, None)
        return refused

    @property
    def limit(self) -> int:
        """What may be applied and fired: the frontier, or the ceiling before it."""
        cap = self.cap
        return self.frontier if cap is None or cap >= self.frontier else cap

    @property
    def applied_through(self) -> int:
        """The clock to commit: events at or before it are applied (the frontier, unless events
        before it wait for the ceiling)."""
        held = self.held
        if held and held[0][_TS] <= self.frontier:
            return held[0][_TS] - 1
        return self.frontier

    def set_cap(self, cap: int, out: list[Trigger]) -> None:
        """Raise the ceiling (live): what it held back and the frontier passed is applied and fired."""
        if self.cap is not None and cap <= self.cap:
            return
        self.cap = cap
        if self.held:
            self._release(out)
        self.catch_up(out)

    def _apply_in_arrival_order(self, events: Iterable[Event], out: list[Trigger]) -> int:
        """D = 0: every event is applied as it arrives (the frontier is the newest time)."""
        deadlines = self.deadlines
        until = self.until
        newest = self.newest
        refused = 0
        one = self._apply_one
        for ev in events:
            ts = ev.ts
            late = ts < newest
            if late:
                self.late += 1
            else:
                newest = ts
            if until is not None and ts > until:
                self.stopped = True
                break
            due = deadlines.next_due()
            if due is not None and due < ts:
                self.frontier = self.newest = newest
                self._fire_in_order(ts - 1, out, None)
            if late:
                refused += self._apply_late(ev, out)
            else:
                refused += one(ev, out)
        self.frontier = self.newest = newest
        return refused

    def _apply_late(self, ev: Event, out: list[Trigger]) -> int:
        evaluator = self.evaluator
        evaluator.late_event = True
        try:
            return self._apply_one(ev, out)
        finally:
            evaluator.late_event = False

    def _apply_held(self, events: Iterable[Event], out: list[Trigger], offsets: Sequence[int] | None) -> int:
        held, arrivals, lateness = self.held, self._arrivals, self.lateness
        refused = 0
        for i, ev in enumerate(events):
            if self.stopped:
                break
            ts = ev.ts
            late = ts < self.frontier
            if late:
                self.late += 1   # behind what was applied already: at once (it sorts first anyway)
            entry = [ts, ev.event_id, self._seq, ev, offsets[i] if offsets is not None else -1, False, late]
            self._seq += 1
            heapq.heappush(held, entry)
            arrivals.append(entry)
            if ts > self.newest:
                self.newest = ts
                if ts - lateness > self.frontier:
                    self.frontier = ts - lateness
            if len(held) > self.max_held:
                self._apply_early()
            refused += self._release(out)
        return refused

    def _release(self, out: list[Trigger], everything: bool = False) -> int:
        """Apply held events at or before the frontier and the ceiling (`everything`: all of
        them), in order."""
        held, frontier, until = self.held, self.limit, self.until
        refused = 0
        while held and (everything or held[0][_TS] <= frontier):
            entry = heapq.heappop(held)
            entry[_DONE] = True
            ts = entry[_TS]
            if until is not None and ts > until:
                self.stopped = True
                held.clear()
                self._arrivals.clear()
                break
            if ts > self.newest - self.lateness and not everything:
                self.early += 1   # the frontier was moved by `max_held`, not by the clock
            due = self.deadlines.next_due()
            if due is not None and due < ts:
                self._fire_in_order(ts - 1, out, None)
            refused += self._apply_late(entry[_EVENT], out) if entry[_LATE] else self._apply_one(entry[_EVENT], out)
        arrivals = self._arrivals
        while arrivals and arrivals[0][_DONE]:
            arrivals.popleft()
        return refused

    def _apply_early(self) -> None:
        """Too many held: the frontier moves to the oldest held time, so those are applied next."""
        oldest = self.held[0][_TS]
        if oldest > self.frontier:
            self.frontier = oldest
        if self.cap is not None and oldest > self.cap:
            self.cap = oldest   # the ceiling gives way too (counted in `early` as well)

    def _apply_one(self, ev: Event, out: list[Trigger]) -> int:
        """One event through the isolated evaluator; 1 if the core refused it."""
        evaluator = self.evaluator
        cid = ev.customer_id
        state, dead = self.isolated.on_event(self.states.get(cid), ev, out)
        if dead is not None:
            self.rejected.append(dead)
            if state is None:   # a new customer's first event: nothing to index
                evaluator.earlier_deadline = False
                return 1
            evaluator.earlier_deadline = True   # the restored state's deadlines
        self.states[cid] = state   # type: ignore[assignment]  # no dead letter, or one with the state restored: a state
        if evaluator.earlier_deadline:
            evaluator.earlier_deadline = False
            self.deadlines.update(cid, evaluator.next_due(state))   # type: ignore[arg-type]
        return 1 if dead is not None else 0

    def tick(self, now: int, out: list[Trigger]) -> None:
        """The clock reached `now` without an event (live: the wall clock of an idle, caught-up
        partition): held events and deadlines the new frontier passed are applied and fired."""
        if now > self.newest:
            self.newest = now
        if now - self.lateness > self.frontier:
            self.frontier = now - self.lateness
        if self.held:
            self._release(out)
        self.catch_up(out)

    def catch_up(self, out: list[Trigger]) -> None:
        """Fire the deadlines before the frontier of customers loaded since (live: customers
        found due in the store's deadline index)."""
        limit = self.limit
        due = self.deadlines.next_due()
        if due is not None and due < limit:
            self._fire_in_order(limit - 1, out, None)

    def advance(self, now: int | None, out: list[Trigger], recurring_until: int | None = None) -> None:
        """The end of the input: every held event is applied (there is nothing left to wait for),
        then every deadline due at or before `now` fires (None: all of them, a drained
        backtest). `recurring_until` keeps recurring dates after it from firing (a backtest's
        end of period)."""
        if self.held and not self.stopped:
            self._release(out, everything=True)
        if now is not None and now > self.frontier:
            self.frontier = now
        self._fire_in_order(now, out, recurring_until)

    def pending(self) -> dict[str, int]:
        """One-shot deadlines still pending, per rule in the rules' order (after `advance(end)`:
        those due after the end, which a backtest counts instead of firing)."""
        counts = {rule.id: 0 for rule in self.rules.rules}
        pending = self.evaluator.pending
        for state in self.states.values():
            for rule_id in pending(state):
                counts[rule_id] += 1
        return {rule_id: n for rule_id, n in counts.items() if n}

    @property
    def replay_from(self) -> int | None:
        """The smallest source offset of a held event (None: none held): where a restarted
        worker must read from, since held events are in no committed state."""
        arrivals = self._arrivals
        while arrivals and arrivals[0][_DONE]:
            arrivals.popleft()
        return arrivals[0][_OFFSET] if arrivals else None

    def restore_clock(self, frontier: int, newest: int) -> None:
        """A restarted live worker's clock, as committed: events at or before `frontier` were
        applied; a re-read event after it was held and is taken again."""
        self.frontier = max(self.frontier, frontier)
        self.newest = max(self.newest, newest)

    def held_customers(self) -> set[str]:
        """Customers with a held event (a cache must keep their states until it is applied)."""
        return {entry[_EVENT].customer_id for entry in self.held}

    def held_offsets(self) -> dict[str, int]:
        """Customer -> the smallest source offset of its held events (live: a state holds none of them)."""
        low: dict[str, int] = {}
        for entry in self.held:
            cid, offset = entry[_EVENT].customer_id, entry[_OFFSET]
            if offset < low.get(cid, offset + 1):
                low[cid] = offset
        return low

    def take_fired(self) -> list[str]:
        fired, self.fired = self.fired, []
        return fired

    def _fire_in_order(self, now: int | None, out: list[Trigger], recurring_until: int | None) -> None:
        """Deadlines due by `now` (None: all), one instant at a time in (due, customer) order."""
        states, on_time, pop = self.states, self.isolated.on_time, self.deadlines.pop
        update, next_due = self.deadlines.update, self.evaluator.next_due
        fired = self.fired
        while (entry := pop(now)) is not None:
            due, cid = entry
            state = states.get(cid)
            if state is None:   # evicted meanwhile (live): the store's index still has it
                continue
            state, dead = on_time(state, cid, due, out, recurring_until)
            if dead is not None:
                states[cid] = state
                self.rejected.append(dead)
            fired.append(cid)
            update(cid, next_due(state, recurring_until))

    # -- the caller's store: loads, checkpoints, evictions, reloads -------------------------------

    def loaded(self, customer_id: str, state: CustomerState, image: bytes) -> None:
        """A state the caller read from its store, with the bytes it was stored as (its image).
        Aggregate values another definition of their name left are dropped first (`conform`);
        the image is then the state as these rules read it, where a rebuild starts."""
        if self.evaluator.rules.conform(state, customer_id):
            image = encode_state(state)
        self.states[customer_id] = state
        self.isolated.loaded(customer_id, image)
        self.deadlines.update(customer_id, self.evaluator.next_due(state))

    def checkpoint(self, customer_ids: Iterable[str]) -> dict[str, bytes]:
        """Encode these customers' states for storing (`checkpoint_changed`: every customer changed since the last
        checkpoint). A state that does not encode is replaced by the state without the event
        that made it so, that event dead-lettered into `rejected`."""
        images, replaced, dead = self.isolated.checkpoint(customer_ids, self.states.get)
        self._replace(replaced)
        self.rejected += dead
        return images

    def checkpoint_changed(self) -> dict[str, bytes]:
        """`checkpoint` of every customer changed since the last one (a backtest's batch)."""
        return self.checkpoint(self.isolated.journal)

    def forget(self, customer_id: str) -> None:
        """The caller evicted this (committed) customer: drop its state, image and index entry."""
        self.states.pop(customer_id, None)
        self.isolated.forget(customer_id)
        self.deadlines.forget(customer_id)

    def use(self, rules: CompiledRules) -> list[str]:
        """Evaluate with other rules from now on (a reload); the journal is checkpointed first.
        Deadlines that follow from the rules (inactivity) may have moved: every state here is
        re-indexed. Returns the customers held here that the caller must write: those the journal
        it checkpoints held (changed since the last checkpoint: a caller that takes its dirty
        customers from the journal would no longer see them), those whose earliest deadline moved
        (a store's deadline index follows a state's write: unwritten, an evicted or restarted
        customer's new deadline would never fire), and those whose redefined aggregate's value
        was dropped."""
        before = self.evaluator.rules
        old_due = self.evaluator.next_due
        dues = {cid: old_due(state) for cid, state in self.states.items()}
        self.evaluator = Evaluator(rules, self.observer, self.population, due_fired_before=True)
        self.lateness = rules.lateness
        if self.newest - self.lateness > self.frontier:   # a shorter lateness: the frontier moves on
            self.frontier = self.newest - self.lateness
        changed: list[str] = list(self.isolated.journal)
        replaced, dead = self.isolated.use(self.evaluator, self.states.get)
        self._replace(replaced)
        self.rejected += dead
        if rules.reshapes(before):   # values the old definitions left, in shapes the new cannot read
            conform, image = rules.conform, self.isolated.loaded
            for cid, state in self.states.items():
                if conform(state, cid):
                    image(cid, encode_state(state))   # checkpointed above: the journal starts again here
                    changed.append(cid)
        update, next_due = self.deadlines.update, self.evaluator.next_due
        for cid, state in self.states.items():
            due = next_due(state)
            update(cid, due)
            if due != dues.get(cid):
                changed.append(cid)
        return changed

    def take_rejected(self) -> list[DeadLetter]:
        rejected, self.rejected = self.rejected, []
        return rejected

    def next_due(self, customer_id: str) -> int | None:
        """The customer's earliest deadline (what a store's deadline index records)."""
        return self.evaluator.next_due(self.states[customer_id])

    def _replace(self, replaced: dict[str, CustomerState | None]) -> None:
        for cid, state in replaced.items():
            if state is None:
                self.states.pop(cid, None)
                self.deadlines.forget(cid)
            else:
                self.states[cid] = state
                self.deadlines.update(cid, self.evaluator.next_due(state))
