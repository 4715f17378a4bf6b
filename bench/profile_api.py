"""Latency of the profile API (`GET /customers/{id}`) against a running engine: p50 / p99.

    python -m bench.profile_api [--requests 2000] [--events examples/sample-events.jsonl]

Starts `triggers run` on a new topic holding the events (real Kafka and Redis from
scripts/services.sh; Redis db 14 unless --redis-url), waits until every event is committed,
then asks for the customers' profiles one request after the other (a new connection each, as
http.server answers HTTP/1.0), round-robin over every customer, and prints the percentiles.
The engine is idle meanwhile (caught up): what a web shop's lookup costs, not its contention
with a backlog.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(host: str, port: int, ids: list[str], n: int, token: str | None = None) -> dict[str, float]:
    """`n` sequential GETs round-robin over `ids`; latencies in ms (p50, p99, max) and the statuses."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    took: list[float] = []
    bad = 0
    for i in range(n):
        cid = ids[i % len(ids)]
        start = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/customers/" + urllib.parse.quote(cid, safe=""), headers=headers)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        took.append((time.perf_counter() - start) * 1000)
        bad += resp.status != 200
    q = statistics.quantiles(took, n=100)
    return {"requests": n, "p50_ms": statistics.median(took), "p99_ms": q[98], "max_ms": max(took), "non_200": bad}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--events", default=str(ROOT / "examples" / "sample-events.jsonl"))
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    p.add_argument("--brokers", default="127.0.0.1:9092")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import orjson
    import redis

    from tests.integration.harness import create_topic, free_port, produce, unique, write_config

    lines = Path(args.events).read_bytes().splitlines()
    ids = sorted({orjson.loads(line)["customer_id"] for line in lines})
    topic = create_topic(args.brokers, unique("bench-profile"))
    produce(args.brokers, topic, lines)
    prefix, port, token = f"bench-profile-{uuid.uuid4().hex[:6]}", free_port(), "bench-token"
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp) / "c.toml", topic=topic, redis_url=args.redis_url, prefix=prefix,
                              sink_topic=unique("bench-profile-out"), dead_topic=unique("bench-profile-dead"),
                              extra=f'metrics_port = {port}\nprofile_api_token = "{token}"')
        config.write_text(config.read_text().replace("exit_at_end = true", "exit_at_end = false"))
        engine = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(config)], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            wait_committed(redis.Redis.from_url(args.redis_url), prefix, len(lines))
            result = measure("127.0.0.1", port, ids, args.requests, token)
        finally:
            engine.terminate()
            engine.wait(60)
    print(f"profile API: {result['requests']} requests over {len(ids)} customers: p50 {result['p50_ms']:.2f} ms, "
          f"p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms, non-200: {result['non_200']}")


def wait_committed(client, prefix: str, events: int, timeout_s: float = 180) -> None:
    """Until the engine's committed offsets (Redis) add up to `events`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keys = client.keys(f"{prefix}:o:*")
        if keys and sum(int(v) for v in client.mget(keys) if v is not None) >= events:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the engine did not commit {events} events in {timeout_s} s")


if __name__ == "__main__":
    main()
