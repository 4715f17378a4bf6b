"""The Redis store on a real 3-primary Redis Cluster (`scripts/services.sh start --redis-cluster`),
and `triggers run` with its state there (issue 15).

What holds today: every key of a customer shares one slot (its id is the hash tag), every key of
a partition shares another (offset, deadline index, outbox, cursors, clock, population counts),
so the outbox scripts run in the cluster; a live run gives the backtest's triggers and states.
A cluster commit is not atomic (it writes slot after slot): the outbox first, the states (each
stamped with the offset it holds every event before, `CustomerState.fence`), the offset last;
the kill -9 test of `test_crash.py` runs against this cluster too."""

from __future__ import annotations

import msgspec
import pytest
import redis
from harness import ROOT, create_topic, produce, read_topic, run_engine, trigger_key, unique, write_config

from engine.actions.trigger import Status, Trigger
from engine.core.times import now_ms
from engine.events.decode import EventDecoder, read_jsonl
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile
from engine.state.customer import CustomerState, encode_state
from engine.state.outbox import decode_item, encode_items
from engine.state.redis import RedisStore
from engine.state.store import PartitionClock, StateLost

SAMPLE = ROOT / "examples" / "sample-events.jsonl"


def test_the_store_commits_reads_and_relays_on_a_real_cluster(redis_cluster_url):
    store = RedisStore(redis_cluster_url, unique("cl"), cluster=True)
    nodes = {store.client.keyslot(store.state_key(f"c{i}")) for i in range(50)}
    assert len(nodes) > 10   # customers are spread over slots (and so over the three primaries)
    states = {f"c{i}": encode_state(CustomerState(last_ts=i)) for i in range(50)}
    items = [Trigger(f"t{i}", "r", f"c{i}", "a", "email", Status.SENT, None, "2026-01-01T00:00:00.000Z", f"e{i}")
             for i in range(5)]
    tail = store.commit("events-0", states, 7, {"c1": 100, "c2": None}, outbox=encode_items(items),
                        clock=PartitionClock(5, 6, 7), population={("email", 20000): [1] + [0] * 23})
    assert tail is not None and tail.last_seq == 5
    assert {c: encode_state(s) for c, s in store.load_many(list(states)).items()} == states
    assert store.load_offset("events-0") == 7 and store.load_clock("events-0") == PartitionClock(5, 6, 7)
    assert store.due_customers("events-0", 1000) == ["c1"]
    assert store.load_population(["events-0"], [20000]) == {("email", 20000): [1] + [0] * 23}
    assert store.load_clocks(["events-0", "events-1"]) == {"events-0": PartitionClock(5, 6, 7)}
    entries, _ = store.read_outbox("events-0", 0, 10)
    assert [decode_item(e) for e in entries] == items
    entries, tail = store.advance("events-0", "kafka", 3, ["kafka"], 10)   # the relays' script: one slot
    assert [e.seq for e in entries] == [4, 5] and tail.length == 2
    assert store.load_offsets() == {"events-0": 7}
    store.close()


def test_a_cluster_commit_writes_the_partitions_keys_in_one_round_trip_after_the_states(redis_cluster_url,
                                                                                     monkeypatch):
    """Review of issue 15: after the states a cluster commit set the population, the deadline index
    (ZADD, ZREM), the clock and the offset one round trip each, and the outbox one XADD per entry.
    Then each group was one pipeline; now the first and the last write are the commit script on
    the partition's slot (its keys share a hash tag), atomic: the offset's check with the outbox,
    and after the states, checked again, the rest with the offset. A round trip is one write to a
    node's socket."""
    store = RedisStore(redis_cluster_url, unique("rt"), cluster=True)
    states = {f"c{i}": encode_state(CustomerState(last_ts=i)) for i in range(50)}
    nodes = {store.client.get_node_from_key(store.state_key(c)).name for c in states}
    items = [Trigger(f"t{i}", "r", f"c{i}", "a", "email", Status.SENT, None, "2026-01-01T00:00:00.000Z", f"e{i}")
             for i in range(5)]
    # the first commit (no offset stored before it) opens the connections and loads the script:
    # those round trips are not counted
    store.commit("events-1", states, 1, {}, outbox=encode_items(items[:1]), clock=PartitionClock(1, 1, 1))
    written: list[list[bytes]] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        packed = command if isinstance(command, list) else [command]
        chunks = [b"".join(p) if isinstance(p, (list, tuple)) else bytes(p) for p in packed]
        if b"SETINFO" not in chunks[0][:40] and b"HELLO" not in chunks[0][:20]:
            written.append(chunks)
        return send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    tail = store.commit("events-1", states, 8, {"c1": 100, "c2": None}, unindex=["c3"], expected_offset=1,
                        outbox=encode_items(items), clock=PartitionClock(5, 6, 8),
                        population={("email", 20000): [1] + [0] * 23})
    monkeypatch.undo()
    # the check with the outbox's entries, the states (one MSET per node), the rest with the offset
    assert len(written) == 1 + len(nodes) + 1, [w[0][:60] for w in written]
    first, last = b"".join(written[0]), b"".join(written[-1])
    assert first.startswith(b"*") and b"EVALSHA" in first and b"MSET" not in first
    assert b"EVALSHA" in last and store.offset_key("events-1").encode() in last
    # population, index (ZADD c1, ZREM c3), clock and offset 8 all travel in that last, atomic write
    assert all(part in last for part in (b"email:0", b"c1", b"c3", store.clock_key("events-1").encode(),
                                         store.deadline_key("events-1").encode(), b"$1\r\n8\r\n"))
    assert all(b"MSET" in b"".join(w) for w in written[1:-1])
    assert tail is not None and tail.last_seq == 6
    assert store.load_offset("events-1") == 8 and store.load_clock("events-1") == PartitionClock(5, 6, 8)
    assert store.due_customers("events-1", 1000) == ["c1"]
    assert store.load_population(["events-1"], [20000]) == {("email", 20000): [1] + [0] * 23}
    assert [decode_item(e) for e in store.read_outbox("events-1", 0, 10)[0]] == items[:1] + items
    assert {c: encode_state(s) for c, s in store.load_many(list(states)).items()} == states
    store.close()


def test_a_cluster_commit_writes_nothing_after_the_states_once_another_engine_took_the_partition(
        redis_cluster_url, monkeypatch):
    """The partition's other keys were a pipeline written whatever happened after the offset's
    check: an engine that took the partition over while this one wrote its states (a rebalance,
    a second replica) got its index, clock and offset overwritten by the older engine. The last
    write is checked and atomic now: it writes nothing and the older engine learns it lost the
    partition (`StateLost`), as on a single node."""
    store = RedisStore(redis_cluster_url, unique("tk"), cluster=True)
    store.commit("events-2", {"c0": encode_state(CustomerState(last_ts=1))}, 5, {"c0": 50},
                 clock=PartitionClock(1, 1, 5))
    save = store.save_many_encoded

    def taken_over_meanwhile(images):
        save(images)
        store.client.set(store.offset_key("events-2"), 40)   # the other engine's commit

    monkeypatch.setattr(store, "save_many_encoded", taken_over_meanwhile)
    with pytest.raises(StateLost) as lost:
        store.commit("events-2", {"c1": encode_state(CustomerState(last_ts=2))}, 9, {"c1": 90}, expected_offset=5,
                     clock=PartitionClock(2, 2, 9), population={("email", 20000): [3] + [0] * 23})
    assert lost.value.found == 40
    assert store.load_offset("events-2") == 40                      # the other engine's, untouched
    assert store.load_clock("events-2") == PartitionClock(1, 1, 5)
    assert store.due_customers("events-2", 1000) == ["c0"]          # no entry of the older engine's
    assert store.load_population(["events-2"], [20000]) == {}
    store.close()


def test_live_on_a_real_cluster_gives_the_backtests_triggers_and_states(kafka_bootstrap, redis_cluster_url, tmp_path):
    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    topic = create_topic(kafka_bootstrap, unique("cluster-events"))
    produce(kafka_bootstrap, topic, lines)
    prefix, sink = unique("cluster"), unique("cluster-triggers")
    config = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_cluster_url, prefix=prefix,
                          sink_topic=sink, dead_topic=unique("cluster-dead"))
    config.write_text(config.read_text().replace(f'prefix = "{prefix}"', f'prefix = "{prefix}"\ncluster = true'))
    run_engine(config)
    expected: list = []
    replay = Replay(load_and_compile(ROOT / "rules"), expected.extend, until=now_ms())
    replay.feed(EventDecoder().decode_batch((raw, "t") for raw in lines)[0])
    replay.finish()
    got = read_topic(kafka_bootstrap, sink)
    assert len(got) > 500
    assert sorted(map(trigger_key, got)) == sorted(map(trigger_key, [msgspec.to_builtins(t) for t in expected]))
    live = RedisStore(redis_cluster_url, prefix, cluster=True).load_many(list(replay.store.states))
    assert all(s.fence > 0 for s in live.values())   # each state says which offset it holds every event before
    assert {c: encode_state(msgspec.structs.replace(s, fence=0)) for c, s in live.items()} == {
        c: encode_state(s) for c, s in replay.store.states.items()}
