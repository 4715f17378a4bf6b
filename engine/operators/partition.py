"""One source partition's share of the engine: its customers' states, cached; its deadlines;
the evaluation of its batches; and its commits to Redis, with the outbox of what it produced.

Everything here runs on the worker that reads the partition, and no other worker ever writes
these customers (Kafka keys events by customer). One other thread reads the cache: the profile
API's (`engine.operators.profile_api`), under `PartitionWorker.lock`, which the worker holds
for each batch and each commit.
"""

from __future__ import annotations

import gc
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence

from connectors.base import Record, retry_forever
from engine.actions.trigger import Trigger
from engine.core.session import BEGINNING, Session
from engine.errors import EngineError
from engine.events.decode import DeadLetter, EventDecoder
from engine.operators import metrics
from engine.operators.event_log import EventLog
from engine.operators.population import PopulationSync
from engine.operators.shutdown import SHUTDOWN
from engine.policy.timing import DAY_MS, Population
from engine.rules.compiler import CompiledRules
from engine.rules.reload import LiveRules
from engine.state.customer import CustomerState, decode_state
from engine.state.outbox import OutboxEntry, OutboxTail, encode_items
from engine.state.redis import REDIS_ERRORS, REDIS_FATAL
from engine.state.store import PartitionClock, PartitionStore, StateLost

log = logging.getLogger("engine.partition")

STATS_EVERY_S = 10.0
INDEX_SCAN_LIMIT = 1000   # customers taken from Redis's deadline index per scan
# An idle, caught-up partition's clock is the wall clock less this: an event produced a moment
# ago may still be on its way (producer linger, broker, fetch), and is not late for that.
IN_FLIGHT_MS = 1000
# With triggers waiting in the outbox, a batch commits itself instead of waiting for its epoch's
# end (`commit_interval_ms`): a trigger reaches its relay only once committed. A batch that took
# everything there was to read commits at once (the next one is not there to share the commit),
# one of a backlog (a full batch) this long after the last commit at the latest.
EAGER_COMMIT_S = 0.01


EMPTY: frozenset[str] = frozenset()


class Fatal(EngineError):
    """A condition waiting cannot fix (Redis refused the credentials): the run stops, exit 2."""


class Batch:
    """What the source hands the evaluate step: raw records and the clock they were read at."""

    __slots__ = ("worker", "records", "caught_up", "now", "scan_index", "backlog", "decoded", "end")

    def __init__(self, worker: PartitionWorker, records: list[Record], caught_up: bool,
                 now: int, scan_index: bool, backlog: bool = False, end: int | None = None) -> None:
        self.worker = worker
        self.records = records          # (value, offset, key)
        # the offset after every record handed out with and before this batch (the source's
        # `next_offset` when it made it): what a commit after this batch stands for. Records
        # given: after the last one; none given and no `end`: the committed offset.
        self.end = records[-1][1] + 1 if records else end
        self.caught_up = caught_up      # the log had nothing more: the clock may move to `now`
        self.now = now                  # wall clock, epoch ms
        self.scan_index = scan_index    # also look for due customers in Redis's deadline index
        self.backlog = backlog          # the read was cut at the batch size: more records are waiting
        self.decoded: tuple | None = None   # (rules version, `_decode`'s result), by `prefetch`


class PartitionStats:
    __slots__ = ("events", "dead_letters", "late", "triggers", "commits", "redis_retries", "deadline_customers",
                 "fenced")

    def __init__(self) -> None:
        self.events = self.dead_letters = self.late = self.triggers = self.commits = 0
        self.redis_retries = self.deadline_customers = 0
        self.fenced = 0   # re-read events a state held already (a crash in a non-atomic commit)


class PartitionWorker:
    def __init__(self, event_log: EventLog, store: PartitionStore, rules: LiveRules, start_offset: int,
                 cache_size: int = 200_000, has_offset: bool | None = None,
                 clock: PartitionClock | None = None, partitions: Sequence[str] | None = None) -> None:
        """`has_offset`: the store holds `start_offset` for this partition (default: when it is
        not 0); a commit expects to find it there, or stops with `StateLost`. `clock`: the
        partition's committed clock; the event log then starts at its `replay_from` (at or
        before `start_offset`), and records before `start_offset` are taken only if they were
        held back for ordering (after the committed frontier), since the states have the rest.
        `partitions`: every partition of the input (default: this one), whose committed clocks
        the population's best hour waits for (`engine.operators.population`)."""
        if has_offset is None:
            has_offset = start_offset > 0
        self.event_log = event_log
        self.name = event_log.name
        self.store = store
        self.live_rules = rules
        self.rules_version = rules.version
        # a store that commits slot by slot (Redis Cluster): states carry the offset they were
        # committed at, and re-read events they already hold are skipped (`_skip_fenced`)
        self.fencing = not store.atomic
        self.population = Population(shared=True)   # SPEC §3b: every partition's responses, through the store
        self.session = Session(rules.rules, event_log.where, population=self.population)
        self.partitions = list(partitions) if partitions is not None else [self.name]
        self.population_sync: PopulationSync | None = None
        self._use_population(rules.rules)
        self._clock_day: int | None = None   # the UTC day of the clock committed last
        self.cache: dict[str, CustomerState] = self.session.states   # the session's states are the cache
        self.decoder = EventDecoder()
        self.cache_size = cache_size
        self.dirty: set[str] = set()
        self.reread_below = start_offset if clock is not None and clock.replay_from < start_offset else 0
        self.reread_after = clock.frontier if clock is not None else 0   # re-read events after it were held
        if clock is not None:
            self.session.restore_clock(clock.frontier, clock.newest)
        self.index_backlog = False              # the last index scan was cut at its limit
        self.orphans: set[str] = set()          # indexed customers without a state, to unindex
        self.next_offset = start_offset         # after the last record handed out
        self.committed_offset = start_offset
        self.has_committed = has_offset         # the store holds an offset for this partition
        self.stats = PartitionStats()
        self.failed = False                     # a fatal error stopped this partition's work
        self._asked: set[str] | frozenset[str] = EMPTY   # looked for by `prefetch` for the next batch
        self.lock = threading.RLock()           # held while states change; the profile API reads under it
        self._stats_at = time.monotonic()
        self.first_record_at: float | None = None   # wall clock, for the end-of-run summary
        self.last_commit_at: float | None = None
        # a commit's id, the same on its retries (`PartitionStore.commit`): this worker's, then the count
        self._commit_ids = f"{secrets.token_hex(6)}-"
        self._committed_at = 0.0   # monotonic, for the eager commits of `process`
        self._m_events = metrics.EVENTS.labels(self.name)
        self._m_commits = metrics.COMMITS.labels(self.name)
        self._m_late = metrics.LATE_EVENTS.labels(self.name)
        self._m_duplicates = metrics.DUPLICATE_EVENTS.labels(self.name)
        # The transactional outbox: what this partition produced since its last commit, written
        # with that commit; where the partition's outbox stands; who relays it (told at commits).
        self.outbox: list[Trigger | DeadLetter] = []
        self.outbox_tail = OutboxTail(0, 0)
        # (partition, last seq, first seq, the entries' (kind, status) pairs, the entries with their items),
        # after each commit with entries
        self.on_outbox: Callable[[str, int, int, frozenset, list], None] | None = None

    # -- evaluate step ----------------------------------------------------------------------

    def process(self, batch: Batch) -> None:
        """Decode, load the customers not cached, evaluate; then fire what the clock made due.
        The triggers and dead letters wait in `outbox` for the next commit.

        A fatal error (Redis refusing the credentials) stops the run: this batch's work is
        dropped uncommitted, so a restart replays it."""
        if self.failed:
            return
        try:
            with self.lock:
                self.outbox += self._process(batch)
                if self.outbox and (not batch.backlog or time.monotonic() - self._committed_at >= EAGER_COMMIT_S):
                    # Everything before this batch's end is evaluated (batches come in order on this
                    # worker): its states and the offset after it commit together, as at an epoch's end.
                    # An empty batch (the clock's tick) stands for the records of the batches before
                    # it, evaluated but perhaps not committed yet: committing the committed offset
                    # again would store their effects under an offset before them, and a crash
                    # would apply them twice (found by the live property with two-poll epochs).
                    self.commit(batch.end if batch.end is not None else self.committed_offset)
        except Fatal as e:
            SHUTDOWN.request(str(e), fatal=True)
        except StateLost as e:
            self.failed = True
            SHUTDOWN.request(f"{e}. Nothing more was written; the engine stops so that the loss is not hidden. "
                             "Restore Redis from its persistence or a backup, then start again (the start-up "
                             "check says what it finds and offers --accept-state-loss).", fatal=True)

    def _process(self, batch: Batch) -> list[Trigger | DeadLetter]:
        started = time.perf_counter()
        if self.live_rules.version != self.rules_version:   # a reload: new batches use the new rules
            self.rules_version = self.live_rules.version
            # cached customers are re-indexed now (inactivity deadlines follow from the rules),
            # the others as their states are written next. `use` checkpoints the journal the next
            # commit takes its customers from, and names those to write (changed since the last
            # commit, deadlines moved): unwritten, their changes would be lost while the offset
            # moves past their events, or their new deadlines never reach the store's index.
            self.dirty.update(self.session.use(self.live_rules.rules))
            self._use_population(self.live_rules.rules)
            log.info("%s: now evaluating rules version %d", self.name, self.rules_version)
        out: list = []
        if batch.records and self.first_record_at is None:
            self.first_record_at = time.time()
        ahead = batch.decoded
        if ahead is not None and ahead[0] == self.rules_version:
            events, dead, offsets = ahead[1]
        else:
            events, dead, offsets = self._decode(batch.records)
        if self.reread_below:
            events, dead, offsets = self._skip_applied(batch.records, events, dead, offsets)
        session = self.session
        dead += session.take_rejected()   # found by a reload's checkpoint (a commit's go out with it)
        refused = 0   # events the core refused (dead-lettered too)
        late = session.late
        counters = session.evaluator.counters   # replaced only by a reload, above
        duplicates = counters.duplicates
        sync = self.population_sync
        if sync is not None and sync.wanted(session):
            sync.refresh(session, out)
        if events:
            self._load({e.customer_id for e in events})
            if self.fencing and offsets is not None:
                events, offsets = self._skip_fenced(events, offsets)
            refused = session.apply(events, out, offsets)
            dead += session.take_rejected()
        self._asked = EMPTY   # (only this batch's events were asked for)
        self._fire_due(batch, out, dead)
        self.dirty.update(session.take_fired())
        stats = self.stats
        applied = len(events) - refused
        stats.events += applied
        stats.dead_letters += len(dead)
        stats.triggers += len(out)
        if session.late != late:
            stats.late += session.late - late
            self._m_late.inc(session.late - late)
        if counters.duplicates != duplicates:
            self._m_duplicates.inc(counters.duplicates - duplicates)
        if applied:
            self._m_events.inc(applied)
        if out:
            metrics.count_triggers(out)
        if dead:
            metrics.count_dead_letters(self.name, dead)
            out.extend(dead)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self._maybe_log_stats()
        return out

    def _use_population(self, rules: CompiledRules) -> None:
        """Rules that send at a best hour wait for the population's days (else no ceiling)."""
        if rules.uses_population and self.population_sync is None:
            self.population_sync = PopulationSync(self.store, self.partitions, self.population, self._redis)
        elif not rules.uses_population and self.population_sync is not None:
            self.population_sync = None
            self.session.cap = None

    def _decode(self, records: list[Record]) -> tuple[list, list[DeadLetter], list[int] | None]:
        """Events, dead letters and the events' offsets, which only holding events for ordering
        (and the re-read after a restart) needs: None otherwise, at no cost per event. The
        population's ceiling (`send_time: best`) holds events too, and it can be set after this
        decode (by the batch's population refresh): with a population, offsets always."""
        where = self.event_log.where
        keys = [r[2] for r in records] if self.event_log.keyed else None
        session = self.session
        positions: list[int] | None = ([] if session.lateness or session.held or self.reread_below or self.fencing
                                       or session.cap is not None or self.population_sync is not None else None)
        events, dead = self.decoder.decode_batch(((raw, f"{where}@{offset}") for raw, offset, _ in records), keys,
                                                 positions)
        return events, dead, None if positions is None else [records[i][1] for i in positions]

    def _skip_fenced(self, events: list, offsets: list[int]) -> tuple[list, list[int]]:
        """Events a state holds already: committed to a store whose commit is not atomic, a
        state can be ahead of the partition's offset after a crash (written, the offset not)."""
        cache = self.cache
        keep = [i for i, (e, o) in enumerate(zip(events, offsets))
                if (st := cache.get(e.customer_id)) is None or o >= st.fence]
        if len(keep) == len(events):
            return events, offsets
        self.stats.fenced += len(events) - len(keep)
        return [events[i] for i in keep], [offsets[i] for i in keep]

    def _skip_applied(self, records: list[Record], events: list, dead: list[DeadLetter], offsets: list[int] | None
                      ) -> tuple[list, list[DeadLetter], list[int]]:
        """After a restart, records before the committed offset are re-read only for the events
        held back for ordering (after the committed frontier): the committed states hold the
        rest, and their dead letters were written already."""
        assert offsets is not None   # `_decode` keeps them while re-reading
        below, after = self.reread_below, self.reread_after
        if records and records[-1][1] >= below - 1:
            self.reread_below = 0   # the re-read ends in this batch
        keep = [i for i, (e, o) in enumerate(zip(events, offsets)) if o >= below or e.ts > after]
        dead = [d for d in dead if int(d.source.rsplit("@", 1)[1]) >= below]
        return [events[i] for i in keep], dead, [offsets[i] for i in keep]

    def _fire_due(self, batch: Batch, out: list, dead: list[DeadLetter]) -> None:
        """What the clock made due. The clock is the newest event time (the session moved it
        with the events), or the wall clock once nothing is left unread (`caught_up`)."""
        session = self.session
        if batch.caught_up:
            session.tick(batch.now - IN_FLIGHT_MS, out)
        if batch.scan_index:   # customers not touched since start-up (or evicted) are only in Redis's index
            until = session.frontier - 1
            indexed = self._redis(lambda: self.store.due_customers(self.name, until, INDEX_SCAN_LIMIT),
                                  "deadline index lookup")
            self.index_backlog = len(indexed) >= INDEX_SCAN_LIMIT   # more are due: scan again at once
            indexed = [cid for cid in indexed if cid not in self.cache]
            self._load(set(indexed))
            missing = [cid for cid in indexed if cid not in self.cache]
            self.orphans.update(missing)   # indexed, but its state is gone (deleted, evicted by Redis): unindex it
            session.catch_up(out)
            self.stats.deadline_customers += len(indexed)
        dead += session.take_rejected()

    def nothing_due(self, now: int) -> bool:
        """No deadline due by `now`, neither among cached customers nor in Redis's index
        (for a bounded run's last check before it stops)."""
        if self.session.held:
            return False
        local = self.session.deadlines.next_due()
        if local is not None and local <= now:
            return False
        return not self._redis(lambda: self.store.due_customers(self.name, now, 1), "deadline index lookup")

    def wanted(self, batch: Batch) -> list[str]:
        """Decode `batch` ahead (kept on it) and name its customers not cached, for `prefetch`."""
        if not batch.records or self.failed or self.live_rules.version != self.rules_version:
            return []
        decoded = self._decode(batch.records)
        batch.decoded = (self.rules_version, decoded)
        cache = self.cache
        return [cid for cid in {e.customer_id for e in decoded[0]} if cid not in cache]

    def preloaded(self, asked: list[str], images: dict[str, bytes]) -> None:
        """The states `prefetch` read for `asked` (the customers absent from `images` are new):
        the next `_load` does not ask for them again. An image that does not decode is left to it."""
        with self.lock:
            known, cache, found = self.session.loaded, self.cache, set(asked)
            for cid in asked:
                if cid in cache or (image := images.get(cid)) is None:
                    continue
                try:
                    state = decode_state(image)
                except Exception:   # `_load` meets it where the batch's errors are handled
                    found.discard(cid)
                    continue
                known(cid, state, image)
            self._asked = found

    def _load(self, customer_ids: set[str]) -> None:
        """Bring states into the cache, and their deadlines into the local index: a cached
        customer is only looked for there (the Redis index scan skips cached customers)."""
        asked, self._asked = self._asked, EMPTY
        missing = [cid for cid in customer_ids if cid not in self.cache and cid not in asked]
        if not missing:
            return
        loaded = self._redis(lambda: self.store.load_many_encoded(missing), "state load")
        known = self.session.loaded
        for cid, image in loaded.items():
            known(cid, decode_state(image), image)

    # -- commit (source, once the epoch is processed) -----------------------------------------

    def commit(self, offset: int) -> bool:
        """Write dirty states, the offset, the clock, the deadline index and the outbox entries at
        once; True if anything changed. Nothing waits for a sink: the relays deliver from the outbox."""
        with self.lock:
            return self._commit(offset)

    def _commit(self, offset: int) -> bool:
        offset = max(offset, self.committed_offset)   # an epoch's snapshot may trail a batch's own commit
        session = self.session
        self.dirty.update(session.isolated.journal)   # every customer an event or a deadline changed
        held_from = session.replay_from
        applied = session.applied_through
        clock = PartitionClock(applied, session.newest, offset if held_from is None else min(held_from, offset))
        # The clock alone moving (an idle partition's wall clock) is not worth a commit: with no
        # state changed, no event lies between the stored frontier and this one. Unless it
        # entered a new day and the other partitions wait for that (the population's best hour).
        new_day = self.population_sync is not None and applied != BEGINNING and applied // DAY_MS != self._clock_day
        if not self.dirty and offset == self.committed_offset and not self.orphans and not self.outbox and not new_day:
            return False
        started = time.perf_counter()
        if self.fencing:
            # the offset the state holds every event before: the commit's, or the customer's first
            # event still held back for ordering (with `lateness`; it is re-read after a crash)
            cache, held = self.cache, session.held_offsets() if session.held else {}
            for cid in self.dirty:
                if (st := cache.get(cid)) is not None:
                    st.fence = min(offset, held.get(cid, offset))
        states = session.checkpoint(self.dirty)
        if rejected := session.take_rejected():   # an event whose state could not be stored: this commit drops it
            metrics.count_dead_letters(self.name, rejected)
            self.stats.dead_letters += len(rejected)
            self.outbox += rejected   # so its dead letter is in the same commit, not in the next one
        entries = encode_items(self.outbox)
        next_due = session.next_due
        due = {cid: next_due(cid) for cid in states}
        orphans = list(self.orphans)
        expected = self.committed_offset if self.has_committed else None
        population = self.population.take_pending()   # a commit that fails for good stops the run
        commit_id = f"{self._commit_ids}{self.stats.commits + 1}"   # counted once it succeeds: retries share it
        tail = self._redis(lambda: self.store.commit(self.name, states, offset, due, unindex=orphans,
                                                     expected_offset=expected, outbox=entries, clock=clock,
                                                     population=population, commit_id=commit_id),
                           "commit")
        self._clock_day = applied // DAY_MS if applied != BEGINNING else None
        items, self.outbox = self.outbox, []
        if tail is not None:
            self.outbox_tail = tail
            if self.on_outbox is not None:
                first = tail.last_seq - len(entries) + 1
                # the relays deliver these without reading them back (engine.operators.outbox.HANDED_BATCHES)
                handed = [(OutboxEntry(e.kind, e.status, e.data, first + i), item)
                          for i, (e, item) in enumerate(zip(entries, items))]
                self.on_outbox(self.name, tail.last_seq, first, frozenset((e.kind, e.status) for e in entries),
                               handed)
        self.has_committed = True
        self.event_log.record_committed(offset)   # the record outside Redis that state loss is checked against
        self.orphans.clear()
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        self._m_commits.inc()
        self.dirty.clear()
        self.committed_offset = offset
        self.stats.commits += 1
        self.last_commit_at = time.time()
        self._committed_at = time.monotonic()
        if len(self.cache) > self.cache_size:
            self._evict()
        # The cache holds millions of small containers without reference cycles; left to the
        # cyclic GC, every full collection walks all of them (pauses of 100+ ms). Freezing
        # moves what exists now out of its sight; freed states are still freed by refcount.
        gc.freeze()
        return True

    def _evict(self) -> None:
        """Drop the oldest cached states (all are committed now); Redis has them."""
        excess = len(self.cache) - int(self.cache_size * 0.9)
        waiting = self.session.held_customers()   # their held events need them here
        for cid in [cid for cid in self.cache if cid not in waiting][:excess]:
            self.session.forget(cid)   # Redis's index still has it; the scan finds it when due

    def _redis(self, fn, what: str):
        def counted() -> None:
            self.stats.redis_retries += 1
            metrics.REDIS_ERRORS.labels(what).inc()
            metrics.HEALTH.waiting("redis", self.name, what)

        try:
            result = retry_forever(fn, f"{self.name}: Redis {what}", REDIS_ERRORS, log, on_retry=counted,
                                   fatal=REDIS_FATAL)
        except REDIS_FATAL as e:
            self.failed = True
            raise Fatal(f"{self.name}: Redis refused the engine's credentials ({type(e).__name__}: {e}): "
                        "check redis.username / redis.password (or the URL's)") from None
        if self.stats.redis_retries:
            metrics.HEALTH.waiting("redis", self.name, None)
        return result

    def _maybe_log_stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_at >= STATS_EVERY_S:
            self._stats_at = now
            s = self.stats
            log.info("%s: %d events (%d late), %d dead letters, %d triggers, %d commits, %d Redis retries, "
                     "offset %d, %d cached customers, %d events held for ordering (%d applied early: too many held)",
                     self.name, s.events, s.late, s.dead_letters, s.triggers, s.commits, s.redis_retries,
                     self.committed_offset, len(self.cache), len(self.session.held), self.session.early)

    def summary(self) -> str:
        """One line for the end of a bounded run; `bench.e2e` reads the timestamps in it."""
        s = self.stats
        span = (self.last_commit_at - self.first_record_at) if self.first_record_at and self.last_commit_at else 0.0
        return (f"{self.name}: done: {s.events} events ({s.late} late), {s.dead_letters} dead letters, "
                f"{s.triggers} triggers, "
                f"{s.commits} commits, {s.redis_retries} Redis retries; first record at "
                f"{self.first_record_at or 0:.3f}, last commit at {self.last_commit_at or 0:.3f} ({span:.2f} s)")

    def close(self) -> None:
        self.event_log.close()
