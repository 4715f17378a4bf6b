"""A restart with rules that redefine an aggregate under the same name, on the real Redis: the
states stored by the earlier rules hold the old definition's values. Before, every later event of
those customers was dead-lettered (the new update could not read the old value) and their rules
never fired again; now the value is dropped when the state loads and the aggregate counts anew."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.testing import run_main

from engine.core.times import format_ts, now_ms
from engine.operators.flow import build_flow
from engine.operators.settings import Settings
from engine.rules.compiler import load_and_compile
from engine.state.redis import RedisStore
from engine.testing import ListSink, MemoryLog

RULES = """
aggregates:
  purchases: {AGG}
rules:
  - id: second-purchase
    type: behavioral
    on: purchase
    if: purchases == 2
    then: {action: thanks, channel: email}
"""
PARTITION = "events-0"


def write_rules(folder: Path, aggregate: str) -> Path:
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES.replace("{AGG}", aggregate))
    return folder


def run(rules_dir: Path, redis_url: str, prefix: str, lines: list[bytes]) -> tuple[list, list]:
    triggers: list = []
    dead: list = []
    flow = build_flow(Settings(rules=str(rules_dir), exit_at_end=True, commit_interval_ms=50, reload_rules=False),
                      load_and_compile(rules_dir), partitions=[PARTITION],
                      open_log=lambda name, start: MemoryLog(name, lines, start),
                      store=lambda: RedisStore(redis_url, prefix),
                      sinks={"list": lambda _w: ListSink(triggers)}, dead_letters=lambda _w: ListSink(dead))
    run_main(flow, epoch_interval=timedelta(milliseconds=50))
    return triggers, dead


def test_a_restart_with_a_redefined_aggregate_goes_on_firing(tmp_path, redis_url, redis_client):
    start = now_ms() - 3_600_000
    lines = [orjson.dumps({"event_id": f"p{i}", "type": "purchase", "customer_id": "c1",
                           "ts": format_ts(start + i * 60_000), "properties": {"amount": 10}}) for i in range(5)]
    prefix = f"redef{uuid.uuid4().hex[:6]}"
    before = write_rules(tmp_path / "v1", "{count: purchase}")
    fired, dead = run(before, redis_url, prefix, lines[:3])
    assert [t.cause_event_id for t in fired] == ["p1"] and dead == []
    # the edit: a count over the last 30 days instead of a lifetime count (a list of buckets, not a number)
    after = write_rules(tmp_path / "v2", "{count: purchase, window: 30d}")
    fired, dead = run(after, redis_url, prefix, lines)   # resumes after the 3 events committed
    assert dead == []   # before: p3 and p4 dead-lettered ("'int' object is not subscriptable")
    assert [t.cause_event_id for t in fired] == ["p4"]   # counted anew from p3: its second purchase
    state = RedisStore(redis_url, prefix).load_many(["c1"])["c1"]
    assert sum(count for _, count in state.aggs["purchases"]) == 2   # p3 and p4, in the new shape
