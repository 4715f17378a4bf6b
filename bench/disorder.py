"""Delay each event of a JSONL file at random (as backend orders and browser clicks arrive), for
the event-time tests and for trying `time: {lateness: D}` by hand.

    python -m bench.disorder --events ../shared/data/online-retail-orders.jsonl --max-delay 10m \\
        --seed 1 --out /tmp/orders-late.jsonl

Each event gets a delay drawn uniformly from [0, max-delay] and the file is written in order of
time + delay: no event is then more than max-delay behind the newest one before it, which is
the condition under which `time: {lateness: max-delay}` gives the sorted file's triggers.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import orjson

from engine.core.times import parse_duration, parse_ts


def disorder(lines: list[bytes], max_delay_ms: int, seed: int) -> list[bytes]:
    """The lines in arrival order: each delayed by a uniform [0, max_delay_ms] (ties by a coin)."""
    rng = random.Random(seed)
    keyed = []
    for i, raw in enumerate(lines):
        ts = parse_ts(orjson.loads(raw)["ts"])
        keyed.append((ts + rng.randint(0, max_delay_ms), rng.random(), i, raw))
    keyed.sort()
    return [raw for *_, raw in keyed]


def displaced(lines: list[bytes], arrived: list[bytes]) -> int:
    """How many events arrive behind an event that was after them in the sorted file."""
    rank = {raw: i for i, raw in enumerate(lines)}
    newest, behind = -1, 0
    for raw in arrived:
        r = rank[raw]
        if r < newest:
            behind += 1
        newest = max(newest, r)
    return behind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.disorder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", required=True, help="a JSONL event file, sorted by time")
    parser.add_argument("--max-delay", required=True, help="the largest delay, e.g. 2m or 10m")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True, help="where to write the events in arrival order")
    args = parser.parse_args(argv)
    lines = [raw for raw in Path(args.events).read_bytes().splitlines() if raw.strip()]
    arrived = disorder(lines, parse_duration(args.max_delay), args.seed)
    Path(args.out).write_bytes(b"\n".join(arrived) + b"\n")
    print(f"{len(arrived):,} events, {displaced(lines, arrived):,} arrive behind a later one", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
