"""The relays: from each partition's outbox to each sink (SPEC §6), so that event processing never
waits for a receiver.

    commit (states + offset + outbox entries, one atomic step)
      -> outbox of the partition (engine.state.outbox, a Redis stream)
      -> one relay per sink in this process (a thread), over the partitions this process owns
      -> the sink's connector (`connectors.base.Sink.deliver`), small batches
      -> the relay's cursor per (sink, partition), saved after each batch; the outbox trimmed
         below the lowest cursor of the configured sinks

A relay takes from the outbox only what its sink asks for (its kind, and for triggers its
statuses, SPEC §4); the entries it does not take still move its cursor. A batch holds at most
`relay.batch_size` items and its cursor is saved once it is done, so a crash re-sends at most one
batch per relay, and the engine itself (whose triggers are in the outbox once committed) none.

What a connector answers decides (`connectors.base.Failure`): a transient failure is tried again
with capped backoff, for as long as it takes (a receiver down for hours gets every trigger when
it is back, in order per partition; the backoff starts again whenever part of a try went
through, so a flaky receiver is not waited for as a dead one); a permanent one is written, per
item, to the sink's dead-letter file (`SinkDeadLetter`, JSONL; `triggers resend` delivers them
again).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from itertools import islice
from pathlib import Path

import msgspec

from connectors.base import Backoff, Failure, Sink
from connectors.file import FileSink, FileSinkConfig
from engine.actions.trigger import Trigger
from engine.events.decode import DeadLetter
from engine.operators.shutdown import SHUTDOWN
from engine.state.outbox import ItemKind, OutboxEntry, OutboxTail, decode_item
from engine.state.redis import REDIS_ERRORS
from engine.state.store import OutboxStore

__all__ = ["Relay", "RelayGroup", "RelayState", "RelayStats", "SinkDeadLetter", "SinkSpec", "default_dead_letter_path",
           "read_dead_letters"]

log = logging.getLogger("engine.relay")

SCAN_FACTOR = 8
"""At most this many entries are read per round trip per item a batch may hold: a sink that
takes one status in eight still fills its batch in one read. A relay reads about what filled
its last batch (from one batch's worth up to this), since what is read past the batch is read
again next time: reading 8x for a sink that takes everything cut a relay's rate by two thirds."""

STOP_WAIT_S = 30.0
"""How long a stopping process waits for a relay's batch in flight; past it the process exits
and that batch is sent again after the restart (at most one batch, as after a crash)."""

LOG_EVERY_S = 5.0   # a relay that keeps failing logs one line per this many seconds, with a count

SKIP_SAVE_S = 0.25
"""A relay told that a commit holds nothing for its sink (the dead-letter file's relay, with no
dead letters) moves its cursor past it without reading, and saves that cursor at most this often:
the outbox is trimmed below it only then, and a crash re-reads at most this much (to skip it
again)."""
MAX_SKIPS = 1000    # ranges remembered per partition; past it the oldest are read after all

HANDED_BATCHES = 32
"""A commit in this process hands its entries, and the items they encode, to the relays with its
`notify`: a relay whose cursor is where they start delivers them without reading the outbox back
and without decoding them (the outbox stays the record: a relay behind them, or restarted, reads
it). At most this many batches' worth are kept per partition; past it the oldest are dropped, to
be read from the outbox."""

Contents = frozenset[tuple[ItemKind, str]]
"""What a commit wrote to an outbox: its entries' (kind, status) pairs."""

Handed = Sequence[tuple[OutboxEntry, "Trigger | DeadLetter"]]
"""A commit's entries as written (`seq` numbered) with the items they encode."""


def default_dead_letter_path(sink: str) -> str:
    """Where a sink's refused items go unless its settings say `dead_letter_path`."""
    return f"{sink}-dead-letters.jsonl"


class SinkSpec(msgspec.Struct, frozen=True):
    """One configured sink, as its relay needs it: how to open its connector (once, in the relay's
    thread), what it takes from the outbox (`kind`; for triggers the `statuses`, None: every
    one), its dead-letter file, and its own backoff (base, cap in seconds; None: `relay.*`)."""

    name: str
    open: Callable[[], Sink]
    kind: ItemKind = ItemKind.TRIGGER
    statuses: frozenset[str] | None = None
    dead_letter_path: str | None = None
    backoff: tuple[float, float] | None = None

    def takes(self, kind: ItemKind, status: str) -> bool:
        return kind is self.kind and (self.statuses is None or status in self.statuses)

    def wants(self, entry: OutboxEntry) -> bool:
        return self.takes(entry.kind, entry.status)

    def wants_any(self, contents: Contents) -> bool:
        return any(self.takes(kind, status) for kind, status in contents)


class SinkDeadLetter(msgspec.Struct):
    """An item a sink refused for good, one JSON line of its dead-letter file: what `triggers
    resend` reads. `item` is the trigger (or event dead letter) exactly as it was in the outbox;
    `partition`/`seq` its place there; `attempts` how often it was sent; `failed_at` RFC 3339 UTC."""

    sink: str
    reason: str
    attempts: int
    failed_at: str
    partition: str
    seq: int
    kind: ItemKind
    item: msgspec.Raw


class _WebhookDeadLetter(msgspec.Struct):
    """A line of a webhook's dead-letter file from before the relays: one request's triggers."""

    triggers: list[Trigger]


def read_dead_letters(path: str | Path) -> tuple[list[Trigger], list[tuple[int, str]]]:
    """The triggers of a sink's dead-letter file, in file order, and the lines that hold none
    ((line number, why)): `triggers resend`'s input (`-`: stdin). Reads the relay's lines
    (`SinkDeadLetter`) and the webhook sink's older ones (a request's `triggers`)."""
    triggers: list[Trigger] = []
    unreadable: list[tuple[int, str]] = []
    decode_letter = msgspec.json.Decoder(SinkDeadLetter).decode
    decode_trigger = msgspec.json.Decoder(Trigger).decode
    decode_legacy = msgspec.json.Decoder(_WebhookDeadLetter).decode
    with open(path, "rb") if str(path) != "-" else contextlib.nullcontext(sys.stdin.buffer) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                letter = decode_letter(line)
            except msgspec.ValidationError as e:
                try:
                    triggers += decode_legacy(line).triggers
                except msgspec.DecodeError:
                    unreadable.append((number, str(e)))
                continue
            except msgspec.DecodeError as e:
                unreadable.append((number, str(e)))
                continue
            if letter.kind is not ItemKind.TRIGGER:
                unreadable.append((number, f"holds an event's dead letter ({letter.kind}), not a trigger"))
                continue
            try:
                triggers.append(decode_trigger(letter.item))
            except msgspec.DecodeError as e:
                unreadable.append((number, f"its item is not a trigger: {e}"))
    return triggers, unreadable


class RelayState(StrEnum):
    """What /healthz says of a relay."""

    OK = "ok"                   # delivering, or nothing to deliver
    RETRYING = "retrying"       # its sink (or Redis) fails transiently: `last_error` says how
    STOPPED = "stopped"


class RelayStats:
    """A relay's counters and state, written by its thread, read by /metrics and /healthz from
    any thread. `waiting_since`/`last_error` mean what they mean on `connectors.base.SinkStats`,
    so the health report reads both alike."""

    __slots__ = ("delivered", "retries", "dead_lettered", "state", "waiting_since", "last_error")

    def __init__(self) -> None:
        self.delivered = self.retries = self.dead_lettered = 0
        self.state = RelayState.OK
        self.waiting_since: float | None = None
        self.last_error: str | None = None

    def failing(self, why: str) -> None:
        if self.waiting_since is None:
            self.waiting_since = time.time()
        self.state, self.last_error = RelayState.RETRYING, why

    def recovered(self) -> None:
        self.state, self.waiting_since, self.last_error = RelayState.OK, None, None


class _Stopped(Exception):
    """The relay was told to stop in the middle of a batch: its cursor stays where it was."""


class Relay:
    """One sink's relay in this process: a thread that delivers the outbox entries of the
    attached partitions, one batch of at most `batch_size` items at a time, partition after
    partition, and waits (for a commit's `notify`, or `idle_s`) when none has anything new.

    It reads only the partitions a commit named or whose last batch moved its cursor, and all of
    them every `idle_s`: a commit to one partition costs one outbox read, not one per partition
    (each read takes the interpreter from the dataflow's thread for a moment)."""

    def __init__(self, spec: SinkSpec, store: Callable[[], OutboxStore], sinks: Sequence[str], batch_size: int,
                 backoff_base_s: float, backoff_max_s: float, idle_s: float,
                 tails: dict[str, int] | None = None) -> None:
        """`tails`: partition -> the last seq committed there, shared with the group (the
        commits tell it), so that the lag grows while this relay is busy retrying."""
        self.spec = spec
        self._tails = tails if tails is not None else {}
        self.name = spec.name
        self.stats = RelayStats()
        self._open_store = store
        self._sinks = list(sinks)          # every configured sink: the outbox is trimmed below their lowest cursor
        self._batch_size = batch_size
        self._backoff = spec.backoff or (backoff_base_s, backoff_max_s)
        self._idle_s = idle_s
        self._partitions: list[str] = []
        self._cursors: dict[str, int] = {}   # partition -> seq passed, once loaded
        self._scan: dict[str, int] = {}      # partition -> entries to read next (see SCAN_FACTOR)
        # partition -> what the last cursor save read after it (`OutboxStore.advance`), with the
        # commits known before that read
        self._read_ahead: dict[str, tuple[int, tuple[list[OutboxEntry], OutboxTail]]] = {}
        self._lock = threading.Lock()
        self._notified: set[str] = set()     # partitions committed to since the relay last looked
        # partition -> seq ranges (first, last) committed with nothing for this sink, in order: passed unread
        self._skips: dict[str, list[tuple[int, int]]] = {}
        self._skip_saved: dict[str, float] = {}   # partition -> when a skipped cursor was last saved
        self._unsaved: set[str] = set()           # partitions whose cursor moved by skips only, not saved yet
        self._detached: dict[str, int] = {}       # such cursors of partitions detached since (saved at `_close`)
        # partition -> the latest contiguous entries commits handed over (see HANDED_BATCHES)
        self._handed: dict[str, deque[tuple[OutboxEntry, Trigger | DeadLetter]]] = {}
        self._handed_max = HANDED_BATCHES * batch_size
        self._drained: set[str] = set()   # partitions whose last step delivered handed entries
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connector: Sink | None = None
        self._dead_letters: FileSink | None = None
        self._store: OutboxStore | None = None
        self._logged_at = 0.0
        self._unlogged = 0
        self._thread = threading.Thread(target=self._run, name=f"relay-{spec.name}", daemon=True)

    # -- control, from other threads ---------------------------------------------------------------

    def start(self) -> None:
        """Start the relay's thread; one that stopped (its last partition ended here) starts anew."""
        if self._thread.is_alive():
            return
        if self._thread.ident is not None:   # ran and stopped: a thread runs once
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"relay-{self.spec.name}", daemon=True)
        self.stats.state = RelayState.OK
        self._thread.start()

    def attach(self, partition: str) -> None:
        with self._lock:
            if partition not in self._partitions:
                self._partitions.append(partition)
            self._notified.add(partition)
        self._wake.set()

    def detach(self, partition: str) -> None:
        with self._lock:
            if partition in self._partitions:
                self._partitions.remove(partition)
            cursor = self._cursors.pop(partition, None)
            if partition in self._unsaved and cursor is not None:
                self._detached[partition] = cursor   # moved by skips only: `_close` still saves it
            self._read_ahead.pop(partition, None)
            self._handed.pop(partition, None)
            self._drained.discard(partition)

    def notify(self, partition: str, first: int = 0, last: int = 0, contents: Contents | None = None,
               handed: Handed = ()) -> None:
        """Something was committed to the partition's outbox: entries `first`..`last` holding
        `contents` (None: unknown), `handed` (when given) those entries with their items. A commit
        with nothing for this sink is passed without a read."""
        with self._lock:
            if contents is not None and first and not self.spec.wants_any(contents):
                skips = self._skips.setdefault(partition, [])
                if skips and skips[-1][1] + 1 == first:
                    skips[-1] = (skips[-1][0], last)
                else:
                    skips.append((first, last))
                    if len(skips) > MAX_SKIPS:
                        del skips[0]
                return   # nothing to wake up for: the next look at the partition passes it
            if handed:
                kept = self._handed.setdefault(partition, deque())
                if kept and kept[-1][0].seq + 1 != handed[0][0].seq and not self._passes(partition, kept[-1][0].seq,
                                                                                          handed[0][0].seq):
                    kept.clear()   # a gap (a commit not handed over): what follows it is kept
                kept.extend(handed)
                while len(kept) > self._handed_max:
                    kept.popleft()
            self._notified.add(partition)
        self._wake.set()

    def _passes(self, partition: str, before: int, after: int) -> bool:
        """Whether the entries between `before` and `after` are a run of commits told to hold
        nothing for this sink (a filtered sink's: `statuses` it does not take). Handed entries
        may then go on across it: delivering them passes it, as a read would. Without this, a
        relay one commit behind cleared what it was handed at each such commit and read it all
        back from the outbox (nothing lost, a read and a decoding more). Under `_lock`."""
        skips = self._skips.get(partition)
        if not skips:
            return False
        return skips[-1][0] <= before + 1 and skips[-1][1] == after - 1

    def lag(self) -> dict[str, int]:
        """Partition -> outbox entries committed after this relay's cursor."""
        tails = self._tails
        return {p: max(0, tails.get(p, 0) - seq) for p, seq in list(self._cursors.items())}

    def passed(self, partition: str) -> int | None:
        """The seq this relay has passed in the partition (None: not read yet)."""
        return self._cursors.get(partition)

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop after the batch in hand (its cursor saved); a batch still retrying is left, to be
        sent again after the restart."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(wait_s)
        self.stats.state = RelayState.STOPPED

    # -- the relay's thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            looked_at = -self._idle_s   # monotonic time of the last look at every partition
            moved: set[str] = set()
            while not self._stop.is_set():
                # every partition at least every `idle_s`, however busy the others keep the relay:
                # one whose read failed (Redis down for a moment) is not left until its next commit
                everything = time.monotonic() - looked_at >= self._idle_s
                if everything:
                    looked_at = time.monotonic()
                with self._lock:
                    todo = [p for p in self._partitions if everything or p in moved or p in self._notified]
                    self._notified.clear()
                moved = set()
                for partition in todo:
                    if self._stop.is_set():
                        break
                    if self._step(partition):
                        moved.add(partition)
                if not moved:
                    # a notify after the snapshot above has set the event again, or sets it now
                    self._wake.wait(max(0.0, looked_at + self._idle_s - time.monotonic()))
                    self._wake.clear()
        except _Stopped:
            pass
        except Exception as e:   # a bug: the run stops (exit 2) rather than go on without this sink
            log.exception("relay %s stopped by an unexpected error", self.name)
            self.stats.failing(f"stopped by an unexpected error: {type(e).__name__}: {e}")
            SHUTDOWN.request(f"relay {self.name} failed: {type(e).__name__}: {e} (its items stay in the outbox "
                             "and go out after a restart)", fatal=True)
        finally:
            self._close()

    def _step(self, partition: str) -> bool:
        """One batch of one partition; True when the cursor moved."""
        store = self._outbox_store()
        cursor = self._cursors.get(partition)
        if cursor is None:
            cursor = self._redis(lambda: store.load_cursors(partition).get(self.name, 0))
            if cursor is None:
                return False
        skipped = self._skip(partition, cursor)
        if skipped != cursor:
            cursor = self._cursors[partition] = skipped
            self._read_ahead.pop(partition, None)   # read after the old cursor
            if cursor >= self._tails.get(partition, 0):   # nothing after the skipped: no read
                self._save_skipped(partition, store)
                return False
        size = self._batch_size
        scan = self._scan.get(partition, size)
        ahead = self._read_ahead.pop(partition, None)
        if ahead is not None and ahead[1][1].last_seq < self._tails.get(partition, 0):
            ahead = None   # a commit came after that read: it would hide the commit's entries (and use up its wake-up)
        handed = self._take_handed(partition, cursor, scan)
        items: dict[int, Trigger | DeadLetter] = {}
        if not handed and partition in self._drained:
            self._drained.discard(partition)
            if cursor >= self._tails.get(partition, 0):
                return False   # the look after delivering what was handed over: nothing since, no read
        if handed:
            committed = self._tails.get(partition, 0)
            entries = [entry for entry, _ in handed]
            items = {entry.seq: item for entry, item in handed}
            tail = OutboxTail(max(committed, entries[-1].seq), 0)
        elif ahead is not None:
            committed, (entries, tail) = ahead
        else:
            committed = self._tails.get(partition, 0)   # before the read: a commit after it is not in it
            read = self._redis(lambda: store.read_outbox(partition, cursor, scan))
            if read is None:
                return False
            entries, tail = read
        self._cursors.setdefault(partition, cursor)
        if tail.last_seq < max(cursor, committed):   # SPEC §6: state loss is never silent
            has = f"outbox entries up to {tail.last_seq}" if tail.last_seq else "no outbox entry"
            self.stats.failing(f"{partition}: the outbox lost entries")
            SHUTDOWN.request(f"partition {partition}: the state store has {has} where this engine committed "
                             f"{max(cursor, committed)} (seen by relay {self.name}): it lost data since (restart "
                             "without persistence, flush, failover to a stale replica). Nothing more was written; "
                             "the engine stops so that the loss is not hidden. Restore Redis from its persistence "
                             "or a backup, then start again.", fatal=True)
            raise _Stopped()
        if tail.last_seq > committed:
            self._tails[partition] = tail.last_seq
        if not entries:
            self._save_skipped(partition, store)
            return False
        batch: list[OutboxEntry] = []
        last = cursor
        wants = self.spec.wants
        consumed = 0
        for entry in entries:
            if wants(entry):
                if len(batch) == size:
                    break
                batch.append(entry)
            last = entry.seq
            consumed += 1
        if len(batch) == size:       # about what it took, and a quarter more
            self._scan[partition] = max(size, min(size * SCAN_FACTOR, consumed + consumed // 4))
        elif len(entries) == scan:   # all read were passed and more are there: read more next time
            self._scan[partition] = min(size * SCAN_FACTOR, scan * 2)
        if batch:
            self._deliver(partition, batch, items)
        known = self._tails.get(partition, 0)
        scan = self._scan.get(partition, size)
        if handed:
            # entries handed over come with a notify: the cursor is saved without reading ahead
            # (entries not handed over, if any, are read by the next step)
            def save() -> bool:
                store.save_cursor(partition, self.name, last, self._sinks)
                return True

            while self._redis(save) is None:
                self._pause()
            self._drained.add(partition)
        else:
            while (saved := self._redis(lambda: store.advance(partition, self.name, last, self._sinks, scan))) is None:
                self._pause()
            self._read_ahead[partition] = (known, saved)
        self._unsaved.discard(partition)
        self._cursors[partition] = last
        return True

    def _take_handed(self, partition: str, cursor: int, count: int) -> list[tuple[OutboxEntry, Trigger | DeadLetter]]:
        """Up to `count` handed entries right after `cursor`; none when they do not start there.
        Their seqs may jump over commits that hold nothing for this sink (`_passes`)."""
        with self._lock:
            kept = self._handed.get(partition)
            if not kept:
                return []
            while kept and kept[0][0].seq <= cursor:
                kept.popleft()
            if not kept or kept[0][0].seq != cursor + 1:
                return []
            return list(islice(kept, count))

    def _skip(self, partition: str, cursor: int) -> int:
        """The cursor moved past the ranges told to hold nothing for this sink that follow it."""
        with self._lock:
            skips = self._skips.get(partition)
            if not skips:
                return cursor
            moved = cursor
            while skips and skips[0][0] <= moved + 1:
                moved = max(moved, skips.pop(0)[1])
        if moved != cursor:
            self._unsaved.add(partition)
        return moved

    def _save_skipped(self, partition: str, store: OutboxStore) -> None:
        """Save a cursor that moved by skips alone, at most every `SKIP_SAVE_S` (and once at `_close`)."""
        if partition not in self._unsaved:
            return
        at = time.monotonic()
        if at - self._skip_saved.get(partition, 0.0) < SKIP_SAVE_S:
            return
        cursor = self._cursors[partition]

        def save() -> bool:
            store.save_cursor(partition, self.name, cursor, self._sinks)
            return True

        if self._redis(save):
            self._skip_saved[partition] = at
            self._unsaved.discard(partition)

    def _deliver(self, partition: str, batch: list[OutboxEntry], known: dict[int, Trigger | DeadLetter]) -> None:
        """Deliver the batch (`known`: seq -> the item, handed over by its commit): transient
        failures again and again with capped backoff, permanent ones to the dead-letter file
        (durable before the cursor moves past them)."""
        items = [known[e.seq] if e.seq in known else decode_item(e) for e in batch]
        pending = list(range(len(items)))
        attempts = [0] * len(items)
        refused: list[tuple[int, Failure]] = []
        backoff = Backoff(*self._backoff)
        stats = self.stats
        while True:
            connector = self._open_connector()
            failures = connector.deliver([items[i] for i in pending])
            for i in pending:
                attempts[i] += 1
            again: list[int] = []
            waits: list[float] = []
            for f in failures:
                if f.permanent:
                    refused.append((pending[f.index], f))
                else:
                    again.append(pending[f.index])
                    if f.retry_after_s is not None:
                        waits.append(f.retry_after_s)
            if not again:
                break
            if len(again) < len(pending):   # some went through: the sink is up, only flaky
                backoff.reset()
            first = next(f for f in failures if not f.permanent)
            stats.retries += len(again)
            stats.failing(first.reason)
            delay = min(max([backoff.next_delay(), *waits]), backoff.cap_s)
            self._log_retry(partition, len(again), first.reason, delay)
            if self._stop.wait(delay):
                raise _Stopped()
            pending = again
        if refused:
            self._dead_letter(partition, batch, refused, attempts)
        stats.delivered += len(items) - len(refused)
        if stats.waiting_since is not None:
            log.info("relay %s: delivering again after %d retries", self.name, backoff.attempt)
            stats.recovered()
            self._logged_at, self._unlogged = 0.0, 0

    def _dead_letter(self, partition: str, batch: list[OutboxEntry], refused: list[tuple[int, Failure]],
                     attempts: list[int]) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        letters = [SinkDeadLetter(self.name, f.reason, attempts[i], now, partition, batch[i].seq, batch[i].kind,
                                  msgspec.Raw(batch[i].data)) for i, f in refused]
        path = self.spec.dead_letter_path or default_dead_letter_path(self.name)
        backoff = Backoff(*self._backoff)
        while True:
            try:
                if self._dead_letters is None:
                    self._dead_letters = FileSink(FileSinkConfig(path=path, append=True))
                self._dead_letters.write_durably(letters)   # the only record of them once the cursor moves on
                break
            except OSError as e:   # a full disk: the batch waits, nothing is skipped
                self.stats.failing(f"cannot write the dead-letter file {path}: {e.strerror or e}")
                self._log_retry(partition, len(letters), self.stats.last_error or "", backoff.cap_s)
                if self._stop.wait(backoff.next_delay()):
                    raise _Stopped() from None
        self.stats.dead_lettered += len(letters)
        log.error("relay %s: %s: %d item(s) refused for good, written to %s (first: %s; `triggers resend %s "
                  "--sink %s` sends them again)", self.name, partition, len(letters), path, refused[0][1].reason,
                  path, self.name)

    def _redis(self, fn):
        """`fn()`, or None after a transient store error (counted, logged, waited out briefly)."""
        try:
            result = fn()
        except REDIS_ERRORS as e:
            self.stats.failing(f"Redis: {type(e).__name__}: {e}")
            self._log_retry("outbox", 0, self.stats.last_error or "", 0.0)
            self._pause()
            return None
        if self.stats.state is RelayState.RETRYING and (self.stats.last_error or "").startswith("Redis:"):
            self.stats.recovered()
        return result

    def _pause(self) -> None:
        if self._stop.wait(self._backoff[1] / 4):
            raise _Stopped()

    def _log_retry(self, where: str, count: int, why: str, delay: float) -> None:
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._unlogged += 1
            return
        since = f" ({self._unlogged} more retries since the last line)" if self._unlogged else ""
        what = f"{count} item(s) of {where}" if count else where
        log.warning("relay %s: %s not delivered (%s); trying again in %.2f s%s", self.name, what, why, delay, since)
        self._logged_at, self._unlogged = now, 0

    def _outbox_store(self) -> OutboxStore:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _open_connector(self) -> Sink:
        """The connector, opened in this thread the first time it is needed; a sink that cannot
        be opened (a file in a missing directory) is retried like a failing delivery."""
        backoff = Backoff(*self._backoff)
        while self._connector is None:
            try:
                self._connector = self.spec.open()
            except OSError as e:
                self.stats.failing(f"cannot open the sink: {e.strerror or e}")
                self._log_retry("the sink", 0, self.stats.last_error or "", backoff.cap_s)
                if self._stop.wait(backoff.next_delay()):
                    raise _Stopped() from None
        return self._connector

    def _close(self) -> None:
        if self._unsaved and self._store is not None:   # cursors moved by skips: saved once, best effort
            for partition in list(self._unsaved):
                cursor = self._cursors.get(partition, self._detached.get(partition))
                if cursor is None:
                    continue
                try:
                    self._store.save_cursor(partition, self.name, cursor, self._sinks)
                    self._unsaved.discard(partition)
                except REDIS_ERRORS:
                    pass
        self._detached.clear()
        for closing in (self._connector, self._dead_letters):
            if closing is not None:
                try:
                    closing.close()
                except OSError as e:
                    log.error("relay %s: closing: %s", self.name, e)
        self._connector = self._dead_letters = None   # a relay started again opens them anew


class RelayGroup:
    """The relays of one process, one per configured sink, started when the first partition
    is attached (by the source, on the partition's worker: this process owns it)."""

    def __init__(self, sinks: Sequence[SinkSpec], store: Callable[[], OutboxStore], batch_size: int,
                 backoff_base_s: float, backoff_max_s: float, idle_s: float) -> None:
        names = [s.name for s in sinks]
        self.tails: dict[str, int] = {}   # partition -> last seq committed (single writer per key)
        self.relays = [Relay(spec, store, names, batch_size, backoff_base_s, backoff_max_s, idle_s, self.tails)
                       for spec in sinks]
        self._lock = threading.Lock()
        self._attached: set[str] = set()
        self._started = False
        self._watched = False   # `on_relay` told of every relay (once, however often they start)
        self.on_relay: Callable[[Relay], None] | None = None   # metrics and health watch each relay

    def attach(self, partition: str) -> None:
        """Start the relays with the first partition, and again for one attached after the
        last had ended here (`detach` stopped them: its worker's partition ended first)."""
        with self._lock:
            if not self._started:
                self._started = True
                for relay in self.relays:
                    if self.on_relay is not None and not self._watched:
                        self.on_relay(relay)
                    relay.start()
                self._watched = True
            self._attached.add(partition)
        for relay in self.relays:
            relay.attach(partition)

    def detach(self, partition: str) -> None:
        """A partition that ended here; when it was the last, the relays stop (after their batch)."""
        for relay in self.relays:
            relay.detach(partition)
        with self._lock:   # held while they stop: an `attach` meanwhile waits, then starts them again
            self._attached.discard(partition)
            if not self._attached and self._started:
                self._started = False
                self.stop()

    def notify(self, partition: str, last_seq: int, first_seq: int = 0, contents: Contents | None = None,
               handed: Handed = ()) -> None:
        """A commit wrote the partition's outbox up to `last_seq`: entries `first_seq`..`last_seq`
        holding `contents` (unknown when not given: every relay looks), `handed` those entries
        with their items (see HANDED_BATCHES)."""
        if last_seq > self.tails.get(partition, 0):
            self.tails[partition] = last_seq
        for relay in self.relays:
            relay.notify(partition, first_seq, last_seq, contents, handed)

    def passed(self, partition: str) -> int:
        """The seq every relay has passed in the partition (0 when one has not read it yet)."""
        seqs = [relay.passed(partition) for relay in self.relays]
        return min((s or 0 for s in seqs), default=2**62)

    def stop(self) -> None:
        for relay in self.relays:
            relay._stop.set()
            relay._wake.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for relay in self.relays:
            relay.stop(max(0.0, deadline - time.monotonic()))
