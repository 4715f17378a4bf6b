"""What the contact policy costs a backtest: events/s with and without `policy:`, one run.

    python -m bench.policy_cost [--events FILE] [--rules DIR] [--rounds 3]

Both variants replay the same pre-decoded events (decode is not what is compared), and run
interleaved (A, B, A, B, ...) so that machine noise hits both alike; the medians and their
ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import msgspec

from engine.events.decode import EventDecoder, read_jsonl
from engine.offline.backtest import Replay
from engine.rules.compiler import compile_rules
from engine.rules.loader import load_rules

ROOT = Path(__file__).resolve().parents[1]


def replay_rate(rules, events) -> float:
    start = time.perf_counter()
    r = Replay(rules, lambda out: None)
    for i in range(0, len(events), 2000):
        r.feed(events[i:i + 2000])
    r.finish()
    return len(events) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default=str(ROOT / "examples" / "sample-events.jsonl"))
    parser.add_argument("--rules", default=str(ROOT / "rules"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ruleset = load_rules(args.rules)
    if ruleset.policy is None:
        raise SystemExit(f"{args.rules} has no policy: section to compare against")
    with_policy = compile_rules(ruleset)
    without = compile_rules(msgspec.structs.replace(ruleset, policy=None))
    events, dead = EventDecoder().decode_batch(read_jsonl(args.events))
    print(f"{len(events):,} events ({len(dead)} dead letters) from {args.events}, rules {args.rules}")
    rates: dict[str, list[float]] = {"without policy": [], "with policy": []}
    for _ in range(args.rounds):
        rates["without policy"].append(replay_rate(without, events))
        rates["with policy"].append(replay_rate(with_policy, events))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:15s} {v:>12,.0f} events/s   (rounds: {', '.join(f'{x:,.0f}' for x in rates[k])})")
    print(f"policy cost: {100 * (1 - med['with policy'] / med['without policy']):.1f}% of throughput "
          f"(ratio {med['with policy'] / med['without policy']:.3f})")


if __name__ == "__main__":
    main()
