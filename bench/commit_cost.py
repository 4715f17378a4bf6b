"""What a partition's commit costs Redis: the commit script against the same writes as plain
commands in one MULTI/EXEC, interleaved rounds, one run.

    python -m bench.commit_cost [--states 1000] [--entries 300] [--commits 30] [--rounds 2]

A commit of a backlog's batch writes about a thousand states and a few hundred outbox entries.
Redis shares this machine's two cores with the engine, so the CPU it spends on a commit is the
engine's loss too. Redis's own counters (INFO commandstats, reset before each round) give it:
EVALSHA's time holds the commands the script calls plus the script's own work (its arguments
made Lua strings, and back); EXEC's holds the commands it runs. The MULTI/EXEC variant writes
the same keys but checks nothing (no offset check, no outbox numbering): it is the floor a
commit without a script could reach, not a commit the engine could make as it is.
Needs the project's Redis (`scripts/services.sh start redis`); uses db 9, deletes its keys.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import redis

from engine.state.outbox import ItemKind, OutboxEntry
from engine.state.redis import RedisStore
from engine.state.store import PartitionClock

URL = "redis://127.0.0.1:6379/9"


def one_round(client: redis.Redis, mode: str, states: int, entries: int, commits: int) -> tuple[float, float, float]:
    """(wall ms, Redis ms, Redis ms in the commands themselves) per commit."""
    prefix = f"cc{uuid.uuid4().hex[:6]}"
    store = RedisStore(URL, prefix)
    image = os.urandom(350)   # about a bundled-rules state (bench/README: mean 346 bytes)
    items = [OutboxEntry(ItemKind.TRIGGER, "sent", os.urandom(400)) for _ in range(entries)]
    client.config_resetstat()
    started = time.perf_counter()
    offset = None
    for i in range(commits):
        images = {f"c{i}-{j}": image for j in range(states)}
        due = {cid: 1_000 + j for j, cid in enumerate(images)}
        if mode == "script":
            store.commit("p-0", images, i + 1, due, expected_offset=offset, outbox=items,
                         clock=PartitionClock(1, 1, 0), commit_id=f"b-{i}")
        else:
            pipe = client.pipeline(transaction=True)
            pipe.mset({store.state_key(cid): value for cid, value in images.items()})
            pipe.zadd(store.deadline_key("p-0"), due)
            for k, e in enumerate(items):
                pipe.xadd(store.outbox_key("p-0"), {"kind": e.kind.value, "status": e.status, "data": e.data},
                          id=f"{i * entries + k + 1}-0")
            pipe.set(store.offset_key("p-0"), i + 1)
            pipe.execute()
        offset = i + 1
    wall = (time.perf_counter() - started) / commits * 1000
    usec = {name: v["usec"] for name, v in client.info("commandstats").items()}
    outer = usec.get("cmdstat_evalsha", 0) + usec.get("cmdstat_exec", 0)
    inner = sum(v for name, v in usec.items() if name not in ("cmdstat_evalsha", "cmdstat_exec", "cmdstat_multi",
                                                              "cmdstat_config|resetstat"))
    client.delete(*client.scan_iter(match=f"{prefix}:*", count=5_000))   # about states × commits keys
    return wall, outer / commits / 1000, inner / commits / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--states", type=int, default=1_000, help="states per commit (default 1000)")
    parser.add_argument("--entries", type=int, default=300, help="outbox entries per commit (default 300)")
    parser.add_argument("--commits", type=int, default=30, help="commits per round (default 30)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each variant, interleaved (default 2)")
    args = parser.parse_args()
    client = redis.Redis.from_url(URL)
    results: dict[str, list[tuple[float, float, float]]] = {"script": [], "multi": []}
    for r in range(args.rounds):
        for mode in (("script", "multi") if r % 2 == 0 else ("multi", "script")):
            results[mode].append(one_round(client, mode, args.states, args.entries, args.commits))
            wall, outer, inner = results[mode][-1]
            print(f"round {r + 1} {mode:6}: {wall:6.2f} ms/commit wall, Redis {outer:5.2f} ms "
                  f"(in the commands {inner:5.2f} ms)", flush=True)
    med = {m: statistics.median(x[1] for x in v) for m, v in results.items()}
    print(f"Redis time per commit ({args.states} states, {args.entries} entries), median: script {med['script']:.2f} ms, "
          f"MULTI/EXEC {med['multi']:.2f} ms, ratio {med['script'] / med['multi']:.2f}")


if __name__ == "__main__":
    main()
