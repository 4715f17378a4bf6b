"""A commit whose reply is lost (the connection drops after Redis ran it) is retried, by
redis-py and by the engine's own backoff. The retry must find the commit applied, not report
state loss (the stored offset is then the new one, not the expected) nor write the outbox
entries twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from harness import ReplyLosingProxy, unique

from engine.operators.partition import Batch, PartitionWorker
from engine.rules.compiler import load_and_compile
from engine.rules.reload import LiveRules
from engine.state.outbox import ItemKind, OutboxEntry
from engine.state.redis import RedisStore
from engine.state.store import PartitionClock, StateLost
from engine.testing import MemoryLog


def entries(*names: str) -> list[OutboxEntry]:
    return [OutboxEntry(ItemKind.TRIGGER, "sent", f'{{"id": "{n}"}}'.encode()) for n in names]


def purchase(n: int) -> bytes:
    return (f'{{"event_id": "e{n}", "type": "purchase", "customer_id": "c{n}", "ts": {1_000 * n}, '
            f'"properties": {{}}}}').encode()


def proxied(redis_url: str) -> tuple[ReplyLosingProxy, str]:
    proxy = ReplyLosingProxy(redis_url.split("//", 1)[1].rsplit("/", 1)[0])
    return proxy, f"{proxy.url}/{redis_url.rsplit('/', 1)[1]}"


def test_the_engine_goes_on_after_a_commits_reply_is_lost(redis_url, tmp_path: Path, first_purchase_rules):
    """The reproduction: a partition worker commits through a connection that drops after Redis
    ran the commit. Before commit ids, its retry met its own offset, reported state loss and
    stopped the engine ("Restore Redis from its persistence ...")."""
    proxy, url = proxied(redis_url)
    try:
        live = LiveRules(tmp_path, load_and_compile(tmp_path), watch=False)
        log = MemoryLog("p-0", [purchase(n) for n in range(1, 7)])
        worker = PartitionWorker(log, RedisStore(url, unique("lostw")), live, 0)
        sent: list = []
        worker.on_outbox = lambda _name, _last, _first, _kinds, handed: sent.extend(e.seq for e, _ in handed)
        worker.process(Batch(worker, log.read(3), False, 100_000, False))
        proxy.lose_reply_to(b"EVALSHA")
        worker.process(Batch(worker, log.read(3), False, 100_000, False))
        assert proxy.lost == 1 and not worker.failed
        assert worker.committed_offset == 6 and worker.stats.redis_retries == 1
        assert sent == [1, 2, 3, 4, 5, 6]
        assert len(worker.store.read_outbox("p-0", 0, 100)[0]) == 6   # not written twice
    finally:
        proxy.close()


def test_a_commit_whose_reply_is_lost_is_applied_once(redis_url, redis_client):
    proxy, url = proxied(redis_url)
    try:
        prefix = unique("lost")
        store = RedisStore(url, prefix)
        clock = PartitionClock(1, 1, 0)
        store.commit("p-0", {"c1": b"\x80"}, 10, {"c1": None}, outbox=entries("a"), clock=clock, commit_id="x-1")
        proxy.lose_reply_to(b"EVALSHA")
        with pytest.raises(redis.ConnectionError):   # redis-py does not retry (the URL's client: no retries)
            store.commit("p-0", {"c1": b"\x81"}, 20, {"c1": 5}, expected_offset=10, outbox=entries("b", "c"),
                         clock=clock, commit_id="x-2")
        assert proxy.lost == 1
        tail = store.commit("p-0", {"c1": b"\x81"}, 20, {"c1": 5}, expected_offset=10, outbox=entries("b", "c"),
                            clock=clock, commit_id="x-2")   # the engine's retry
        assert (tail.last_seq, tail.length) == (3, 3)   # the reply the lost one carried
        assert store.load_offset("p-0") == 20
        assert [e.data for e in store.read_outbox("p-0", 0, 10)[0]] == [b'{"id": "a"}', b'{"id": "b"}',
                                                                        b'{"id": "c"}']
        # the same commit id again is the same commit: not applied twice, even with an unchanged offset
        for _ in range(2):
            store.commit("p-0", {}, 20, {}, expected_offset=20, outbox=entries("d"), clock=clock, commit_id="x-3")
        assert len(store.read_outbox("p-0", 0, 10)[0]) == 4
        # an engine that lost its reply is not another engine: a retry after someone else moved the
        # offset is refused; after a writer without ids (backfill) it is checked as a new commit
        redis_client.set(store.offset_key("p-0"), 99)
        with pytest.raises(StateLost):
            store.commit("p-0", {}, 20, {}, expected_offset=20, outbox=entries("d"), clock=clock, commit_id="x-3")
        redis_client.set(store.offset_key("p-0"), 20)
        store.commit("p-0", {"c1": b"\x82"}, None, {}, expected_offset=20)
        store.commit("p-0", {}, 20, {}, expected_offset=20, outbox=entries("d"), clock=clock, commit_id="x-3")
        assert len(store.read_outbox("p-0", 0, 10)[0]) == 5
    finally:
        proxy.close()


def test_a_commit_retried_after_it_was_applied_is_not_applied_again(redis_cluster_url, redis_url):
    """What the engine's own retry does when redis-py's gave up: the whole commit again, with its
    id. In a cluster a commit is two script calls on the partition's slot (and an MSET): the second
    call is not skipped for the first having run with the same id."""
    for store in (RedisStore(redis_cluster_url, unique("lostc"), cluster=True), RedisStore(redis_url, unique("lost"))):
        clock = PartitionClock(1, 1, 0)
        store.commit("p-0", {"c1": b"\x80"}, 10, {"c1": None}, outbox=entries("a"), clock=clock, commit_id="y-1")
        for _ in range(2):
            tail = store.commit("p-0", {"c1": b"\x81"}, 20, {"c1": 5}, expected_offset=10, outbox=entries("b"),
                                clock=clock, commit_id="y-2")
            assert (tail.last_seq, tail.length) == (2, 2)
            assert store.load_offset("p-0") == 20 and store.load_many_encoded(["c1"]) == {"c1": b"\x81"}
        assert store.due_customers("p-0", 10) == ["c1"]
        # another writer moved the offset since: the retry is refused, and writes nothing
        store.client.set(store.offset_key("p-0"), 77)
        store.save_many_encoded({"c1": b"\x99"})
        with pytest.raises(StateLost):
            store.commit("p-0", {"c1": b"\x81"}, 20, {"c1": 5}, expected_offset=10, outbox=entries("b"),
                         clock=clock, commit_id="y-2")
        assert store.load_many_encoded(["c1"]) == {"c1": b"\x99"}
        store.client.set(store.offset_key("p-0"), 20)
        if not store.cluster:
            continue
        # the first step applied, the second not (the engine crashed, or redis-py gave up, in
        # between): the retry skips the first (its entries are not written twice), applies the second
        store._run_commit("p-0", 20, None, None, {}, {}, entries("c"), None, [], "y-3", 1)
        tail = store.commit("p-0", {}, 30, {}, expected_offset=20, outbox=entries("c"), clock=clock, commit_id="y-3")
        assert store.load_offset("p-0") == 30
        assert (tail.last_seq, tail.length) == (3, 3)
        assert len(store.read_outbox("p-0", 0, 10)[0]) == 3


def test_a_commit_that_times_out_after_redis_ran_it_is_not_state_loss(redis_url, tmp_path: Path,
                                                                      first_purchase_rules):
    """The request gets through, the reply never comes, the connection stays open (a partition
    after the request, a server that stalls): redis-py's socket timeout (5 s by default) ends the
    wait and the engine retries on a new connection. Before commit ids the retry met the commit's
    own offset and stopped the engine for state loss; a commit slower than the timeout did too."""
    proxy, url = proxied(redis_url)
    try:
        live = LiveRules(tmp_path, load_and_compile(tmp_path), watch=False)
        log = MemoryLog("p-0", [purchase(n) for n in range(1, 7)])
        store = RedisStore(url, unique("stall"))
        worker = PartitionWorker(log, store, live, 0)
        worker.process(Batch(worker, log.read(3), False, 100_000, False))
        proxy.lose_reply_to(b"EVALSHA", close=False)
        done = threading.Event()
        threading.Thread(target=lambda: (worker.process(Batch(worker, log.read(3), False, 100_000, False)),
                                         done.set()), daemon=True).start()
        assert done.wait(30), "the commit still waits for a reply that never comes"
        assert proxy.lost == 1
        assert not worker.failed and worker.committed_offset == 6 and worker.stats.redis_retries >= 1
        assert len(store.read_outbox("p-0", 0, 100)[0]) == 6
    finally:
        proxy.close()
