"""The outbox and its relays on the test doubles (InMemoryStore, ListSink): entries numbered in
commit order and written with the states or not at all; a relay takes only what its sink asks
for, at most a batch at a time, retries transient failures, dead-letters refusals per item, and
after a crash resumes from its cursor, re-sending at most the batch it had in flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec
import pytest

from engine.actions.trigger import Status, Trigger
from engine.events.decode import DeadLetter
from engine.operators.outbox import Relay, RelayGroup, RelayState, SinkDeadLetter, SinkSpec
from engine.state.customer import CustomerState, encode_state
from engine.state.outbox import ItemKind, decode_item, encode_items
from engine.state.store import StateLost
from engine.testing import InMemoryStore, ListSink

P = "events-0"


def trigger(n: int, status: Status = Status.SENT) -> Trigger:
    return Trigger(f"t{n}", "r", f"c{n}", "a", "email", status, None if status is Status.SENT else "x",
                   "2026-01-01T00:00:00.000Z", f"e{n}")


def fill(store: InMemoryStore, items: list, per_commit: int = 7) -> None:
    offset = store.load_offset(P)
    for i in range(0, len(items), per_commit):
        store.commit(P, {}, (offset or 0) + 1, {}, expected_offset=offset, outbox=encode_items(items[i:i + per_commit]))
        offset = (offset or 0) + 1


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def relay(store: InMemoryStore, sink: ListSink, *, statuses: frozenset[str] | None = None, batch_size: int = 5,
          sinks: tuple[str, ...] = ("list",), dead_letter_path: Path | None = None) -> Relay:
    spec = SinkSpec("list", lambda: sink, ItemKind.TRIGGER, statuses, str(dead_letter_path) if dead_letter_path else None)
    r = Relay(spec, lambda: store, sinks, batch_size, backoff_base_s=0.001, backoff_max_s=0.005, idle_s=0.01)
    r.attach(P)
    return r


def test_commit_numbers_entries_in_order_and_writes_them_with_the_states_or_not_at_all() -> None:
    store = InMemoryStore()
    items = [trigger(1), DeadLetter("not JSON", "x@1", "{"), trigger(2, Status.HELD_OUT)]
    tail = store.commit(P, {"c1": encode_state(CustomerState(last_ts=1))}, 3, {}, outbox=encode_items(items))
    assert tail is not None and (tail.last_seq, tail.length) == (3, 3)
    assert store.commit(P, {}, 4, {}, expected_offset=3) is None    # no entries: nothing to say
    entries, tail = store.read_outbox(P, 0, 10)
    assert [e.seq for e in entries] == [1, 2, 3] and [decode_item(e) for e in entries] == items
    assert [(e.kind, e.status) for e in entries] == [(ItemKind.TRIGGER, "sent"), (ItemKind.DEAD_LETTER, ""),
                                                      (ItemKind.TRIGGER, "held_out")]
    assert store.read_outbox(P, 2, 10)[0] == entries[2:] and store.read_outbox(P, 0, 1)[0] == entries[:1]
    with pytest.raises(StateLost):
        store.commit(P, {}, 9, {}, expected_offset=1, outbox=encode_items([trigger(3)]))
    assert store.outbox_tail(P) == tail   # the refused commit wrote no entry


def test_the_outbox_is_trimmed_below_the_lowest_cursor_of_the_configured_sinks() -> None:
    store = InMemoryStore()
    fill(store, [trigger(n) for n in range(10)])
    store.save_cursor(P, "kafka", 6, ["kafka", "webhook"])
    assert store.outbox_tail(P).length == 10          # the webhook has passed nothing
    store.save_cursor(P, "webhook", 4, ["kafka", "webhook"])
    assert store.outbox_tail(P).length == 6 and store.read_outbox(P, 0, 1)[0][0].seq == 5
    store.save_cursor(P, "webhook", 10, ["kafka"])    # webhook no longer configured: only kafka counts
    assert store.outbox_tail(P).length == 4 and store.load_cursors(P) == {"kafka": 6, "webhook": 10}
    fill(store, [trigger(10)])
    assert store.outbox_tail(P).last_seq == 11        # numbering goes on after a trim
    entries, tail = store.advance(P, "kafka", 8, ["kafka"], 2)   # save, trim and read on, in one call
    assert [e.seq for e in entries] == [9, 10] and tail == store.outbox_tail(P) and tail.length == 3


def test_a_relay_delivers_what_its_sink_asks_for_and_its_cursor_passes_the_rest() -> None:
    store = InMemoryStore()
    items = [trigger(n, Status.SUPPRESSED if n % 3 else Status.SENT) for n in range(30)]
    items.insert(5, DeadLetter("bad", "x@5", "{"))
    fill(store, items)
    out: list = []
    sizes: list[int] = []

    class Counting(ListSink):
        def deliver(self, batch):
            sizes.append(len(batch))
            return super().deliver(batch)

    r = relay(store, Counting(out), statuses=frozenset({"sent"}), batch_size=4)
    r.start()
    wait_for(lambda: r.passed(P) == 31)
    r.stop()
    assert [t.trigger_id for t in out] == [f"t{n}" for n in range(0, 30, 3)]   # in order, sent only
    assert max(sizes) == 4 and sum(sizes) == 10
    assert store.load_cursors(P) == {"list": 31} and store.outbox_tail(P).length == 0
    assert r.stats.delivered == 10 and r.lag() == {P: 0} and r.stats.state is RelayState.STOPPED


def test_transient_failures_are_retried_until_delivered_and_refusals_dead_lettered(tmp_path: Path) -> None:
    store = InMemoryStore()
    fill(store, [trigger(n) for n in range(12)])
    out: list = []
    sink = ListSink(out, refuse=lambda t: "HTTP 400 Bad Request" if t.trigger_id in ("t3", "t8") else None,
                    fail_next=5)
    dead = tmp_path / "list-dead-letters.jsonl"
    r = relay(store, sink, dead_letter_path=dead)
    r.start()
    wait_for(lambda: r.passed(P) == 12)
    r.stop()
    assert [t.trigger_id for t in out] == [f"t{n}" for n in range(12) if n not in (3, 8)]   # none lost, once each
    letters = [msgspec.json.decode(line, type=SinkDeadLetter) for line in dead.read_bytes().splitlines()]
    assert [msgspec.json.decode(d.item, type=Trigger).trigger_id for d in letters] == ["t3", "t8"]
    assert {(d.sink, d.reason, d.partition, d.kind) for d in letters} == {("list", "HTTP 400 Bad Request", P,
                                                                           ItemKind.TRIGGER)}
    assert letters[0].attempts == 6 and letters[1].attempts == 1    # after 5 transient failures, then refused
    assert (r.stats.retries, r.stats.dead_lettered, r.stats.delivered) == (25, 2, 10)
    assert r.stats.waiting_since is None and r.stats.last_error is None


class Crash(BaseException):
    """Ends the relay's thread at once, as kill -9 ends a process: nothing after it runs."""


def test_a_relay_that_crashed_resumes_from_its_cursor_and_re_sends_at_most_its_batch() -> None:
    store = InMemoryStore()
    fill(store, [trigger(n) for n in range(40)])
    out: list = []
    calls = [0]

    class CrashesOnThirdBatch(ListSink):
        def deliver(self, batch):
            failures = super().deliver(batch)
            calls[0] += 1
            if calls[0] == 3:
                raise Crash()     # delivered, cursor not saved
            return failures

    first = relay(store, CrashesOnThirdBatch(out), batch_size=6)
    threading.excepthook, hook = (lambda args: None), threading.excepthook   # the crash is the point
    try:
        first.start()
        first._thread.join(5)
    finally:
        threading.excepthook = hook
    assert not first._thread.is_alive() and len(out) == 18 and store.load_cursors(P) == {"list": 12}

    second = relay(store, ListSink(out), batch_size=6)
    second.start()
    wait_for(lambda: second.passed(P) == 40)
    second.stop()
    ids = [t.trigger_id for t in out]
    assert set(ids) == {f"t{n}" for n in range(40)}
    assert len(ids) - len(set(ids)) == 6       # exactly the batch in flight, sent again
    assert ids[18:24] == ids[12:18]


def test_a_stop_leaves_a_failing_batch_to_the_next_start() -> None:
    store = InMemoryStore()
    fill(store, [trigger(n) for n in range(3)])
    sink = ListSink([], fail_next=10**9)
    r = relay(store, sink)
    r.start()
    wait_for(lambda: r.stats.retries >= 3)
    assert r.stats.state is RelayState.RETRYING and r.stats.last_error == "down" and r.lag() == {P: 3}
    r.stop()
    assert not r._thread.is_alive() and store.load_cursors(P) == {}


def test_the_group_starts_relays_with_the_first_partition_and_stops_them_with_the_last() -> None:
    store = InMemoryStore()
    fill(store, [trigger(n) for n in range(3)])
    a, b = [], []
    group = RelayGroup([SinkSpec("a", lambda: ListSink(a)), SinkSpec("b", lambda: ListSink(b))], lambda: store,
                       batch_size=2, backoff_base_s=0.001, backoff_max_s=0.005, idle_s=5.0)
    group.attach(P)
    wait_for(lambda: group.passed(P) == 3)
    fill(store, [trigger(3)])
    group.notify(P, 4)             # a commit wakes the relays at once (idle_s is 5 s)
    wait_for(lambda: group.passed(P) == 4, timeout_s=1.0)
    assert len(a) == len(b) == 4 and store.outbox_tail(P).length == 0
    group.detach(P)
    assert all(not r._thread.is_alive() for r in group.relays)


def test_an_outbox_that_lost_entries_stops_the_run() -> None:
    from engine.operators.shutdown import SHUTDOWN

    store = InMemoryStore()
    fill(store, [trigger(n) for n in range(4)])
    r = relay(store, ListSink([]))
    r._tails[P] = 9          # the commits said 9 entries: Redis was flushed or failed over since
    try:
        r.start()
        r._thread.join(5)
        assert not r._thread.is_alive() and SHUTDOWN.fatal and "lost data" in SHUTDOWN.reason
    finally:
        SHUTDOWN.reset()


def test_a_commit_to_one_partition_makes_the_relay_read_that_partition_only() -> None:
    """One outbox read per commit, not one per attached partition: each read takes the
    interpreter from the dataflow's thread (latency through Kafka, issue 11)."""
    reads: list[str] = []

    class Counting(InMemoryStore):
        def read_outbox(self, partition: str, after: int, count: int):
            reads.append(partition)
            return super().read_outbox(partition, after, count)

    store = Counting()
    out: list = []
    r = Relay(SinkSpec("list", lambda: ListSink(out)), lambda: store, ("list",), 5, backoff_base_s=0.001,
              backoff_max_s=0.005, idle_s=5.0)
    partitions = [f"events-{i}" for i in range(4)]
    for p in partitions:
        r.attach(p)
    r.start()
    wait_for(lambda: all(r.passed(p) == 0 for p in partitions))   # the first look reads every partition
    reads.clear()
    store.commit("events-2", {}, 1, {}, outbox=encode_items([trigger(1)]))
    r.notify("events-2")
    wait_for(lambda: len(out) == 1, timeout_s=1.0)
    time.sleep(0.05)
    r.stop()
    assert set(reads) == {"events-2"}


def test_a_commit_with_nothing_for_a_sink_is_passed_without_a_read() -> None:
    """Issue 11, latency: the dead letters' relay read the outbox after every commit to skip its
    triggers (a Redis round trip and the interpreter, twice per commit). Told what a commit holds,
    it moves its cursor past commits without dead letters unread, saves it now and then (so the
    outbox is trimmed), and still reads the commits that hold something for it."""
    reads: dict[str, int] = {}   # relay thread -> outbox reads

    class Counting(InMemoryStore):
        def read_outbox(self, partition: str, after: int, count: int):
            name = threading.current_thread().name
            reads[name] = reads.get(name, 0) + 1
            return super().read_outbox(partition, after, count)

        def advance(self, partition, sink, seq, sinks, count):
            name = threading.current_thread().name
            reads[name] = reads.get(name, 0) + 1
            return super().advance(partition, sink, seq, sinks, count)

    store = Counting()
    dead: list = []
    triggers: list = []
    group = RelayGroup([SinkSpec("kafka", lambda: ListSink(triggers)),
                        SinkSpec("dead", lambda: ListSink(dead), ItemKind.DEAD_LETTER)], lambda: store,
                       batch_size=50, backoff_base_s=0.001, backoff_max_s=0.005, idle_s=0.05)
    dead_relay = group.relays[1]
    group.attach(P)
    wait_for(lambda: group.passed(P) == 0)
    commit = _Commits(store, group, hand=False)

    reads.clear()
    started = time.monotonic()
    for n in range(0, 200, 2):
        commit([trigger(n), trigger(n + 1)])
        time.sleep(0.001)
    wait_for(lambda: len(triggers) == 200)
    wait_for(lambda: dead_relay.passed(P) == 200)          # passed unread, at its next look
    wait_for(lambda: store.load_cursors(P).get("dead") == 200)   # and saved: the outbox is trimmed
    wait_for(lambda: store.outbox_tail(P).length == 0)
    looks = (time.monotonic() - started) / 0.05
    dead_reads = reads.get("relay-dead", 0)
    commit([trigger(200), DeadLetter("not JSON", "x@9", "{")])
    wait_for(lambda: len(dead) == 1 and group.passed(P) == 202)
    group.detach(P)
    # the kafka relay reads after about every commit; the dead letters' relay about once per look
    assert reads["relay-kafka"] >= 50 and dead_reads <= 2 * looks + 4, (reads, looks)


def test_a_batch_that_read_everything_commits_at_once_and_a_backlog_waits_for_the_interval(tmp_path: Path,
                                                                                          first_purchase_rules: Path) -> None:
    """Issue 11, latency: a trigger leaves only once committed. A batch that drained the log
    commits its triggers at once; a full batch (more records waiting) shares a commit per
    EAGER_COMMIT_S with the next ones."""
    from engine.operators.partition import Batch, PartitionWorker
    from engine.rules.compiler import load_and_compile
    from engine.rules.reload import LiveRules
    from engine.testing import MemoryLog

    rules = load_and_compile(tmp_path)
    lines = [b'{"event_id": "p%d", "type": "purchase", "customer_id": "c%d", "ts": %d, "properties": {}}'
             % (i, i, 1_000 + i) for i in range(4)]
    store = InMemoryStore()
    worker = PartitionWorker(MemoryLog("p-0", lines), store, LiveRules(tmp_path, rules, watch=False), 0)
    worker.process(Batch(worker, worker.event_log.read(1), False, 10_000, False))
    assert worker.stats.commits == 1 and not worker.outbox            # the first commit: nothing before it
    worker.process(Batch(worker, worker.event_log.read(1), False, 10_000, False, backlog=True))
    assert worker.stats.commits == 1 and len(worker.outbox) == 1      # a backlog's batch within the interval waits
    worker.process(Batch(worker, worker.event_log.read(1), False, 10_000, False))
    assert worker.stats.commits == 2 and not worker.outbox            # it read everything: committed at once
    assert store.outbox_tail("p-0").last_seq == 3


def test_a_partition_whose_read_failed_is_read_again_while_others_keep_the_relay_busy() -> None:
    """The relay looks at every partition at least every `idle_s`: a read that failed (Redis
    gone for a moment) is not left until that partition's next commit, even when commits to
    the other partitions never let the relay sit idle."""
    import redis

    failed: list[str] = []

    class Flaky(InMemoryStore):
        def read_outbox(self, partition: str, after: int, count: int):
            if partition == "events-1" and not failed:
                failed.append(partition)
                raise redis.ConnectionError("gone for a moment")
            return super().read_outbox(partition, after, count)

    store = Flaky()
    store.commit("events-1", {}, 1, {}, outbox=encode_items([trigger(1)]))
    out: list = []
    r = Relay(SinkSpec("list", lambda: ListSink(out)), lambda: store, ("list",), 5, backoff_base_s=0.001,
              backoff_max_s=0.004, idle_s=0.2)
    r.attach("events-0")
    r.attach("events-1")
    r.start()
    busy = threading.Event()

    def commits_to_the_other_partition() -> None:
        n, offset = 10, None
        while not busy.is_set():
            store.commit("events-0", {}, n, {}, expected_offset=offset, outbox=encode_items([trigger(n)]))
            offset, n = n, n + 1
            r.notify("events-0")
            time.sleep(0.005)

    t = threading.Thread(target=commits_to_the_other_partition)
    t.start()
    try:
        wait_for(lambda: any(x.trigger_id == "t1" for x in out), timeout_s=2.0)
    finally:
        busy.set()
        t.join()
        r.stop()
    assert failed == ["events-1"]


def test_a_commit_after_the_relays_read_ahead_is_not_missed() -> None:
    """The read a cursor save brings back is stale once a later commit is known: used anyway it
    found nothing, the commit's wake-up was spent, and the entry waited for the next look at
    every partition (`idle_s`). Here partition B's sink is slow while A gets a second commit."""
    out: list = []
    slow = threading.Event()

    class SlowOnB(ListSink):
        def deliver(self, items):
            if any(t.customer_id == "c-b" for t in items):
                slow.set()
                time.sleep(0.3)
            return super().deliver(items)

    store = InMemoryStore()
    group = RelayGroup([SinkSpec("list", lambda: SlowOnB(out))], lambda: store, batch_size=5,
                       backoff_base_s=0.001, backoff_max_s=0.005, idle_s=5.0)

    def commit(partition: str, offset: int, t: Trigger) -> None:
        tail = store.commit(partition, {}, offset, {}, expected_offset=offset - 1 if offset > 1 else None,
                            outbox=encode_items([t]))
        assert tail is not None
        group.notify(partition, tail.last_seq)

    commit("a", 1, trigger(1))
    commit("b", 1, Trigger("tb", "r", "c-b", "a", "email", Status.SENT, None, "2026-01-01T00:00:00.000Z", "eb"))
    group.attach("a")   # the first look: a's batch (its cursor saved, the read after it kept), then b's, slowly
    group.attach("b")
    assert slow.wait(1.0)
    commit("a", 2, trigger(2))   # while the relay is busy with b: its read-ahead of a is stale now
    wait_for(lambda: any(t.trigger_id == "t2" for t in out), timeout_s=1.5)
    group.detach("a")
    group.detach("b")


class _Commits:
    """Commits of items to partition P's outbox, told to the relay group as a live worker tells
    it: the entries' seqs and contents, and (`hand`) the entries with their items."""

    def __init__(self, store: InMemoryStore, group: RelayGroup, hand: bool = True) -> None:
        self.store, self.group, self.hand, self.offset = store, group, hand, None

    def __call__(self, items: list, hand: bool | None = None) -> None:
        entries = encode_items(items)
        tail = self.store.commit(P, {}, (self.offset or 0) + 1, {}, expected_offset=self.offset, outbox=entries)
        self.offset = (self.offset or 0) + 1
        assert tail is not None
        first = tail.last_seq - len(entries) + 1
        handed = ([(msgspec.structs.replace(e, seq=first + i), item) for i, (e, item) in enumerate(zip(entries, items))]
                  if (self.hand if hand is None else hand) else [])
        self.group.notify(P, tail.last_seq, first, frozenset((e.kind, e.status) for e in entries), handed)


class _CountingReads(InMemoryStore):
    """An in-memory store counting the relays' reads of the outbox (and cursor advances)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = {"read": 0}

    def read_outbox(self, partition: str, after: int, count: int):
        self.reads["read"] += 1
        return super().read_outbox(partition, after, count)

    def advance(self, partition, sink, seq, sinks, count):
        self.reads["read"] += 1
        return super().advance(partition, sink, seq, sinks, count)


def test_entries_handed_over_by_their_commit_go_out_unread_and_a_relay_behind_them_reads_the_outbox() -> None:
    """Issue 15, live CPU: a relay read every commit's entries back from Redis and decoded them,
    right after the commit in the same process had them in hand. Handed over with `notify`, they
    are delivered as they are (the very item objects, no read of the outbox); entries the relay
    was not handed (written before it started, or past a gap) are read from the outbox as before,
    so it delivers everything, in order, once."""
    store = _CountingReads()
    reads = store.reads
    out: list = []
    group = RelayGroup([SinkSpec("list", lambda: ListSink(out))], lambda: store, batch_size=5,
                       backoff_base_s=0.001, backoff_max_s=0.005, idle_s=0.05)
    commit = _Commits(store, group)

    before = [trigger(n) for n in range(12)]
    commit(before, hand=False)          # before the relay started: only the outbox has them
    group.attach(P)
    wait_for(lambda: len(out) == 12)
    reads["read"] = 0
    handed = [trigger(n) for n in range(12, 112)]
    for i in range(0, 100, 4):
        commit(handed[i:i + 4])
        time.sleep(0.002)
    wait_for(lambda: len(out) == 112)
    handed_reads = reads["read"]
    commit([trigger(112)], hand=False)  # a commit not handed over: a gap
    commit([trigger(113), trigger(114)])
    wait_for(lambda: len(out) == 115)
    group.detach(P)
    assert [t.trigger_id for t in out] == [f"t{n}" for n in range(115)]   # all, in order, once
    assert all(a is b for a, b in zip(out[12:112], handed))               # the objects handed over, not decoded
    assert handed_reads <= 3, handed_reads                                 # 25 commits, 100 triggers: next to no read
    assert store.load_cursors(P)["list"] == 115 and store.outbox_tail(P).length == 0   # cursor saved, outbox trimmed


def test_a_filtered_sinks_relay_behind_uses_what_it_was_handed_across_a_commit_with_nothing_for_it() -> None:
    """Review of issue 15: the relay kept handed entries only while their seqs ran on, so a
    commit holding none of a filtered sink's statuses (passed as a skip, not handed) cleared what
    a relay still behind had been handed, and it read all of it back from the outbox. Entries on
    both sides of such a commit are delivered as handed: no read, the very objects, in order."""
    store = _CountingReads()
    reads = store.reads
    out: list = []
    group = RelayGroup([SinkSpec("list", lambda: ListSink(out), statuses=frozenset({"sent"}))], lambda: store,
                       batch_size=50, backoff_base_s=0.001, backoff_max_s=0.005, idle_s=0.05)
    commit = _Commits(store, group)

    sent = [trigger(0), trigger(1), trigger(4)]
    commit(sent[:2])                                                  # seqs 1-2: for the sink
    commit([trigger(2, Status.SUPPRESSED), trigger(3, Status.HELD_OUT)])   # seqs 3-4: nothing for it
    commit([sent[2], trigger(5, Status.SUPPRESSED)])                 # seqs 5-6: one for it
    group.attach(P)                                                   # the relay starts behind all three
    wait_for(lambda: group.passed(P) == 6)
    group.detach(P)
    assert [t.trigger_id for t in out] == ["t0", "t1", "t4"] and all(a is b for a, b in zip(out, sent))
    assert reads["read"] == 0, reads
    assert store.load_cursors(P)["list"] == 6


def commit_and_notify(store: InMemoryStore, group: RelayGroup, items: list) -> None:
    """A commit of `items` to the outbox of P and its notify, with the entries handed over, as
    the partition worker does."""
    offset = store.load_offset(P)
    entries = encode_items(items)
    tail = store.commit(P, {}, (offset or 0) + 1, {}, expected_offset=offset, outbox=entries)
    assert tail is not None
    first = tail.last_seq - len(entries) + 1
    group.notify(P, tail.last_seq, first, frozenset((e.kind, e.status) for e in entries),
                 [(msgspec.structs.replace(e, seq=first + i), item) for i, (e, item) in enumerate(zip(entries, items))])


def test_relays_start_again_for_a_partition_attached_after_the_last_one_ended() -> None:
    """Found in review: the last partition's end stopped the relays for good, so a partition
    attached after it in the same process (another worker's, with --workers) was never relayed
    and a bounded run never ended."""
    store, out = InMemoryStore(), []
    group = RelayGroup([SinkSpec("list", lambda: ListSink(out))], lambda: store, 5, 0.001, 0.005, 0.02)
    group.attach(P)
    commit_and_notify(store, group, [trigger(1), trigger(2)])
    wait_for(lambda: group.passed(P) == 2)
    group.detach(P)   # the last partition here ended: the relays stop
    assert not group.relays[0]._thread.is_alive()
    group.attach(P)
    commit_and_notify(store, group, [trigger(3), trigger(4)])
    wait_for(lambda: group.passed(P) == 4)
    assert [t.trigger_id for t in out] == ["t1", "t2", "t3", "t4"] and store.load_cursors(P) == {"list": 4}
    group.stop()


def test_a_cursor_moved_by_skips_alone_is_saved_when_its_partition_ends() -> None:
    """Found in review: a relay that passes commits holding nothing for its sink (the dead
    letters' relay, commits of triggers only) saves that cursor at most every SKIP_SAVE_S and
    once at the end; the end detached the partition first and forgot the cursor, so it was never
    saved and the outbox was never trimmed below it."""
    store, out, dead = InMemoryStore(), [], []
    group = RelayGroup([SinkSpec("list", lambda: ListSink(out)),
                        SinkSpec("dead_letters", lambda: ListSink(dead), ItemKind.DEAD_LETTER)],
                       lambda: store, 20, 0.001, 0.005, 0.05)
    group.attach(P)
    wait_for(lambda: all(r.passed(P) is not None for r in group.relays))   # cursors loaded: skips count from here
    commit_and_notify(store, group, [trigger(0)])
    wait_for(lambda: store.load_cursors(P).get("dead_letters") == 1)   # the first skip is saved at once
    for n in range(1, 5):   # the next ones within SKIP_SAVE_S: saved later, or at the end
        commit_and_notify(store, group, [trigger(n)])
    wait_for(lambda: group.passed(P) == 5)
    group.detach(P)   # what a partition's end does on a stop
    assert store.load_cursors(P) == {"list": 5, "dead_letters": 5}
    assert store.outbox_tail(P).length == 0   # trimmed below both
