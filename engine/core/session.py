"""The one driver of the core: compiled rules, a mapping of customer states, a deadline index
and the per-event isolation, moved forward by events (`apply`) and by the clock (`advance`).

The backtest (`engine.offline.backtest.Replay`), the live partition worker
(`engine.operators.partition.PartitionWorker`) and `triggers explain` all drive a `Session`,
so the order "deadlines due before an event, the event, the deadlines the clock made due"
and the re-indexing of deadlines are written once and cannot drift between them.

Two ways the clock moves, chosen at construction:
- `ordered` (backtest, explain): event time is one clock for all customers. Before each event,
  every customer's deadlines due strictly before it fire, one instant at a time in
  (due, customer) order; `advance` fires the same way. Deterministic by construction.
- not ordered (live): a batch is one tick. A customer's own overdue deadlines fire with its
  event (the evaluator does that); `advance(now)` then fires every customer due by `now`.

The states mapping is the caller's (the backtest's in-memory store, the live worker's cache):
the session reads and writes it, the caller loads into it (`loaded`) and evicts from it
(`forget`). Loading from a store, commits and offsets stay with the caller. Dead letters of
events and deadlines the core refused collect in `rejected` (the state is as before them,
`engine.core.isolation`), for the caller to take with `take_rejected`.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.actions.trigger import Trigger
from engine.core.evaluate import Evaluator
from engine.core.isolation import IsolatedEvaluator
from engine.core.observe import Observer
from engine.core.schedule import DeadlineIndex
from engine.events.decode import DeadLetter
from engine.events.model import Event
from engine.rules.compiler import CompiledRules
from engine.state.customer import CustomerState


class Session:
    """Not thread-safe: one per worker (a backtest, a live partition, an explanation)."""

    __slots__ = ("evaluator", "isolated", "states", "deadlines", "ordered", "until", "stopped", "clock",
                 "rejected", "observer")

    def __init__(self, rules: CompiledRules, where: str, states: dict[str, CustomerState] | None = None, *,
                 ordered: bool = True, until: int | None = None, observer: Observer | None = None) -> None:
        """`where` names the input in dead letters; `until` (ordered only): an event after it stops
        the session (`stopped`), as a backtest's end of period; `observer`: told what the
        evaluator and the policy do (explain), None on the hot path."""
        self.observer = observer
        self.evaluator = Evaluator(rules, observer)
        self.isolated = IsolatedEvaluator(self.evaluator, where)
        self.states: dict[str, CustomerState] = states if states is not None else {}
        self.deadlines = DeadlineIndex()
        self.ordered = ordered
        self.until = until
        self.stopped = False            # an event passed `until`: nothing after it is applied
        self.clock = 0                  # the latest event time applied, epoch ms
        self.rejected: list[DeadLetter] = []

    @property
    def rules(self) -> CompiledRules:
        return self.evaluator.rules

    # -- events and the clock -----------------------------------------------------------------

    def apply(self, events: Iterable[Event], out: list[Trigger]) -> int:
        """Apply events in order; their triggers (and those of deadlines they passed) go to `out`.

        Returns how many events the core refused (dead-lettered into `rejected`). Stops at the
        first event after `until`, which sets `stopped`."""
        states, deadlines, rejected = self.states, self.deadlines, self.rejected
        evaluator = self.evaluator
        on_event, next_due, update = self.isolated.on_event, evaluator.next_due, deadlines.update
        until = self.until
        ordered = self.ordered
        clock = self.clock
        refused = 0
        for ev in events:
            ts = ev.ts
            if ordered:
                if until is not None and ts > until:
                    self.stopped = True
                    break
                due = deadlines.next_due()
                if due is not None and due < ts:
                    self.clock = clock
                    self._fire_in_order(ts - 1, out, None)
            if ts > clock:
                clock = ts
            cid = ev.customer_id
            state, dead = on_event(states.get(cid), ev, out)
            if dead is not None:
                rejected.append(dead)
                refused += 1
                if state is None:   # a new customer's first event: nothing to index
                    evaluator.earlier_deadline = False
                    continue
                evaluator.earlier_deadline = True   # the restored state's deadlines
            states[cid] = state   # type: ignore[assignment]  # no dead letter, or one with the state restored: a state
            if evaluator.earlier_deadline:
                evaluator.earlier_deadline = False
                update(cid, next_due(state))   # type: ignore[arg-type]
        self.clock = clock
        return refused

    def advance(self, now: int | None, out: list[Trigger], recurring_until: int | None = None,
                also: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        """Fire every deadline due at or before `now` (None: all of them, the end of a backtest).

        `recurring_until` keeps recurring dates after it from firing (a backtest's end of
        period); `also`: more customers to look at, due by a deadline index outside this session
        (live: Redis's). Not ordered, returns the customers looked at and those of `also` that
        have no state here (to unindex); ordered, ([], []) (they take no `also`)."""
        if self.ordered:
            self._fire_in_order(now, out, recurring_until)
            return [], []
        assert now is not None
        due: list[str] = []
        pop = self.deadlines.pop
        while (entry := pop(now)) is not None:
            due.append(entry[1])
        due += also
        missing: list[str] = []
        fired: list[str] = []
        states, on_time, update, next_due = self.states, self.isolated.on_time, self.deadlines.update, \
            self.evaluator.next_due
        for cid in dict.fromkeys(due):
            state = states.get(cid)
            if state is None:
                missing.append(cid)
                continue
            fired.append(cid)
            state, dead = on_time(state, cid, now, out, recurring_until)
            if dead is not None:
                states[cid] = state
                self.rejected.append(dead)
            update(cid, next_due(state, recurring_until))
        return fired, missing

    def _fire_in_order(self, now: int | None, out: list[Trigger], recurring_until: int | None) -> None:
        """Deadlines due by `now` (None: all), one instant at a time in (due, customer) order."""
        states, on_time, pop = self.states, self.isolated.on_time, self.deadlines.pop
        update, next_due = self.deadlines.update, self.evaluator.next_due
        while (entry := pop(now)) is not None:
            due, cid = entry
            state, dead = on_time(states[cid], cid, due, out, recurring_until)
            if dead is not None:
                states[cid] = state
                self.rejected.append(dead)
            update(cid, next_due(state, recurring_until))

    # -- the caller's store: loads, checkpoints, evictions, reloads -------------------------------

    def loaded(self, customer_id: str, state: CustomerState, image: bytes) -> None:
        """A state the caller read from its store, with the bytes it was stored as (its image)."""
        self.states[customer_id] = state
        self.isolated.loaded(customer_id, image)
        self.deadlines.update(customer_id, self.evaluator.next_due(state))

    def checkpoint(self, customer_ids: Iterable[str]) -> dict[str, bytes]:
        """Encode these customers' states for storing (None: every customer changed since the last
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

    def use(self, rules: CompiledRules) -> None:
        """Evaluate with other rules from now on (a reload); the journal is checkpointed first.
        Deadlines that follow from the rules (inactivity) may have moved: every state here is
        re-indexed."""
        self.evaluator = Evaluator(rules, self.observer)
        replaced, dead = self.isolated.use(self.evaluator, self.states.get)
        self._replace(replaced)
        self.rejected += dead
        update, next_due = self.deadlines.update, self.evaluator.next_due
        for cid, state in self.states.items():
            update(cid, next_due(state))

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
