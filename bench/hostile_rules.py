"""How fast `triggers validate` turns hostile rules files away, as an operator runs it.

Writes each case of the hardening issue to its own directory (next to a valid rules file),
runs `triggers validate` on it as a subprocess (interpreter start-up included, about 0.2 s)
and prints the wall time, the exit code and the first error line:

    python -m bench.hostile_rules
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

VALID = "rules:\n  - {id: ok, type: transactional, on: purchase, then: {action: thanks, channel: email}}\n"


def alias_bomb() -> str:
    lines = ['rules:\n  - id: bomb\n    type: transactional\n    on: purchase\n    then:\n      action: x\n'
             '      channel: email\n      payload:\n        a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", '
             '"lol", "lol"]\n']
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"        a{level}: &a{level} [{refs}]\n")
    return "".join(lines)


def deep(depth: int) -> str:
    return ("rules:\n  - id: deep\n    type: transactional\n    on: purchase\n"
            f"    then: {{action: x, channel: email, payload: {{p: {'[' * depth}1{']' * depth}}}}}\n")


CASES = {
    "alias bomb (9 levels of 9 aliases, in a payload)": alias_bomb,
    "5,000-deep nesting": lambda: deep(5_000),
    "50,000-deep nesting": lambda: deep(50_000),
    "absurd duration (inactive: 99999999999d)": lambda: "rules:\n  - {id: idle, type: threshold, inactive: "
                                                         "99999999999d, then: {action: x, channel: email}}\n",
    "bidi override (U+202E) in an expression": lambda: "aggregates:\n  spend: {sum: amount, on: purchase}\nrules:\n"
        "  - id: vip\n    type: threshold\n    on: purchase\n    if: 'event.tier == \"gold\u202e\" or spend >= 5000'\n"
        "    then: {action: x, channel: email}\n",
    "60 MB file": lambda: VALID.replace("id: ok", "id: big") + "# " + "x" * (60 * 1024 * 1024) + "\n",
    "20,000 rules in one file": lambda: "rules:\n" + "".join(
        f"  - {{id: r{i}, type: transactional, on: purchase, then: {{action: x, channel: email}}}}\n"
        for i in range(20_000)),
}


def main() -> None:
    print(f"{'case':<52} {'seconds':>8}  exit  first error")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in CASES.items():
            directory = Path(tmp) / str(abs(hash(name)))
            directory.mkdir()
            (directory / "a-valid.yaml").write_text(VALID)
            (directory / "hostile.yaml").write_text(make(), encoding="utf-8")
            started = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "engine.cli", "validate", str(directory)],
                                 capture_output=True, text=True, timeout=300)
            seconds = time.perf_counter() - started
            first = (res.stderr.strip().splitlines() or [""])[0].replace(str(directory) + "/", "")
            traceback = " TRACEBACK" if "Traceback" in res.stderr else ""
            print(f"{name:<52} {seconds:>8.2f}  {res.returncode:>4}  {first[:110]}{traceback}", flush=True)


if __name__ == "__main__":
    main()
