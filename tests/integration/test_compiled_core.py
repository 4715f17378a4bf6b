"""The compiled core (setup.py, scripts/compile.sh) against the pure one: the same source built
by mypyc must behave the same, so the unit suite runs on the compiled build too, and the real
shop data's triggers are byte for byte those of the pure core.

Skipped only where a build cannot be made (no mypyc or no C compiler): then the engine installs
as pure Python, which every other test covers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("mypyc") is None or not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
    pytest.skip("no mypyc or no C compiler: the compiled core cannot be built here", allow_module_level=True)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """A compiled copy of this tree; the real data beside it, as beside the repo."""
    where = tmp_path_factory.mktemp("compiled")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "compile.sh"), str(where)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (where / "shared").symlink_to(shared)
    return where / "tree"


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def test_every_listed_module_runs_compiled_and_the_version_says_so(compiled: Path, compiled_modules: list[str]) -> None:
    names = compiled_modules
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    print(importlib.import_module(n).__file__)"
    res = subprocess.run([sys.executable, "-c", code, *names], cwd=compiled, env=_env(compiled), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    files = res.stdout.split()
    assert all(f.startswith(str(compiled)) and f.endswith(".so") for f in files), files
    version = subprocess.run([sys.executable, "-m", "engine.cli", "--version"], cwd=compiled, env=_env(compiled),
                             capture_output=True, text=True, timeout=60)
    assert "compiled core" in version.stdout, version.stdout + version.stderr


def test_the_unit_suite_passes_on_the_compiled_core(compiled: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/unit"],
                         cwd=compiled, env=_env(compiled), capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert " passed" in res.stdout.splitlines()[-1]


@pytest.mark.parametrize("data", ["online-retail-orders.jsonl", "rees46-clickstream-sample.jsonl"])
def test_the_real_data_gives_the_pure_cores_triggers(compiled: Path, shared_data: Path, tmp_path: Path,
                                                     data: str) -> None:
    outputs = []
    for name, tree in (("pure", ROOT), ("compiled", compiled)):
        out = tmp_path / f"{name}.jsonl"
        res = subprocess.run([sys.executable, "-m", "engine.cli", "backtest", "--rules", str(ROOT / "rules"),
                              "--events", str(shared_data / data), "--out", str(out), "--drain", "--no-progress",
                              "--quiet"], cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") > 100
