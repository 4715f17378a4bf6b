"""The population's best hour live (SPEC §3b), the same as the backtest's whatever the partitions do.

A backtest has one clock and every customer: on day D it knows every response up to D-2, the
days the hour in force on D is computed from (`engine.policy.timing.Population`). A live
partition sees only its own customers, and partitions run at their own pace. So:

- each partition's responses go to the store with its commit (`PartitionStore.commit`,
  `population`), counted exactly once like its states;
- a day is *final* once every partition of the input has committed a clock past it (the frontier
  it committed: every event up to it is applied, a later one is late and does not count);
- the partition reads the final days back, summed over all partitions, and its session may apply
  events and fire deadlines up to the end of the day after the last final one (the session's
  ceiling, `engine.core.session`): the hour in force on any day it reaches is then known, and is
  the backtest's.

Running in real time this never holds anything back (every partition is within seconds of the
wall clock; the ceiling is a day ahead). A partition more than a day ahead of the slowest one (a
replay, a partition whose process is not running) waits for it, holding its events like lateness
does, up to the session's `max_held`, after which they are applied anyway (counted as `early`)
and the hour used is the last final day's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from engine.actions.trigger import Trigger
from engine.core.session import BEGINNING, Session
from engine.policy.timing import DAY_MS, POPULATION_DAYS, Population
from engine.state.store import PartitionStore

REFRESH_S = 0.01   # while the ceiling holds something back, the other partitions' clocks are read this often


class PopulationSync:
    """One partition's share of the live population: what it reads back, and its session's ceiling."""

    def __init__(self, store: PartitionStore, partitions: Sequence[str], population: Population,
                 call: Callable[[Callable[[], Any], str], Any]) -> None:
        """`partitions`: every partition of the input (this one included); `call(fn, what)`: runs a
        store call with the worker's retries."""
        self.store = store
        self.partitions = list(partitions)
        self.population = population
        self.call = call
        self._at = 0.0   # monotonic time of the last refresh

    def wanted(self, session: Session) -> bool:
        """Whether to read the other partitions' clocks now: never yet, or the ceiling holds
        something back (and the last look is `REFRESH_S` old)."""
        if session.cap is not None and session.cap >= session.frontier:
            return False
        return time.monotonic() - self._at >= REFRESH_S

    def refresh(self, session: Session, out: list[Trigger]) -> None:
        """Read every partition's committed clock; load the days that became final; raise the ceiling."""
        self._at = time.monotonic()
        clocks = self.call(lambda: self.store.load_clocks(self.partitions), "clocks of all partitions")
        low = min((clocks[p].frontier if p in clocks else BEGINNING for p in self.partitions), default=BEGINNING)
        if low == BEGINNING:   # a partition has committed nothing yet: no day is final
            if session.cap is None:
                session.cap = BEGINNING
            return
        final_before = (low + 1) // DAY_MS   # every day that ends at or before `low` is complete
        start = final_before - POPULATION_DAYS - 2
        loaded = self.population.final_before   # the days before it are in `population.counts`
        days = list(range(start if loaded is None else max(start, loaded), final_before))
        if days:
            counts = self.call(lambda: self.store.load_population(self.partitions, days), "population counts")
            self.population.add_final(counts, final_before)
        # an event or deadline on day D needs days up to D-2 final: D may be final_before + 1
        session.set_cap((final_before + 2) * DAY_MS - 1, out)


__all__ = ["PopulationSync"]
