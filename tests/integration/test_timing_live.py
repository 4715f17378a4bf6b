"""SPEC §3b through the real services: `send_time: best` with customers of every kind spread over
four Kafka partitions, run by `triggers run` with Redis state, gives the backtest's send times:
the population's hour live comes from every partition's responses, whatever the poll batches."""

from __future__ import annotations

import msgspec
import pytest
from harness import run_against_backtest, trigger_key

from engine.core.times import format_ts, now_ms
from engine.state.redis import RedisStore

HOUR = 3_600_000
DAY = 24 * HOUR

RULES = """
policy:
  responses_by_channel:
    email: [email_opened]
    push: [push_opened]
  send_time: {within: 24h, min_responses: 3, half_life: 30d}
  quiet_hours: {from: "22:00", to: "06:00", mode: defer}
rules:
  - id: restock
    type: transactional
    on: back_in_stock
    then: {action: restock, channel: email, send_time: best}
  - id: price-drop
    type: transactional
    on: price_drop
    then: {action: price-drop, channel: best}
  - id: app-news
    type: transactional
    on: app_news
    then: {action: app-news, channel: push}
"""


def events(start: int) -> list[dict]:
    """Three customers who open mail at 19:xx Berlin time, several times a day (the population's
    hour); twenty who open at 07:xx every third day (their own hour); thirty newcomers with no
    responses; seven who ignore mail and open pushes. Twenty days, restocks on three of them.

    With three 19:xx openers over four partitions, one partition has none: its newcomers get
    19:00 only if the population is counted over every partition (per partition it was 07:00,
    or at once)."""
    out: list[dict] = []

    def add(cid: str, n: int, type_: str, ts: int, **props) -> None:
        out.append({"event_id": f"{cid}-{n}", "type": type_, "customer_id": cid, "ts": format_ts(ts),
                    "properties": props})

    day0 = start - start % DAY
    for i in range(60):
        cid = f"c{i}"
        kind = "crowd" if i < 3 else "early" if i < 23 else "new" if i < 53 else "push"
        add(cid, 0, "identify", day0, timezone="Europe/Berlin")
        for d in range(20):
            t = day0 + (d + 1) * DAY
            if kind == "crowd":
                for k in range(4):
                    add(cid, 1 + 4 * d + k, "email_opened", t + 18 * HOUR + (10 * k + i) * 60_000)   # 19:xx Berlin
            elif kind == "early" and d % 3 == 0:
                add(cid, 1 + d, "email_opened", t + 6 * HOUR + i * 60_000)          # 07:xx Berlin
            elif kind == "push" and d % 2 == 0:
                add(cid, 1 + d, "push_opened", t + 12 * HOUR + i * 60_000)
            if kind == "push" and d < 4:
                add(cid, 300 + d, "app_news", t + 11 * HOUR)
        for d in (0, 9, 17):   # day 0: no population yet, at once
            add(cid, 100 + d, "back_in_stock", day0 + (d + 1) * DAY + 9 * HOUR)
            add(cid, 200 + d, "price_drop", day0 + (d + 1) * DAY + 10 * HOUR)
    return sorted(out, key=lambda e: (e["ts"], e["event_id"]))


@pytest.mark.parametrize("batch", [None, 3])
def test_best_hours_through_kafka_and_redis_give_the_backtests(kafka_bootstrap, redis_url, redis_client, tmp_path,
                                                               batch):
    lines = [msgspec.json.encode(e) for e in events(now_ms() - 25 * DAY)]   # every deferral is due by now
    got, want, prefix, topic, _ = run_against_backtest(kafka_bootstrap, redis_url, tmp_path, "timing", RULES, lines,
                                                       f"batch_size = {batch}" if batch else "")
    # every basis happened: deferred to the customer's hour and the population's, sent at once, push chosen
    hours = {t["fired_at"][11:13] for t in want if t["rule_id"] == "restock"}
    assert {"06", "18", "09"} <= hours and "push" in {t["channel"] for t in want}
    assert sorted(map(trigger_key, got)) == sorted(map(trigger_key, want))
    # the population's responses are in Redis, each counted once over the four partitions
    store = RedisStore(redis_url, prefix)
    partitions = [f"{topic}-{p}" for p in range(4)]
    days = list(range((now_ms() - 30 * DAY) // DAY, now_ms() // DAY + 1))
    counted = store.load_population(partitions, days)
    responses = sum(1 for e in events(0) if e["type"] in ("email_opened", "push_opened"))
    assert sum(map(sum, counted.values())) == responses
