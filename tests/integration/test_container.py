"""The image, built and run (issue 16, "The container, verified"): scripts/container_check.sh
builds the Dockerfile as it is on a locally made stand-in for the official Python base (no
registry is reachable here), runs the engine in it against the local Kafka and Redis, polls
/healthz, produces the sample events into a new topic and waits for triggers.

Opt-in: it takes minutes on a machine that has not made the stand-in base yet (debootstrap, then
the image's pip install), so CI runs it only when asked: TE_CONTAINER_TEST=1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "container_check.sh"
SKIP = 77    # the script's exit code when containers cannot run on the machine


@pytest.mark.skipif(os.environ.get("TE_CONTAINER_TEST") != "1",
                    reason="opt-in, takes minutes: TE_CONTAINER_TEST=1 pytest tests/integration/test_container.py "
                           "(or run scripts/container_check.sh)")
def test_the_image_builds_and_the_engine_in_it_answers_healthz_and_fires_triggers(kafka_bootstrap, redis_url):
    # Not the tests' db (flushed before each test that uses it, perhaps by a suite running beside
    # this one): the engine in the container keeps its keys under a unique prefix in db 8.
    db = os.environ.get("TE_CONTAINER_REDIS_DB", "8")
    env = {**os.environ, "TE_KAFKA": kafka_bootstrap, "TE_REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/{db}"}
    res = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=1500)
    output = res.stdout + res.stderr
    print(output)      # the stand-in notice and the timings, with -s or on failure
    if res.returncode == SKIP:
        pytest.skip(output.strip().splitlines()[-1])
    assert res.returncode == 0, output
    assert "STAND-IN" in output            # it says that the base is not the official image
    assert "container check OK" in output and "/healthz answered" in output
