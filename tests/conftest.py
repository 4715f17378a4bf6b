"""Session fixtures: the real Redis and Kafka (started or reused through scripts/services.sh),
a clean Redis database per test, the shared event data, and the smallest rules file.

Integration tests never skip when a service cannot start: they fail with the script's output,
so CI cannot go green without having run them. Only the optional shared data may be absent.
"""

from __future__ import annotations

import os
import runpy
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES_SH = REPO_ROOT / "scripts" / "services.sh"
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"

# Database 15: the tests flush it before each test, so they never touch the data in db 0
# that a developer's engine may be using on the same server.
REDIS_TEST_DB = int(os.environ.get("TE_TEST_REDIS_DB", "15"))   # another db for a second session at once


def _start_service(name: str) -> None:
    """Start (or reuse) one service through the project's script; fail the session if it can't."""
    try:
        result = subprocess.run(
            ["bash", str(SERVICES_SH), "start", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,  # a first start may install the package or resolve the jars
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`scripts/services.sh start {name}` did not finish in {exc.timeout}s:\n{exc.output or ''}", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"`scripts/services.sh start {name}` failed (exit {result.returncode}); "
            f"integration tests need the real service:\n{result.stdout}",
            pytrace=False,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration with `integration` (deselect with -m 'not integration')."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test database on the real redis-server (db 15)."""
    _start_service("redis")
    port = os.environ.get("REDIS_PORT", "6379")
    return f"redis://127.0.0.1:{port}/{REDIS_TEST_DB}"


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """URL of a node of the real 3-primary Redis Cluster (127.0.0.1:7000-7002); tests keep apart
    by key prefix (a cluster has one database)."""
    _start_service("redis-cluster")
    port = os.environ.get("REDIS_CLUSTER_PORTS", "7000").split()[0]
    return f"redis://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """bootstrap.servers of the real Kafka broker."""
    _start_service("kafka")
    port = os.environ.get("KAFKA_PORT", "9092")
    return f"127.0.0.1:{port}"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test database, flushed before the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real event data (`online-retail-orders.jsonl`, …), beside the repo."""
    path = (REPO_ROOT.parent / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(
            f"shared event data not found at {path}: CI places a copy of shared/ beside the clone; "
            "on a laptop, put the data files in ../shared/data"
        )
    return path


@pytest.fixture(scope="session")
def compiled_modules() -> list[str]:
    """setup.py's COMPILED_MODULES (the core mypyc compiles), as module names; setup.py runs
    setup() only as a script."""
    listed = runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="setup_modules")["COMPILED_MODULES"]
    return [m.removesuffix(".py").replace("/", ".") for m in listed]


@pytest.fixture
def first_purchase_rules(tmp_path: Path) -> Path:
    """`tmp_path/rules.yaml` with the smallest rules a live test needs: a purchase count and a
    rule that fires on a customer's first purchase."""
    path = tmp_path / "rules.yaml"
    path.write_text("""aggregates:
  purchases: {count: purchase}
rules:
  - id: first-purchase
    type: threshold
    on: purchase
    if: purchases == 1
    then: {action: thanks, channel: email}
""")
    return path
