"""Operating a live run: /metrics counts what the engine did, /healthz answers, and rules
reload without a restart (a broken change is rejected while the old rules keep firing)."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections import Counter
from datetime import timedelta
from pathlib import Path

from bytewax.testing import run_main
from prometheus_client.parser import text_string_to_metric_families

from bench.e2e import Pace, PacedLog
from connectors.base import Sink
from engine.events.decode import read_jsonl
from engine.operators.flow import build_flow
from engine.operators.metrics import serve
from engine.operators.settings import Settings
from engine.rules.compiler import load_and_compile
from engine.state.redis import RedisStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl"
PARTITIONS = 2


class ListSink(Sink):
    """Each item with the time it was written."""

    def __init__(self, into: list) -> None:
        super().__init__()
        self.into = into

    def write_batch(self, items) -> None:
        now = time.monotonic()
        self.into.extend((now, item) for item in items)

    def deliver(self, items) -> list:
        self.write_batch(items)
        return []

    def settle(self) -> None:
        pass

    def close(self) -> None:
        pass


def paced_flow(redis_url: str, rules_dir: Path, lines: list[bytes], rate: float, out: list, dead: list):
    import orjson
    parts: dict[str, list[bytes]] = {f"ops-{p}": [] for p in range(PARTITIONS)}
    release: dict[str, list[float]] = {name: [] for name in parts}
    t0 = time.time() + 0.5
    for i, raw in enumerate(lines):
        try:
            cid = orjson.loads(raw)["customer_id"]
        except orjson.JSONDecodeError:
            cid = ""
        name = f"ops-{zlib.crc32(cid.encode()) % PARTITIONS}"
        parts[name].append(raw)
        release[name].append(i / rate)
    pace = Pace(t0)   # released from t0 on, whenever the engine starts reading
    prefix = f"ops{uuid.uuid4().hex[:6]}"
    settings = Settings(rules=str(rules_dir), exit_at_end=True, commit_interval_ms=100, reload_interval_ms=200)
    return build_flow(settings, load_and_compile(rules_dir), partitions=sorted(parts),
                      open_log=lambda name, start: PacedLog(name, parts[name], release[name], pace, start),
                      store=lambda: RedisStore(redis_url, prefix), sinks={"list": lambda _w: ListSink(out)},
                      dead_letters=lambda _w: ListSink(dead))


def scrape(port: int) -> dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def delta(after: dict, before: dict, name: str) -> dict[tuple, float]:
    return {labels: v - before.get((n, labels), 0.0) for (n, labels), v in after.items() if n == name}


def test_metrics_count_what_the_run_did(redis_url, redis_client, tmp_path):
    server = serve("127.0.0.1", 0)
    port = server.server_address[1]
    lines = [raw for raw, _ in read_jsonl(SAMPLE)][:3000] + [b"{broken"]
    out, dead = [], []
    flow = paced_flow(redis_url, ROOT / "rules", lines, rate=1500, out=out, dead=dead)
    before = scrape(port)
    run = threading.Thread(target=run_main, args=(flow,), kwargs={"epoch_interval": timedelta(milliseconds=100)})
    run.start()
    time.sleep(1.5)
    mid = scrape(port)
    mid_events = sum(delta(mid, before, "triggers_events_total").values())
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())
    run.join(timeout=60)
    assert not run.is_alive()
    after = scrape(port)
    server.shutdown()

    assert 0 < mid_events < len(lines) - 1          # scraped while running
    assert health["status"] == "ok" and {"ops-0", "ops-1"} <= set(health["partitions"])
    assert sum(delta(after, before, "triggers_events_total").values()) == len(lines) - 1
    assert sum(delta(after, before, "triggers_dead_letters_total").values()) == 1 == len(dead)
    produced = Counter((t.rule_id, t.status, t.reason or "") for _, t in out)
    fired = {tuple(dict(labels)[k] for k in ("rule", "status", "reason")): v
             for labels, v in delta(after, before, "triggers_fired_total").items() if v}
    assert fired == produced and sum(produced.values()) > 100
    relayed = delta(after, before, "triggers_relay_delivered_total")
    assert {k: v for k, v in relayed.items() if v} == {(("sink", "list"),): len(out), (("sink", "dead_letters"),): len(dead)}
    assert all(v == 0 for v in delta(after, before, "triggers_relay_lag").values())
    assert sum(delta(after, before, "triggers_commits_total").values()) > 0
    assert delta(after, before, "triggers_batch_seconds_count")


def test_rules_reload_applies_valid_changes_and_rejects_broken_ones(redis_url, redis_client, tmp_path, caplog):
    rules_dir = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules_dir)
    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    out, dead = [], []
    flow = paced_flow(redis_url, rules_dir, lines, rate=800, out=out, dead=dead)
    caplog.set_level(logging.INFO, logger="engine")
    run = threading.Thread(target=run_main, args=(flow,), kwargs={"epoch_interval": timedelta(milliseconds=100)})
    run.start()
    try:
        time.sleep(1.5)
        (rules_dir / "ping.yaml").write_text(
            "rules:\n  - id: view-ping\n    type: behavioral\n    on: product_view\n"
            "    then: {action: ping, channel: email}\n")
        changed = time.monotonic()
        while time.monotonic() - changed < 5 and not any(t.rule_id == "view-ping" for _, t in out):
            time.sleep(0.05)
        first = min((at for at, t in out if t.rule_id == "view-ping"), default=None)
        assert first is not None, "the new rule never fired"
        picked_up_s = first - changed
        assert picked_up_s <= 2.0, picked_up_s

        (rules_dir / "zz-broken.yaml").write_text("rules:\n  - id: broken\n    type: threshold\n    if: purchases >\n"
                                                  "    then: {action: x, channel: email}\n")
        broken_at = time.monotonic()
        time.sleep(1.5)
        assert any(t.rule_id == "view-ping" for at, t in out if at > broken_at + 0.5)   # old rules keep firing
        assert not any(t.rule_id == "broken" for _, t in out)
    finally:
        run.join(timeout=60)
    errors = [r.getMessage() for r in caplog.records if r.name == "engine.rules" and r.levelno == logging.ERROR]
    assert errors and f"{rules_dir / 'zz-broken.yaml'}:4: rule 'broken'" in errors[0]
    print(f"new rule firing {picked_up_s:.2f} s after the file was written")
