"""Per-event isolation (SPEC §6, "bad input never stops the engine"): an event the rules cannot
be applied to, or whose resulting state cannot be stored, becomes a dead letter, and the
customer's state is exactly what it was before that event.

The decoder already refuses what it can see is wrong (engine.decode), so what reaches this
layer is an engine bug, never a user's mistake: it is logged loudly, counted and dead-lettered,
and the run goes on. To restore "the state before the event" without copying every state
before every event, each customer's last good state is kept as its encoded image: encoding
after every change is the storability check anyway (the live engine commits those very
bytes, so the backtest checks what live would store), and on a failure the image decodes
back to the state before the event.
"""

from __future__ import annotations

import logging

import msgspec

from engine.decode import DeadLetter, Stage
from engine.evaluate import Evaluator
from engine.events import Event
from engine.state.customer import CustomerState, decode_state, encode_state
from engine.times import format_ts
from engine.triggers import Trigger

log = logging.getLogger("engine.isolation")

_LOGGED_WITH_TRACEBACK = 5   # the first failures of a run are logged with their traceback
_LOG_EVERY = 1000            # later ones: one line per this many

_json = msgspec.json.Encoder()


class IsolatedEvaluator:
    """Wraps an `Evaluator`: the same calls, but a failure costs one event, never the run.

    `images` maps each customer to the encoded form of their latest good state; the live
    engine commits these bytes, so a state is encoded once per change, not again at commit.
    Callers must store the state these methods return (on a failure it is a new object).
    """

    __slots__ = ("evaluator", "images", "rejected", "where")

    def __init__(self, evaluator: Evaluator, where: str) -> None:
        self.evaluator = evaluator
        self.images: dict[str, bytes] = {}
        self.rejected = 0          # events and deadline firings refused here
        self.where = where         # how dead letters name the input, e.g. "kafka customer-events/3"

    def on_event(self, state: CustomerState | None, ev: Event, out: list[Trigger]
                 ) -> tuple[CustomerState | None, DeadLetter | None]:
        """Apply one event; on failure, (the state before it, a dead letter) and no triggers of it."""
        cid = ev.customer_id
        images = self.images
        if state is not None and cid not in images:
            images[cid] = encode_state(state)   # first touch of a loaded state: its image
        mark = len(out)
        stage = Stage.EVALUATE
        try:
            state = self.evaluator.on_event(state, ev, out)
            stage = Stage.STORE
            images[cid] = encode_state(state)
            return state, None
        except Exception as exc:
            del out[mark:]
            self.evaluator.counters.events -= 1   # not applied after all
            dead = DeadLetter(self._reason(stage, exc, f"event {ev.event_id!r} of customer {cid!r}"),
                              f"{self.where} event {ev.event_id}", _json.encode(ev).decode(), stage)
            return self._restore(cid), dead

    def on_time(self, state: CustomerState, customer_id: str, now: int, out: list[Trigger],
                recurring_until: int | None = None) -> tuple[CustomerState, DeadLetter | None]:
        """Fire the customer's deadlines due by `now`. On failure the deadlines due by then are
        dropped from the restored state (each would fail again on every clock tick) and named
        in the dead letter, with no triggers of them."""
        images = self.images
        if customer_id not in images:
            images[customer_id] = encode_state(state)
        mark = len(out)
        stage = Stage.EVALUATE
        try:
            self.evaluator.on_time(state, customer_id, now, out, recurring_until)
            stage = Stage.STORE
            images[customer_id] = encode_state(state)
            return state, None
        except Exception as exc:
            del out[mark:]
            restored = self._restore(customer_id) or state
            dropped = [t for t in restored.timers if t.due <= now]
            restored.timers = [t for t in restored.timers if t.due > now]
            idle = [r.id for r in self.evaluator.rules.inactive
                    if restored.last_ts and restored.last_ts + r.wait <= now and r.id not in restored.idle_fired]
            restored.idle_fired = [*restored.idle_fired, *idle]
            images[customer_id] = encode_state(restored)
            what = f"deadlines of customer {customer_id!r} due by {format_ts(now)}"
            raw = _json.encode({"customer_id": customer_id, "dropped": dropped, "inactivity_rules": idle})
            return restored, DeadLetter(self._reason(stage, exc, what), f"{self.where} deadlines", raw.decode(), stage)

    def forget(self, customer_id: str) -> None:
        """The customer left the caller's cache (evicted): its image goes with it."""
        self.images.pop(customer_id, None)

    def _restore(self, customer_id: str) -> CustomerState | None:
        image = self.images.get(customer_id)
        return None if image is None else decode_state(image)

    def _reason(self, stage: Stage, exc: Exception, what: str) -> str:
        self.rejected += 1
        doing = "applying the rules to" if stage is Stage.EVALUATE else "storing the state after"
        reason = f"engine error {doing} {what}: {type(exc).__name__}: {exc}"
        if self.rejected <= _LOGGED_WITH_TRACEBACK:
            log.error("%s (dead-lettered; the customer's state is as before; please report this)", reason,
                      exc_info=exc)
        elif self.rejected % _LOG_EVERY == 0:
            log.error("%d events or deadlines dead-lettered by engine errors so far; latest: %s", self.rejected,
                      reason)
        return reason
