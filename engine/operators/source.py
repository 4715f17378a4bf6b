"""The engine's Bytewax source: one partition per event-log partition, resuming from the
offset committed in the state store (a `PartitionStore`: Redis live, in memory in tests), and
committing each epoch, with its outbox entries, once it is processed.

Why commit in `next_batch`: Bytewax calls `snapshot()` when a partition's epoch closes and
polls the partition for the next epoch only after the dataflow's probe has passed that epoch,
i.e. after every batch of it was evaluated (bytewax.md §4, `inputs.rs:438`). Committing the
states, the outbox and the snapshotted offset at that first poll therefore commits exactly the
epoch's work. Sinks are not waited for: the relays (`engine.operators.outbox`), attached to each
partition built here (on the worker, so in the process, that owns it), deliver from the outbox.

The outbox is bounded (`relay.outbox_max_entries` per partition): past it the partition reads
nothing and commits nothing new (it pauses, says so in the log and on /healthz) until its relays
have brought it down to `RESUME_SHARE` of the bound. Within a batch of the bound it reads no
more records than the outbox has room for, so a batch overshoots it by only its events' triggers
beyond one each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.base import retry_forever
from engine.core.times import format_ts, now_ms
from engine.operators import metrics
from engine.operators.event_log import EventLog
from engine.operators.outbox import RelayGroup
from engine.operators.partition import Batch, Fatal, PartitionWorker
from engine.operators.profile_api import CUSTOMERS
from engine.operators.shutdown import SHUTDOWN
from engine.rules.reload import LiveRules
from engine.state.redis import REDIS_ERRORS, REDIS_FATAL
from engine.state.store import PartitionStore, StateLost

log = logging.getLogger("engine.source")

RESUME_SHARE = 0.5
"""A paused partition resumes once its outbox holds at most this share of the bound: resuming
at the bound itself would pause again after one commit."""

OpenLog = Callable[[str, int | None], EventLog]   # (partition name, start offset or None) -> log
StoreFactory = Callable[[], PartitionStore]   # called once per partition: one store per worker, or shared


class EngineSource(FixedPartitionedSource):
    def __init__(self, partitions: list[str], open_log: OpenLog, store: StoreFactory, rules: LiveRules,
                 batch_size: int = 1000, idle_poll_ms: int = 1, index_poll_ms: int = 100,
                 cache_size: int = 200_000, exit_at_end: bool = False, relays: RelayGroup | None = None,
                 outbox_max_entries: int = 100_000) -> None:
        """`relays`: the sinks' relays of this process (None: nothing is relayed, the outbox
        only fills); `outbox_max_entries`: the bound above which a partition pauses."""
        self.partitions = partitions
        self.relays = relays
        self.outbox_max_entries = outbox_max_entries
        self.open_log = open_log
        self.store = store
        self.rules = rules
        self.batch_size = batch_size
        self.idle_poll_ms = idle_poll_ms
        self.index_poll_ms = index_poll_ms
        self.cache_size = cache_size
        self.exit_at_end = exit_at_end

    def list_parts(self) -> list[str]:
        return list(self.partitions)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> EnginePartition:
        store = self.store()
        # Redis owns the offsets; Bytewax's resume state (only with its recovery) is ignored.
        start = retry_forever(lambda: store.load_offset(for_part), f"partition {for_part}: Redis offset load",
                              REDIS_ERRORS, log, fatal=REDIS_FATAL)
        clock = retry_forever(lambda: store.load_clock(for_part), f"partition {for_part}: Redis clock load",
                              REDIS_ERRORS, log, fatal=REDIS_FATAL) if start is not None else None
        read_from = start
        if clock is not None and start is not None and clock.replay_from < start:
            read_from = clock.replay_from   # events held back for ordering are in no committed state yet
            log.info("partition %s: re-reading offsets %d-%d for the events held back for ordering at the last "
                     "commit (after %s)", for_part, read_from, start - 1, format_ts(clock.frontier))
        event_log = self.open_log(for_part, read_from)
        log.info("partition %s: starting at offset %s", for_part, start if start is not None else "0 (beginning)")
        worker = PartitionWorker(event_log, store, self.rules, start or 0, self.cache_size,
                                 has_offset=start is not None, clock=clock, partitions=self.partitions)
        CUSTOMERS.watch(worker)   # the profile API reads its cache
        worker.outbox_tail = retry_forever(lambda: store.outbox_tail(for_part), f"partition {for_part}: Redis outbox",
                                           REDIS_ERRORS, log, fatal=REDIS_FATAL)
        if self.relays is not None:
            worker.on_outbox = self.relays.notify
            self.relays.notify(for_part, worker.outbox_tail.last_seq)
            self.relays.attach(for_part)
        return EnginePartition(worker, self.batch_size, self.idle_poll_ms, self.index_poll_ms, self.exit_at_end,
                               self.relays, self.outbox_max_entries)


class EnginePartition(StatefulSourcePartition):
    def __init__(self, worker: PartitionWorker, batch_size: int, idle_poll_ms: int, index_poll_ms: int,
                 exit_at_end: bool, relays: RelayGroup | None = None, outbox_max_entries: int = 100_000) -> None:
        self.worker = worker
        self.relays = relays
        self.outbox_max_entries = outbox_max_entries
        self._full = False                   # paused: the outbox is at its bound
        self._full_checked = 0.0
        self.batch_size = batch_size
        self.idle_poll_ms = idle_poll_ms
        self.index_poll_ms = index_poll_ms
        self.exit_at_end = exit_at_end
        self._pending: int | None = None     # offset snapshotted at an epoch's end, to commit
        self._index_at = 0                   # when the Redis deadline index was last scanned
        self._awake: datetime | None = None
        self._lag_at = 0.0
        self._lag = metrics.CONSUMER_LAG.labels(worker.name)

    def next_batch(self) -> list[Batch]:
        worker = self.worker
        metrics.HEALTH.polled(worker.name)
        if SHUTDOWN.requested:
            return self._stop()
        worker.live_rules.poll()
        # A commit here follows a finished epoch, before this poll emits anything: when it has
        # nothing to write, every batch emitted so far was processed and changed nothing.
        quiet_commit = False
        if self._pending is not None:
            quiet_commit = not self._commit()
            self._pending = None
        if self._outbox_full():
            return []
        now = now_ms()
        records = worker.event_log.read(self._read_size())
        if records:
            worker.next_offset = max(worker.next_offset, records[-1][1] + 1)   # a re-read after a restart starts below it
            self._awake = None
        else:
            self._awake = datetime.now(UTC) + timedelta(milliseconds=self.idle_poll_ms)
            if (self.exit_at_end and worker.event_log.end_reached() and quiet_commit and worker.nothing_due(now)
                    and self._relayed()):
                log.info("partition %s", worker.summary())
                self._end()   # read to the start-up end, every deadline fired, committed and relayed
        scan = worker.index_backlog or now - self._index_at >= self.index_poll_ms
        if scan:
            self._index_at = now
            if now - self._lag_at >= 5000:   # a broker round trip: every few seconds is enough
                self._lag_at = now
                self._lag.set(worker.event_log.lag())
        # A bounded run treats the start-up end as "caught up", so its clock reaches the wall clock.
        caught_up = worker.event_log.caught_up() or (self.exit_at_end and worker.event_log.end_reached())
        return [Batch(worker, records, caught_up, now, scan, backlog=len(records) >= self.batch_size,
                      end=worker.next_offset)]

    def _relayed(self) -> bool:
        """Every relay has passed everything committed to this partition's outbox (a bounded run
        ends only then)."""
        return self.relays is None or self.relays.passed(self.worker.name) >= self.worker.outbox_tail.last_seq

    def _read_size(self) -> int:
        """`batch_size`, or fewer records when the outbox has less room than that: the bound is
        checked between batches, so one batch of a backlog (after a pause, a full one) could
        otherwise overshoot it by all the triggers of `batch_size` events."""
        room = self.outbox_max_entries - self.worker.outbox_tail.length - len(self.worker.outbox)
        return self.batch_size if room >= self.batch_size else max(1, room)

    def _outbox_full(self) -> bool:
        """Whether the partition pauses: its outbox is at the bound (checked after each commit,
        and while paused every `index_poll_ms` until the relays bring it down)."""
        worker = self.worker
        bound = self.outbox_max_entries
        if not self._full:
            if worker.outbox_tail.length < bound:
                return False
            self._full = True
            what = (f"outbox full: {worker.outbox_tail.length} entries not yet delivered by every sink "
                    f"(relay.outbox_max_entries = {bound}); reading paused")
            log.warning("partition %s: %s until the relays bring it down to %d", worker.name, what,
                        int(bound * RESUME_SHARE))
            metrics.HEALTH.waiting("outbox", worker.name, what)
        now = time.monotonic()
        if now - self._full_checked >= self.index_poll_ms / 1000:
            self._full_checked = now
            worker.outbox_tail = worker._redis(lambda: worker.store.outbox_tail(worker.name), "outbox length")
            if worker.outbox_tail.length <= bound * RESUME_SHARE:
                self._full = False
                metrics.HEALTH.waiting("outbox", worker.name, None)
                log.info("partition %s: outbox down to %d entries: reading again", worker.name,
                         worker.outbox_tail.length)
                return False
        self._awake = datetime.now(UTC) + timedelta(milliseconds=self.index_poll_ms)
        return True

    def _commit(self) -> bool:
        """Commit the snapshotted epoch; a store that lost data or refuses the credentials stops
        the whole run (exit 2), with nothing more written."""
        assert self._pending is not None
        try:
            return self.worker.commit(self._pending)
        except StateLost as e:
            SHUTDOWN.request(f"{e}. Nothing more was written; the engine stops so that the loss is not hidden. "
                             "Restore Redis from its persistence or a backup, then start again (the start-up "
                             "check says what it finds and offers --accept-state-loss).", fatal=True)
        except Fatal as e:
            SHUTDOWN.request(str(e), fatal=True)
        self._end()

    def _stop(self) -> list[Batch]:
        """Stopping: read nothing more; once the epoch in flight has closed (every batch of it
        evaluated), commit it and end this partition. A fatal stop commits nothing."""
        worker = self.worker
        if SHUTDOWN.fatal or worker.failed:
            self._end()
        if self._pending is None:
            self._awake = datetime.now(UTC) + timedelta(milliseconds=10)
            return []
        self._commit()
        SHUTDOWN.stopped_at[worker.name] = worker.committed_offset
        self._end()

    def _end(self) -> NoReturn:
        """This partition is done here: no longer reported, no longer relayed (the relays stop
        after their batch once no partition is left: Bytewax does not promise to call `close`), and
        no longer read by the profile API, whose answer is then the last commit's (Redis)."""
        CUSTOMERS.forget(self.worker)
        metrics.HEALTH.forget(self.worker.name)
        if self.relays is not None:
            self.relays.detach(self.worker.name)
        raise StopIteration()

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        self._pending = self.worker.next_offset
        return self._pending

    def close(self) -> None:
        CUSTOMERS.forget(self.worker)
        metrics.HEALTH.forget(self.worker.name)
        if self.relays is not None:
            self.relays.detach(self.worker.name)
        self.worker.close()
