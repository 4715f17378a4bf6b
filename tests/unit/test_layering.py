"""The core import guard (STYLE §2): the core imports no Bytewax, Kafka or Redis client.

Every core module is imported in a fresh interpreter, which then reports what it loaded: a
module of the core that pulls in `bytewax`, `confluent_kafka` or `redis` (directly or through
another engine module) fails here with the chain to look at, before it reaches a release.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("bytewax", "confluent_kafka", "redis")
CORE_PACKAGES = ("events", "rules", "core", "policy", "actions", "offline")
CORE_MODULES = ("engine.errors", "engine.state.customer", "engine.state.outbox", "engine.state.store", "engine.state.memory")


def core_modules() -> list[str]:
    """Every module of the core packages, found on disk (a new module is guarded at once)."""
    names = list(CORE_MODULES)
    for package in CORE_PACKAGES:
        for path in sorted((ROOT / "engine" / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


PROBE = """
import importlib, json, sys
RUNTIME = {runtime!r}
first = {{}}
for name in {modules!r}:
    before = set(sys.modules)
    importlib.import_module(name)
    loaded = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in RUNTIME)
    if loaded:
        first[name] = loaded
print(json.dumps({{"first": first, "end": sorted(m for m in sys.modules if m.split(".")[0] in RUNTIME)}}))
"""


def test_core_modules_are_found():
    names = core_modules()
    assert "engine.core.evaluate" in names and "engine.offline.backtest" in names and "engine.errors" in names
    assert len(names) > 25


def test_core_loads_no_runtime():
    """One fresh interpreter imports every core module; none of them may load the runtime."""
    code = PROBE.format(runtime=RUNTIME, modules=core_modules())
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.splitlines()[-1])
    culprits = {name: sorted({m.split(".")[0] for m in loaded}) for name, loaded in report["first"].items()}
    assert not culprits, f"core modules that load the runtime (the first to import it): {culprits}"
    assert report["end"] == []


def test_errors_is_a_leaf():
    """engine/errors.py imports nothing of the engine, so that every module can derive from it."""
    text = (ROOT / "engine" / "errors.py").read_text()
    assert "import engine" not in text and "from engine" not in text
