"""Two revisions of the engine side by side: the same runs, interleaved, in one invocation.

This machine's speed drifts by ±30% over minutes, so a figure is only worth its ratio to a
baseline measured in the same minutes: each round runs the baseline revision, then the current
tree, on the same input, and the ratio of each round is reported with the median.

    python -m bench.revisions --baseline c75ce00 --events /tmp/w1m.jsonl              # backtest
    python -m bench.revisions --baseline c75ce00 --live --events-live 200000          # live, Redis state

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


def extract(revision: str, into: Path) -> Path:
    tree = into / revision
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def backtest(tree: Path, events: str, work: Path) -> float:
    summary = work / "summary.json"
    subprocess.run([sys.executable, "-m", "engine.cli", "backtest", "--rules", str(tree / "rules"), "--events",
                    events, "--out", os.devnull, "--dead-letters", os.devnull, "--summary", str(summary),
                    "--no-progress", "--quiet"], cwd=tree, check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    data = json.loads(summary.read_text())
    return data["events"] / data["elapsed_s"]


def live(tree: Path, events: int, work: Path) -> float:
    out = work / "results.json"
    skip = "backtest,kafka,kafka2,naive,floor,latency,kafka_latency"
    subprocess.run([sys.executable, "-m", "bench.e2e", "--events", str(events), "--customers", str(events // 3),
                    "--skip", skip, "--out", str(out)], cwd=tree, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(tree)})
    return json.loads(out.read_text())["live"]["events_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. c75ce00)")
    parser.add_argument("--events", help="JSONL events for the backtest runs (python -m bench.workload)")
    parser.add_argument("--live", action="store_true", help="also the live run: in-process source, Redis state")
    parser.add_argument("--events-live", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {"baseline": extract(args.baseline, work), "current": ROOT}
        runs = []
        if args.events:
            runs.append(("backtest", lambda tree: backtest(tree, args.events, work)))
        if args.live:
            runs.append(("live", lambda tree: live(tree, args.events_live, work)))
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


if __name__ == "__main__":
    main()
