"""Two revisions of the engine side by side: the same runs, interleaved, in one invocation.

This machine's speed drifts by ±30% over minutes, so a figure is only worth its ratio to a
baseline measured in the same minutes: each round runs the baseline revision, then the current
tree, on the same input, and the ratio of each round is reported with the median.

    python -m bench.revisions --baseline c75ce00 --events /tmp/w1m.jsonl              # backtest
    python -m bench.revisions --baseline c75ce00 --events /tmp/w1m.jsonl --same-rules # both on c75ce00's rules
    python -m bench.revisions --baseline c75ce00 --live --events-live 200000          # live, Redis state
    python -m bench.revisions --baseline c75ce00 --kafka --events-live 100000 --same-rules   # through Kafka
    python -m bench.revisions --baseline c75ce00 --events /tmp/w1m.jsonl --callgrind 100000
    python -m bench.revisions --baseline HEAD --compiled --events /tmp/w300k.jsonl   # compiled core vs pure
    python -m bench.revisions --baseline 90c8c98 --compiled --compiled-baseline --events /tmp/w300k.jsonl   # both compiled
    python -m bench.revisions --baseline 11e591f --kafka-latency --rounds 3    # through Kafka, 20,000 events/s
    python -m bench.revisions --baseline 11e591f --kafka-latency --same-rules  # the same, both on 11e591f's rules

`--callgrind N` counts, instead of timing, what one backtest event costs at event N of the file:
valgrind's callgrind (with its cache simulation) runs each revision on the first N and the first
N + 20,000 events, and the difference divided by 20,000 is the cost per event, start-up and
imports excluded: instructions and first-level cache misses, the same figures on every run
whatever else the machine does (a run takes minutes).

The baseline is extracted with `git archive` into a temporary directory and run with this
virtualenv's Python; the live runs use `bench.e2e`'s in-process source with Redis state
(`scripts/services.sh start` first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each tree's modules compiled once and kept, as an installed engine has them: with
# PYTHONDONTWRITEBYTECODE (set on some machines) every run would compile its tree's source again,
# a fixed cost that grows with the code and is no part of the engine's speed.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def extract(revision: str, into: Path) -> Path:
    tree = into / revision
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def compile_tree(work: Path) -> Path:
    """A copy of the current tree with its core compiled by mypyc (scripts/compile.sh)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "compile.sh"), str(work / "compiled")], check=True)
    return work / "compiled" / "tree"


def compile_extracted(tree: Path) -> Path:
    """An extracted revision with its core compiled in place, by its own setup.py (as
    scripts/compile.sh does for a copy of this tree)."""
    setup = tree / "setup.py"
    if not setup.is_file() or "COMPILED_MODULES" not in setup.read_text():
        raise SystemExit(f"revision {tree.name} has no compiled core (setup.py's COMPILED_MODULES): "
                         "leave out --compiled-baseline")
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "-j", "2"], cwd=tree,
                          env={**ENV, "TRIGGERS_COMPILE": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"compiling revision {tree.name} failed:\n{done.stderr[-3000:]}")
    return tree


def backtest(tree: Path, events: str, work: Path, rules: Path | None = None) -> float:
    """Events/s of the tree's backtest over `events` with `rules` (default: the tree's own)."""
    summary = work / "summary.json"
    rules = rules if rules is not None else tree / "rules"
    subprocess.run([sys.executable, "-m", "engine.cli", "backtest", "--rules", str(rules), "--events",
                    events, "--out", os.devnull, "--dead-letters", os.devnull, "--summary", str(summary),
                    "--no-progress", "--quiet"], cwd=tree, check=True, env={**ENV, "PYTHONPATH": str(tree)})
    data = json.loads(summary.read_text())
    return data["events"] / data["elapsed_s"]


_COUNT = """
import sys
sys.path.insert(0, sys.argv[1])
try:                                     # the layout since the redesign (issue 10) ...
    from engine.events.decode import EventDecoder, read_jsonl
    from engine.offline.backtest import Replay
except ImportError:                      # ... and the flat one before it
    from engine.backtest import Replay
    from engine.decode import EventDecoder, read_jsonl
from engine.rules.compiler import load_and_compile
rules, n = load_and_compile(sys.argv[1] + "/rules"), int(sys.argv[3])
items = [line for _, line in zip(range(n), read_jsonl(sys.argv[2]))]
replay = Replay(rules, lambda out: None)
for i in range(0, n, 2000):
    replay.feed(EventDecoder().decode_batch(items[i:i + 2000])[0])
replay.finish()
"""
SPAN = 20_000


def callgrind(tree: Path, events: str, at: int, work: Path) -> dict[str, float]:
    """Per-event instructions (Ir) and L1 data read/write misses (D1mr, D1mw) at event `at`."""
    script = work / "count.py"
    script.write_text(_COUNT)
    totals = []
    for n in (at, at + SPAN):
        out = work / f"callgrind.{n}"
        subprocess.run(["valgrind", "--tool=callgrind", "--cache-sim=yes", f"--callgrind-out-file={out}",
                        sys.executable, str(script), str(tree), events, str(n)], check=True, capture_output=True)
        summary = next(line for line in out.read_text().splitlines() if line.startswith("summary:"))
        events_line = next(line for line in out.read_text().splitlines() if line.startswith("events:"))
        totals.append(dict(zip(events_line.split()[1:], map(int, summary.split()[1:]))))
    return {k: (totals[1][k] - totals[0][k]) / SPAN for k in ("Ir", "D1mr", "D1mw")}


def live(tree: Path, events: int, work: Path) -> float:
    out = work / "results.json"
    skip = "backtest,kafka,kafka2,naive,floor,latency,kafka_latency"
    subprocess.run([sys.executable, "-m", "bench.e2e", "--events", str(events), "--customers", str(events // 3),
                    "--skip", skip, "--out", str(out)], cwd=tree, check=True, capture_output=True,
                   env={**ENV, "PYTHONPATH": str(tree)})
    return json.loads(out.read_text())["live"]["events_per_s"]


def kafka(tree: Path, events: int, work: Path, rules: Path | None = None) -> float:
    """Events/s of the tree's `triggers run` through Kafka, one process (`bench.e2e`'s kafka step:
    the topic filled first, from the first record read to the last commit), with `rules`
    (default: the tree's own)."""
    out = work / "results.json"
    skip = "backtest,live,kafka2,naive,floor,latency,kafka_latency"
    extra = ["--engine-rules", str(rules)] if rules is not None else []
    subprocess.run([sys.executable, "-m", "bench.e2e", "--events", str(events), "--customers", str(events // 3),
                    "--skip", skip, "--out", str(out), "--engine-tree", str(tree), *extra], cwd=ROOT, check=True,
                   capture_output=True, env={**ENV, "PYTHONPATH": str(ROOT)})
    return json.loads(out.read_text())["kafka"]["events_per_s"]


def kafka_latency(tree: Path, events: int, rate: float, work: Path, rules: Path | None = None) -> dict:
    """Event-to-trigger latency through Kafka at a fixed rate (`bench.e2e`'s kafka_latency): the
    tree's `triggers run` with `rules` (default: the tree's own), measured by this tree's harness
    (the same producer, consumer and matching for both), from the event's produce time to the
    trigger's in the sink topic."""
    out = work / "results.json"
    skip = "backtest,live,kafka,kafka2,naive,floor,latency"
    extra = ["--engine-rules", str(rules)] if rules is not None else []
    subprocess.run([sys.executable, "-m", "bench.e2e", "--events", str(events), "--customers", str(events // 3),
                    "--latency-events", str(events), "--rate", str(rate), "--skip", skip, "--out", str(out),
                    "--engine-tree", str(tree), *extra], cwd=ROOT, check=True, capture_output=True,
                   env={**ENV, "PYTHONPATH": str(ROOT)})
    return json.loads(out.read_text())["kafka_latency"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. c75ce00)")
    parser.add_argument("--events", help="JSONL events for the backtest runs (python -m bench.workload)")
    parser.add_argument("--same-rules", action="store_true", help="both revisions run the baseline's rules/ in the "
                        "backtest, --kafka and --kafka-latency runs (the bundled rules change over time; the "
                        "current engine reads older rules files)")
    parser.add_argument("--live", action="store_true", help="also the live run: in-process source, Redis state")
    parser.add_argument("--events-live", type=int, default=200_000)
    parser.add_argument("--kafka", action="store_true", help="also `triggers run` through Kafka, one process "
                        "(--events-live events; with --same-rules, both on the baseline's rules)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kafka-latency", action="store_true", help="also event-to-trigger latency through Kafka "
                        "at --rate events/s (p50 and p99 per round, ratio of p99)")
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--events-latency", type=int, default=100_000)
    parser.add_argument("--compiled", action="store_true", help="run the current tree with its core compiled "
                        "(scripts/compile.sh, in a copy) instead of as pure Python; with --baseline HEAD, the "
                        "compiled core against the pure one")
    parser.add_argument("--compiled-baseline", action="store_true", help="also the baseline with its core compiled "
                        "(its own setup.py; revisions since the compiled core): compiled against compiled")
    parser.add_argument("--callgrind", type=int, metavar="N", help="count (valgrind) instead of timing: the cost "
                        "of one backtest event at event N of --events")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        baseline = extract(args.baseline, work)
        trees = {"baseline": compile_extracted(baseline) if args.compiled_baseline else baseline,
                 "current": compile_tree(work) if args.compiled else ROOT}
        if args.callgrind is not None:
            counts = {name: callgrind(tree, args.events, args.callgrind, work) for name, tree in trees.items()}
            for key in ("Ir", "D1mr", "D1mw"):
                base, now = counts["baseline"][key], counts["current"][key]
                print(f"per event at {args.callgrind:,}: {key} baseline {base:,.0f}, current {now:,.0f}, "
                      f"ratio {now / base:.3f}")
            return
        runs = []
        if args.events:
            rules = trees["baseline"] / "rules" if args.same_rules else None
            runs.append(("backtest", lambda tree: backtest(tree, args.events, work, rules)))
        if args.live:
            runs.append(("live", lambda tree: live(tree, args.events_live, work)))
        if args.kafka:
            kafka_rules = trees["baseline"] / "rules" if args.same_rules else None
            runs.append(("kafka", lambda tree: kafka(tree, args.events_live, work, kafka_rules)))
        for name, run in runs:
            ratios = []
            for i in range(args.rounds):
                base = run(trees["baseline"])
                now = run(trees["current"])
                ratios.append(now / base)
                print(f"{name} round {i + 1}: baseline {args.baseline} {base:,.0f} events/s, current {now:,.0f} "
                      f"events/s, ratio {now / base:.3f}", flush=True)
            print(f"{name}: current / baseline = {statistics.median(ratios):.3f} (median of {args.rounds}; "
                  f"range {min(ratios):.3f}-{max(ratios):.3f})", flush=True)
        if args.kafka_latency:
            ratios = []
            latency_rules = trees["baseline"] / "rules" if args.same_rules else None
            for i in range(args.rounds):
                base = kafka_latency(trees["baseline"], args.events_latency, args.rate, work, latency_rules)
                now = kafka_latency(trees["current"], args.events_latency, args.rate, work, latency_rules)
                ratios.append(now["p99_ms"] / base["p99_ms"])
                print(f"kafka latency round {i + 1} at {args.rate:,.0f} events/s: baseline {args.baseline} p50 "
                      f"{base['p50_ms']} ms p99 {base['p99_ms']} ms (n={base['n']}), current p50 {now['p50_ms']} ms "
                      f"p99 {now['p99_ms']} ms (n={now['n']}), p99 ratio {ratios[-1]:.2f}", flush=True)
            print(f"kafka latency: p99 current / baseline = {statistics.median(ratios):.2f} (median of "
                  f"{args.rounds}; range {min(ratios):.2f}-{max(ratios):.2f})", flush=True)


if __name__ == "__main__":
    main()
