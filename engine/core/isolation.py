"""Per-event isolation (SPEC §6, "bad input never stops the engine"): an event the rules cannot
be applied to, or whose resulting state cannot be stored, becomes a dead letter, and the
customer's state is what it was without that event.

The decoder already refuses what it can see is wrong (engine.events.decode), so what reaches this
layer is an engine bug, never a user's mistake: it is logged loudly, counted and dead-lettered,
and the run goes on.

How "the state before the event" is had without copying every state before every event (an
encode costs 1-5 µs, a fifth of an event's whole cost): each customer has an *image*, its
state encoded at a checkpoint (a live commit, or every `JOURNAL_LIMIT` events in a backtest;
the bytes a live run loads from Redis are one too), and a *journal* of the calls applied to
it since (events, clock ticks). A failing call is undone by decoding the image and replaying
the journal on a scratch evaluator (deterministic: the same calls give the same state), which
costs only when something failed. Storability is checked at each checkpoint, by the encoding
it does anyway: a state that does not encode is rebuilt from its image, call by call, to find
the event that made it so; that event is dead-lettered (stage `store`) and the state is the
rebuilt one without it. The triggers that event fired were already emitted by then (a backtest
wrote them, a live run delivered them); only an engine bug can get there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import msgspec

from engine.actions.trigger import Trigger
from engine.core.evaluate import Evaluator
from engine.core.times import format_ts
from engine.events.decode import DeadLetter, Stage
from engine.events.model import Event
from engine.state.customer import CustomerState, Deferred, Timer, decode_state, encode_state

log = logging.getLogger("engine.core.isolation")

JOURNAL_LIMIT = 2_000        # events a backtest applies between checkpoints: a batch (engine.offline.backtest.BATCH)
_LOGGED_WITH_TRACEBACK = 5   # the first failures of a run are logged with their traceback
_LOG_EVERY = 1000            # later ones: one line per this many

_json = msgspec.json.Encoder()

Clock = tuple[int, int | None]   # on_time's (now, recurring_until)
Entry = Event | Clock             # a call as it was applied (with `evaluator`'s rules: `use` checkpoints first)


class IsolatedEvaluator:
    """Wraps an `Evaluator`: the same calls, but a failure costs one event, never the run.

    Its caller, the `Session` (engine.core.session), stores the state these methods return
    (after a failure it is a new object), calls `checkpoint` for the customers about to be
    stored (live: each commit; the backtest: every `JOURNAL_LIMIT` events, and at the end),
    switches rules through `use`, hands over the bytes of states loaded (`loaded`) and drops
    the customers evicted (`forget`).
    The hot path costs a dictionary lookup and a list append per call.
    """

    __slots__ = ("evaluator", "images", "journal", "rejected", "where")

    def __init__(self, evaluator: Evaluator, where: str) -> None:
        self.evaluator = evaluator
        self.images: dict[str, bytes | None] = {}    # customer -> state at its last checkpoint (None: none)
        self.journal: dict[str, list[Entry]] = {}   # customer -> calls applied since that image
        self.rejected = 0           # events and deadline firings refused here
        self.where = where          # how dead letters name the input, e.g. "kafka customer-events/3"

    def use(self, evaluator: Evaluator, state_of: Callable[[str], CustomerState | None]
            ) -> tuple[dict[str, CustomerState | None], list[DeadLetter]]:
        """Evaluate with other rules from now on (a reload). The journal is checkpointed first,
        so a replay never applies a call with rules it was not applied with; returns what
        `checkpoint` returns besides the images."""
        _, replaced, dead = self.checkpoint(self.journal, state_of)
        self.evaluator = evaluator
        return replaced, dead

    def loaded(self, customer_id: str, image: bytes) -> None:
        """A state read from the store, as the bytes it was stored as: its image, at no cost."""
        self.images[customer_id] = image

    def forget(self, customer_id: str) -> None:
        """The customer left the caller's cache (evicted after a commit)."""
        self.images.pop(customer_id, None)
        self.journal.pop(customer_id, None)

    def on_event(self, state: CustomerState | None, ev: Event, out: list[Trigger]
                 ) -> tuple[CustomerState | None, DeadLetter | None]:
        """Apply one event; on failure, (the state without it, a dead letter) and no triggers of it."""
        cid = ev.customer_id
        entries = self.journal.get(cid)
        if entries is None:
            entries = self._open(cid, state)
        evaluator = self.evaluator
        mark = len(out)
        try:
            state = evaluator.on_event(state, ev, out)
        except Exception as exc:
            del out[mark:]
            evaluator.counters.events -= 1   # not applied after all
            dead = DeadLetter(self._reason(Stage.EVALUATE, exc, f"event {ev.event_id!r} of customer {cid!r}"),
                              f"{self.where} event {ev.event_id}", _json.encode(ev).decode(), Stage.EVALUATE)
            return self._rebuild(cid)[0], dead
        entries.append(ev)
        return state, None

    def on_time(self, state: CustomerState, customer_id: str, now: int, out: list[Trigger],
                recurring_until: int | None = None) -> tuple[CustomerState, DeadLetter | None]:
        """Fire the customer's deadlines due by `now`. On failure the deadlines due by then are
        dropped from the restored state (each would fail again on every clock tick) and named
        in the dead letter, with no triggers of them."""
        entries = self.journal.get(customer_id)
        if entries is None:
            entries = self._open(customer_id, state)
        evaluator = self.evaluator
        mark = len(out)
        try:
            evaluator.on_time(state, customer_id, now, out, recurring_until)
        except Exception as exc:
            del out[mark:]
            restored = self._rebuild(customer_id)[0] or state
            dropped: list[Timer | Deferred] = [t for t in restored.timers if t.due <= now]
            dropped += [d for d in restored.deferred if d.due <= now]
            restored.timers = [t for t in restored.timers if t.due > now]
            restored.deferred = [d for d in restored.deferred if d.due > now]
            idle = [r.id for r in evaluator.rules.inactive if (due := r.due(restored)) is not None and due <= now]
            restored.idle_fired = [*restored.idle_fired, *idle]
            self._checkpoint_one(customer_id, restored)   # the dropped deadlines must stay dropped on a rebuild
            what = f"deadlines of customer {customer_id!r} due by {format_ts(now)}"
            raw = _json.encode({"customer_id": customer_id, "dropped": dropped, "inactivity_rules": idle})
            return restored, DeadLetter(self._reason(Stage.EVALUATE, exc, what), f"{self.where} deadlines",
                                        raw.decode(), Stage.EVALUATE)
        entries.append((now, recurring_until))
        return state, None

    def checkpoint(self, customer_ids: Iterable[str], state_of: Callable[[str], CustomerState | None]
                   ) -> tuple[dict[str, bytes], dict[str, CustomerState | None], list[DeadLetter]]:
        """Encode these customers' states (the storability check, and their new images).

        Returns (customer -> bytes to store, customer -> state that replaces the caller's, for
        the rare customer whose state did not encode, dead letters of the events that made it so).
        """
        images: dict[str, bytes] = {}
        replaced: dict[str, CustomerState | None] = {}
        dead: list[DeadLetter] = []
        for cid in list(customer_ids):
            state = state_of(cid)
            try:
                image = None if state is None else encode_state(state)
            except Exception:
                state, image, letters = self._without_unstorable(cid)
                replaced[cid] = state
                dead += letters
            self.images[cid] = image
            self.journal.pop(cid, None)
            if image is not None:
                images[cid] = image
        return images, replaced, dead

    # -- the rare path ----------------------------------------------------------------------

    def _open(self, customer_id: str, state: CustomerState | None) -> list[Entry]:
        if customer_id not in self.images:   # first sight: the state as it is now is the image
            self.images[customer_id] = None if state is None else encode_state(state)
        entries = self.journal[customer_id] = []
        return entries

    def _checkpoint_one(self, customer_id: str, state: CustomerState) -> None:
        self.images[customer_id] = encode_state(state)
        self.journal.pop(customer_id, None)

    @staticmethod
    def _replay(customer_id: str, state: CustomerState | None, call: Entry, scratch: Evaluator
                ) -> CustomerState | None:
        """One journaled call again, on an evaluator of the same rules whose counts are thrown away."""
        if type(call) is Event:
            return scratch.on_event(state, call, [])
        if state is not None:
            now, recurring_until = call   # type: ignore[misc]
            scratch.on_time(state, customer_id, now, [], recurring_until)
        return state

    def _rebuild(self, customer_id: str) -> tuple[CustomerState | None, list[Entry]]:
        """The state from the image and the journal (the calls that went well), and those calls."""
        image = self.images.get(customer_id)
        state = None if image is None else decode_state(image)
        entries = self.journal.get(customer_id, [])
        kept: list[Entry] = []
        scratch = Evaluator(self.evaluator.rules)
        for entry in entries:
            before = encode_state(state) if state is not None else None
            try:
                state = self._replay(customer_id, state, entry, scratch)
                kept.append(entry)
            except Exception:   # it went well the first time; it cannot fail now, but if it does, skip it
                state = None if before is None else decode_state(before)
        if len(kept) != len(entries):
            self.journal[customer_id] = kept
        return state, kept

    def _without_unstorable(self, customer_id: str) -> tuple[CustomerState | None, bytes | None, list[DeadLetter]]:
        """Replay the journal from the image, encoding after each call; a call after which the
        state does not encode is left out (and dead-lettered if it was an event)."""
        image = self.images.get(customer_id)
        state = None if image is None else decode_state(image)
        last_good = image
        dead: list[DeadLetter] = []
        scratch = Evaluator(self.evaluator.rules)
        for call in self.journal.get(customer_id, []):
            try:
                state = self._replay(customer_id, state, call, scratch)
                last_good = None if state is None else encode_state(state)
            except Exception as exc:
                state = None if last_good is None else decode_state(last_good)
                if type(call) is Event:
                    ev: Event = call
                    what = f"event {ev.event_id!r} of customer {customer_id!r}"
                    dead.append(DeadLetter(self._reason(Stage.STORE, exc, what), f"{self.where} event {ev.event_id}",
                                           _json.encode(ev).decode(), Stage.STORE))
                else:
                    self._reason(Stage.STORE, exc, f"deadlines of customer {customer_id!r}")
        return state, last_good, dead

    def _reason(self, stage: Stage, exc: Exception, what: str) -> str:
        self.rejected += 1
        doing = "applying the rules to" if stage is Stage.EVALUATE else "storing the state after"
        reason = f"engine error {doing} {what}: {type(exc).__name__}: {exc}"
        if self.rejected <= _LOGGED_WITH_TRACEBACK:
            log.error("%s (dead-lettered; the customer's state is as without it; please report this)", reason,
                      exc_info=exc)
        elif self.rejected % _LOG_EVERY == 0:
            log.error("%d events or deadlines dead-lettered by engine errors so far; latest: %s", self.rejected,
                      reason)
        return reason
