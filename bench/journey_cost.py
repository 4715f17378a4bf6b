"""What a journey costs a backtest: the bundled rules with a three-branch welcome journey on
signup against the same rules with the linear welcome series (`steps`) they had before
journeys, over the same events, interleaved in one run (this machine drifts by ±30% over
minutes; only the ratio within a run means something).

    python -m bench.journey_cost --events /tmp/w1m.jsonl [--rounds 3]

(`python -m bench.workload --events 1000000 --out /tmp/w1m.jsonl` makes the 1,000,000-event
workload.) Each run is a whole `triggers backtest` process, decode and summary included, as a
user runs it; the figure is the summary's events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERIES = """rules:
  - id: welcome
    type: behavioral
    on: signup
    steps:
      - then: {action: welcome-1, channel: email}
      - after: 2d
        unless: {event: email_clicked, match: {campaign: welcome-1}}
        then: {action: welcome-2, channel: push}
"""
JOURNEY = """rules:
  - id: welcome
    type: journey
    on: signup
    exit_on: [purchase]
    steps:
      - {id: hello, then: {action: welcome-1, channel: email}}
      - id: clicked
        wait: {event: email_clicked, match: {campaign: welcome-1}, within: 2d}
        yes: picks
        no: spender
      - {id: picks, then: {action: welcome-picks, channel: email, payload: {category: "{top(interest)}"}},
         next: end}
      - {id: spender, if: lifetime_spend >= 100, yes: vip, no: reminder}
      - {id: vip, then: {action: welcome-vip, channel: email}, next: end}
      - {id: reminder, then: {action: welcome-2, channel: [push, email]}}
"""


def rules_dir(work: Path, name: str, welcome: str) -> Path:
    """The bundled rules with their welcome rule replaced by `welcome`."""
    d = work / name
    shutil.copytree(ROOT / "rules", d)
    text = (d / "behavioral.yaml").read_text()
    end = text.index("  - id: coupon-reminder")
    (d / "behavioral.yaml").write_text("rules:\n" + text[end:])
    (d / "welcome.yaml").write_text(welcome)
    return d


def backtest(rules: Path, events: str, work: Path) -> dict:
    summary = work / "summary.json"
    subprocess.run([sys.executable, "-m", "engine.cli", "backtest", "--rules", str(rules), "--events", events,
                    "--out", os.devnull, "--dead-letters", os.devnull, "--summary", str(summary), "--no-progress",
                    "--quiet"], cwd=ROOT, check=True)
    return json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default=str(ROOT / "examples" / "sample-events.jsonl"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="journey-cost-") as tmp:
        work = Path(tmp)
        variants = {"linear series": rules_dir(work, "series", SERIES), "journey": rules_dir(work, "journey", JOURNEY)}
        rates: dict[str, list[float]] = {k: [] for k in variants}
        fired: dict[str, int] = {}
        for r in range(args.rounds):
            for name, rules in variants.items():
                s = backtest(rules, args.events, work)
                rates[name].append(s["events"] / s["elapsed_s"])
                out = s["per_rule"]["welcome"]
                fired[name] = out["sent"] + out["held_out"] + sum(out["suppressed"].values())
                print(f"round {r + 1}: {name:14s} {rates[name][-1]:>10,.0f} events/s", flush=True)
            print(f"round {r + 1}: ratio journey / linear series {rates['journey'][-1] / rates['linear series'][-1]:.3f}",
                  flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = [j / s for j, s in zip(rates["journey"], rates["linear series"])]
    print(f"events: {args.events}")
    for name in variants:
        print(f"{name:14s} median {med[name]:>10,.0f} events/s   (rounds: {', '.join(f'{x:,.0f}' for x in rates[name])});"
              f" welcome triggers {fired[name]:,}")
    print(f"journey / linear series: median ratio {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")


if __name__ == "__main__":
    main()
