"""Event time under disorder, live through Kafka (issue 11): the shared real data, each event
delayed at random (clickstream up to 2 minutes, orders up to 10 minutes) with a matching
`time: {lateness: D}`: `triggers run` gives exactly the time-sorted file's triggers, with the
default poll batches and with tiny ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest
from harness import ROOT, create_topic, produce, read_topic, run_engine, trigger_key, unique, write_config

from bench.disorder import disorder, displaced
from engine.core.times import now_ms, parse_duration
from engine.events.decode import EventDecoder
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile


def rules_with_lateness(directory: Path, lateness: str | None) -> Path:
    directory.mkdir()
    for f in (ROOT / "rules").glob("*.yaml"):
        shutil.copy(f, directory / f.name)
    if lateness is not None:
        (directory / "time.yaml").write_text(f"time: {{lateness: {lateness}}}\n")
    return directory


def backtest(rules: Path, lines: list[bytes], until: int) -> tuple[list[dict], int]:
    out: list = []
    replay = Replay(load_and_compile(rules), out.extend, until=until)
    events, dead = EventDecoder().decode_batch((raw, "x") for raw in lines)
    assert not dead
    for i in range(0, len(events), 2000):
        replay.feed(events[i:i + 2000])
    replay.finish()
    return [msgspec.to_builtins(t) for t in out], replay.session.late


@pytest.mark.parametrize(("name", "lateness"), [("rees46-clickstream-sample.jsonl", "2m"),
                                                ("online-retail-orders.jsonl", "10m")])
def test_delayed_real_data_gives_the_sorted_files_triggers_live(kafka_bootstrap, redis_url, redis_client, tmp_path,
                                                                shared_data, name, lateness):
    lines = [raw for raw in (shared_data / name).read_bytes().splitlines() if raw.strip()]
    arrived = disorder(lines, parse_duration(lateness), seed=1)
    behind = displaced(lines, arrived)
    assert behind > len(lines) // 20   # the delays do disorder the stream
    until = now_ms()
    expected, _ = backtest(rules_with_lateness(tmp_path / "plain", None), lines, until)
    rules = rules_with_lateness(tmp_path / "late", lateness)
    in_backtest, late = backtest(rules, arrived, until)
    assert sorted(map(trigger_key, in_backtest)) == sorted(map(trigger_key, expected)) and late == 0
    without, late_without = backtest(tmp_path / "plain", arrived, until)
    assert late_without > 0 and sorted(map(trigger_key, without)) != sorted(map(trigger_key, expected))

    topic = create_topic(kafka_bootstrap, unique("late-events"))
    produce(kafka_bootstrap, topic, arrived)
    for batch_size in (1000, 3):   # the default poll batch and a tiny one
        sink = unique("triggers")
        config = write_config(tmp_path / f"c{batch_size}.toml", topic=topic, redis_url=redis_url,
                              prefix=unique("late"), sink_topic=sink, dead_topic=unique("dead"))
        text = config.read_text().replace(f'rules = "{ROOT / "rules"}"', f'rules = "{rules}"')
        config.write_text(text.replace("[kafka]\n", f"[kafka]\nbatch_size = {batch_size}\n"))
        res = run_engine(config, timeout=400)
        got = read_topic(kafka_bootstrap, sink)
        assert sorted(map(trigger_key, got)) == sorted(map(trigger_key, expected)), (batch_size, res.stderr[-2000:])
        assert "(0 late)" in res.stderr
