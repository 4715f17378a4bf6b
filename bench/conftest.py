"""Shared inputs of the benchmarks: a generated workload, compiled rule sets, the real Redis."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import orjson
import pytest

from bench.rulegen import rule_set
from bench.workload import generate
from engine.events.decode import EventDecoder
from engine.rules.compiler import load_and_compile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def raw_events() -> list[bytes]:
    return [orjson.dumps(e) for e in generate(events=20_000, customers=2_000, days=30, seed=11, start="2026-01-01")]


@pytest.fixture(scope="session")
def events(raw_events):
    decoded, dead = EventDecoder().decode_batch((raw, "bench") for raw in raw_events)
    assert not dead
    return decoded


@pytest.fixture(scope="session")
def bundled_rules():
    return load_and_compile(ROOT / "rules")


@pytest.fixture(scope="session")
def sized_rules():
    tmp = Path(tempfile.mkdtemp())
    return {n: rule_set(n, tmp) for n in (10, 100, 1000)}


@pytest.fixture(scope="session")
def redis_url() -> str:
    res = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "start", "redis"], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        pytest.fail(f"scripts/services.sh start redis failed:\n{res.stdout}{res.stderr}")
    return "redis://127.0.0.1:6379/11"
