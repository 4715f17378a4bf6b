"""What `send_time: best` costs a backtest (SPEC §3b): the bundled rules as they are, against
the same rules with `send_time: best` on every rule's (and journey step's) `then`, over the same
pre-decoded events, interleaved (A, B, A, B, ...) in one run: this machine drifts by ±30% over
minutes, so only the ratio within a run means something. Both learn each customer's response
hours (the bundled policy names `responses_by_channel`); B also defers its sends.

    python -m bench.timing_cost --events /tmp/w1m.jsonl [--rounds 3]

Decoding is left out (it is the same for both): the figure is the core's events/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import msgspec

from engine.events.decode import EventDecoder, read_jsonl
from engine.offline.backtest import Replay
from engine.rules.compiler import CompiledRules, compile_rules
from engine.rules.loader import load_rules
from engine.rules.model import BEST, Action, Rule, RuleSet

ROOT = Path(__file__).resolve().parents[1]


def with_best_time(ruleset: RuleSet) -> RuleSet:
    """Every `then` of every rule and journey step with `send_time: best`."""
    def best(action: Action | None) -> Action | None:
        return None if action is None else msgspec.structs.replace(action, send_time=BEST)

    def rule(r: Rule) -> Rule:
        steps = tuple(msgspec.structs.replace(s, then=best(s.then)) for s in r.steps)
        journey = r.journey
        if journey is not None:
            journey = msgspec.structs.replace(journey, steps=tuple(
                msgspec.structs.replace(s, then=best(s.then)) for s in journey.steps))
        return msgspec.structs.replace(r, then=best(r.then), steps=steps, journey=journey)

    return msgspec.structs.replace(ruleset, rules=tuple(rule(r) for r in ruleset.rules))


def replay_rate(rules: CompiledRules, events: list) -> tuple[float, int, int]:
    """(events/s, triggers, deferred by send_time)."""
    out: list = []
    start = time.perf_counter()
    r = Replay(rules, out.extend)
    for i in range(0, len(events), 2000):
        r.feed(events[i:i + 2000])
    r.finish()
    rate = len(events) / (time.perf_counter() - start)
    return rate, len(out), sum(1 for t in out if t.status == "sent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default=str(ROOT / "examples" / "sample-events.jsonl"))
    parser.add_argument("--rules", default=str(ROOT / "rules"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ruleset = load_rules(args.rules)
    if ruleset.policy is None or not ruleset.policy.responses_by_channel:
        raise SystemExit(f"{args.rules}: the policy names no responses_by_channel to learn hours from")
    variants = {"as bundled": compile_rules(ruleset), "send_time: best": compile_rules(with_best_time(ruleset))}
    events, dead = EventDecoder().decode_batch(read_jsonl(args.events))
    print(f"{len(events):,} events ({len(dead)} dead letters) from {args.events}, rules {args.rules}", flush=True)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for n in range(args.rounds):
        for name, rules in variants.items():
            rate, triggers, sent = replay_rate(rules, events)
            rates[name].append(rate)
            print(f"round {n + 1}: {name:16s} {rate:>10,.0f} events/s  ({triggers:,} triggers, {sent:,} sent)",
                  flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = [b / a for a, b in zip(rates["as bundled"], rates["send_time: best"])]
    for k, v in med.items():
        print(f"{k:16s} median {v:>10,.0f} events/s")
    print(f"send_time: best / as bundled: median ratio {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")


if __name__ == "__main__":
    main()
