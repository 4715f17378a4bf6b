"""Where a backtest event's time goes, layer by layer: the same events replayed with no rules,
with only the aggregates, and with the whole rules folder, interleaved rounds, one run.

    python -m bench.layers --events /tmp/w300k.jsonl [--rules rules] [--limit 200000] [--rounds 3]

The events are decoded once, before any timing, and fed in the backtest's batches to a fresh
`Replay` each time (as `triggers backtest` does, without reading and writing files), so each
figure is the evaluation core's cost per event: the bookkeeping every event pays (duplicate
check, journal, deadline index, checkpoints), then what the aggregates add, then what the rules,
the contact policy and the triggers add. The differences are what a faster layer could save at
most; the machine is noisy, so the medians of interleaved rounds are compared, not single runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import msgspec

from engine.events.decode import EventDecoder, read_jsonl
from engine.offline.backtest import BATCH, Replay
from engine.rules.compiler import CompiledRules, compile_rules
from engine.rules.loader import load_rules

ROOT = Path(__file__).resolve().parent.parent


def layered_rules(rules_dir: Path) -> dict[str, CompiledRules]:
    """The three rule sets, from one reading of the folder: its aggregates and policy without
    its rules, neither, and the folder as it is."""
    ruleset = load_rules(rules_dir)
    return {"no rules": compile_rules(msgspec.structs.replace(ruleset, rules=(), aggregates={})),
            "aggregates only": compile_rules(msgspec.structs.replace(ruleset, rules=())),
            "all rules": compile_rules(ruleset)}


def replay_us(rules: CompiledRules, batches: list[list]) -> float:
    """µs per event of one replay of the batches (end of data included)."""
    replay = Replay(rules, lambda out: None)
    started = time.perf_counter()
    for batch in batches:
        replay.feed(batch)
    replay.finish()
    return (time.perf_counter() - started) / sum(len(b) for b in batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", required=True, help="JSONL events (python -m bench.workload)")
    parser.add_argument("--rules", default=str(ROOT / "rules"), help="the rules folder (default: the bundled rules)")
    parser.add_argument("--limit", type=int, default=200_000, help="events replayed (the file's first)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    lines = [line for _, line in zip(range(args.limit), read_jsonl(args.events))]
    decoder = EventDecoder()
    batches = [decoder.decode_batch(lines[i:i + BATCH])[0] for i in range(0, len(lines), BATCH)]
    sets = layered_rules(Path(args.rules))
    runs: dict[str, list[float]] = {name: [] for name in sets}
    for n in range(args.rounds):
        for name, rules in sets.items():
            runs[name].append(replay_us(rules, batches))
        print(f"round {n + 1}: " + ", ".join(f"{name} {runs[name][-1]:.2f}" for name in sets) + " µs/event",
              flush=True)
    medians = {name: statistics.median(v) for name, v in runs.items()}
    total = medians["all rules"]
    print(f"\n{len(lines):,} events, {args.rounds} interleaved rounds, medians (µs per event):")
    previous = 0.0
    for name, label in (("no rules", "bookkeeping (no rules)"), ("aggregates only", "+ aggregates"),
                        ("all rules", "+ rules, policy, triggers")):
        part = medians[name] - previous
        print(f"  {label:28} {part:6.2f}  ({100 * part / total:4.1f}%)   cumulative {medians[name]:6.2f}"
              f"  (range {min(runs[name]):.2f}-{max(runs[name]):.2f})")
        previous = medians[name]
    print(f"  = {1e6 / total:,.0f} events/s for the evaluation core alone")


if __name__ == "__main__":
    main()
