"""Which customer has a deadline due when: the wake-up index of the backtest and the live worker.

A min-heap of (due, customer) with lazy deletion: a customer's entry is only replaced when
its earliest deadline moves earlier; a later or cancelled deadline leaves a stale entry that
`pop` skips (the caller re-checks the state anyway, since firing is idempotent).
"""

from __future__ import annotations

import heapq


class DeadlineIndex:
    __slots__ = ("_heap", "_scheduled")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}

    def update(self, customer_id: str, due: int | None) -> None:
        """Record a customer's earliest deadline (None: nothing pending)."""
        if due is None:
            return
        current = self._scheduled.get(customer_id)
        if current is None or due < current:
            self._scheduled[customer_id] = due
            heapq.heappush(self._heap, (due, customer_id))
            if len(self._heap) > 2 * len(self._scheduled) + 1024:   # superseded entries pile up
                self._heap = [(d, c) for c, d in self._scheduled.items()]
                heapq.heapify(self._heap)

    def forget(self, customer_id: str) -> None:
        """Drop a customer's entry (its heap entry goes stale and is skipped)."""
        self._scheduled.pop(customer_id, None)

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop(self, now: int | None) -> tuple[int, str] | None:
        """The earliest entry due at or before `now` (None: any), or None when there is none."""
        heap, scheduled = self._heap, self._scheduled
        while heap and (now is None or heap[0][0] <= now):
            due, cid = heapq.heappop(heap)
            if scheduled.get(cid) == due:
                del scheduled[cid]
                return due, cid
        return None

    def __len__(self) -> int:
        return len(self._scheduled)
