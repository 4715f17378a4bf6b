"""The engine's Bytewax source: one partition per event-log partition, resuming from the
offset committed in the state store (a `PartitionStore`: Redis live, in memory in tests), and
committing each epoch once its outputs are written.

Why commit in `next_batch`: Bytewax calls `snapshot()` when a partition's epoch closes and
polls the partition for the next epoch only after the dataflow's probe has passed that epoch,
i.e. after every output of it was written (bytewax.md §4, `inputs.rs:438`). Committing the
states and the snapshotted offset at that first poll therefore never gets ahead of the sinks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.base import SinkError, retry_forever
from engine.core.times import format_ts, now_ms
from engine.operators import metrics
from engine.operators.event_log import EventLog
from engine.operators.partition import Batch, Fatal, PartitionWorker
from engine.operators.shutdown import SHUTDOWN
from engine.rules.reload import LiveRules
from engine.state.redis import REDIS_ERRORS, REDIS_FATAL
from engine.state.store import PartitionStore, StateLost

log = logging.getLogger("engine.source")

OpenLog = Callable[[str, int | None], EventLog]   # (partition name, start offset or None) -> log
StoreFactory = Callable[[], PartitionStore]   # called once per partition: one store per worker, or shared


class EngineSource(FixedPartitionedSource):
    def __init__(self, partitions: list[str], open_log: OpenLog, store: StoreFactory, rules: LiveRules,
                 batch_size: int = 1000, idle_poll_ms: int = 1, index_poll_ms: int = 100,
                 cache_size: int = 200_000, exit_at_end: bool = False) -> None:
        self.partitions = partitions
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
                                 has_offset=start is not None, clock=clock)
        return EnginePartition(worker, self.batch_size, self.idle_poll_ms, self.index_poll_ms, self.exit_at_end)


class EnginePartition(StatefulSourcePartition):
    def __init__(self, worker: PartitionWorker, batch_size: int, idle_poll_ms: int, index_poll_ms: int,
                 exit_at_end: bool) -> None:
        self.worker = worker
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
        now = now_ms()
        records = worker.event_log.read(self.batch_size)
        if records:
            worker.next_offset = max(worker.next_offset, records[-1][1] + 1)   # a re-read after a restart starts below it
            self._awake = None
        else:
            self._awake = datetime.now(UTC) + timedelta(milliseconds=self.idle_poll_ms)
            if self.exit_at_end and worker.event_log.end_reached() and quiet_commit and worker.nothing_due(now):
                log.info("partition %s", worker.summary())
                metrics.HEALTH.forget(worker.name)
                raise StopIteration()   # read to the start-up end, every deadline fired and committed
        scan = worker.index_backlog or now - self._index_at >= self.index_poll_ms
        if scan:
            self._index_at = now
            if now - self._lag_at >= 5000:   # a broker round trip: every few seconds is enough
                self._lag_at = now
                self._lag.set(worker.event_log.lag())
        # A bounded run treats the start-up end as "caught up", so its clock reaches the wall clock.
        caught_up = worker.event_log.caught_up() or (self.exit_at_end and worker.event_log.end_reached())
        return [Batch(worker, records, caught_up, now, scan)]

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
        except SinkError as e:   # the epoch's triggers are not all delivered: it must not commit
            SHUTDOWN.request(f"sink: {e}", fatal=True)
        except OSError as e:
            SHUTDOWN.request(f"cannot make the sinks' output durable before a commit: {e}", fatal=True)
        raise StopIteration()

    def _stop(self) -> list[Batch]:
        """Stopping: read nothing more; once the epoch in flight has closed (every output of it
        written), commit it and end this partition. A fatal stop commits nothing."""
        worker = self.worker
        if SHUTDOWN.fatal or worker.failed:
            metrics.HEALTH.forget(worker.name)
            raise StopIteration()
        if self._pending is None:
            self._awake = datetime.now(UTC) + timedelta(milliseconds=10)
            return []
        self._commit()
        SHUTDOWN.stopped_at[worker.name] = worker.committed_offset
        metrics.HEALTH.forget(worker.name)
        raise StopIteration()

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        self._pending = self.worker.next_offset
        return self._pending

    def close(self) -> None:
        metrics.HEALTH.forget(self.worker.name)
        self.worker.close()
