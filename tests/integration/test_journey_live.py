"""SPEC §3a through the real services: hand-made journey cases (responses in time, too late and
on another campaign, exits, suppression, fallback channels, splits, re-entry, the held-out walk)
produced to Kafka, run by `triggers run` with Redis state, give the backtest's triggers."""

from __future__ import annotations

import msgspec
from harness import run_against_backtest, trigger_key

from engine.core.times import now_ms
from engine.state.customer import encode_state
from engine.state.redis import RedisStore

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

RULES = """
aggregates:
  lifetime_spend: {sum: amount, on: purchase}
  interest:       {decayed_count: product_view, by: category, half_life: 14d}
rules:
  - id: welcome
    type: journey
    on: signup
    exit_on: [purchase]
    reenter: restart
    control_group: 20%
    steps:
      - {id: hello, then: {action: welcome-1, channel: email}}
      - id: clicked
        wait: {event: email_clicked, match: {campaign: welcome-1}, within: 2d}
        yes: recommend
        no: remind
      - {id: recommend, then: {action: recommendations, channel: email, payload: {top: "{top(interest)}"}}, next: end}
      - {id: remind, then: {action: welcome-reminder, channel: [push, sms]}}
      - {id: big-spender, if: lifetime_spend >= 500, yes: vip, no: end}
      - {id: vip, split: {a: 50%, b: 50%}}
      - {id: a, then: {action: vip-offer-a, channel: email}, next: end}
      - {id: b, wait: 1d, next: a}
  - id: coupon
    type: journey
    on: coupon_issued
    reenter: never
    if_suppressed: continue
    steps:
      - {id: issued, then: {action: coupon, channel: email}}
      - {id: redeemed, wait: {event: coupon_redeemed, match: {coupon: "{event.coupon}"}, within: 7d},
         yes: thanks, no: nudge}
      - {id: thanks, then: {action: thanks, channel: email}, next: end}
      - {id: nudge, then: {action: coupon-reminder, channel: [push, email]}}
policy:
  frequency_caps: [{channel: push, max: 1, per: 7d}]
  quiet_hours: {from: "23:00", to: "06:00", mode: defer}
"""


def cases(start: int) -> list[dict]:
    """Sixty customers, each with one of the section's situations (by customer number)."""
    out = []
    for i in range(60):
        cid, t = f"c{i}", start + i * 7 * MIN
        evs = [("signup", t, {})]
        kind = i % 10
        if kind == 1:
            evs.append(("email_clicked", t + DAY, {"campaign": "welcome-1"}))           # in time
        elif kind == 2:
            evs.append(("email_clicked", t + 2 * DAY + MIN, {"campaign": "welcome-1"}))  # too late
        elif kind == 3:
            evs.append(("email_clicked", t + HOUR, {"campaign": "promo"}))             # another campaign
        elif kind == 4:
            evs.append(("purchase", t + HOUR, {"amount": 50}))                         # exit
        elif kind == 5:
            evs.insert(0, ("consent", t - 1, {"channel": "email", "granted": False}))  # suppression ends it
        elif kind == 6:
            evs.insert(0, ("consent", t - 1, {"channel": "push", "granted": False}))   # fallback to sms
        elif kind == 7:
            evs.insert(0, ("purchase", t - DAY, {"amount": 900}))                      # big spender: the split
        elif kind == 8:
            evs.append(("signup", t + DAY, {}))                                        # restart
        elif kind == 9:
            evs += [("coupon_issued", t, {"coupon": f"K{i}"}), ("coupon_issued", t + HOUR, {"coupon": f"L{i}"}),
                    ("coupon_redeemed", t + DAY, {"coupon": f"K{i}" if i % 20 == 9 else "other"})]
        for n, (type_, ts, props) in enumerate(evs):
            out.append({"event_id": f"{cid}-{n}", "type": type_, "customer_id": cid, "ts": ts, "properties": props})
    return sorted(out, key=lambda e: (e["ts"], e["event_id"]))


def test_journeys_through_kafka_and_redis_give_the_backtests_triggers(kafka_bootstrap, redis_url, redis_client,
                                                                      tmp_path):
    lines = [msgspec.json.encode(e) for e in cases(now_ms() - 20 * DAY)]   # every deadline is due by now
    got, want, prefix, _, replay = run_against_backtest(kafka_bootstrap, redis_url, tmp_path, "journey", RULES, lines)
    # every situation happened: each step sent, the fallback used, suppressions, held-out walks
    assert {t["step"] for t in want} == {"hello", "recommend", "remind", "a", "issued", "thanks", "nudge"}
    assert {t["channel"] for t in want if t["step"] == "remind"} >= {"push", "sms"}
    assert {t["status"] for t in want} == {"sent", "held_out", "suppressed"}

    assert sorted(map(trigger_key, got)) == sorted(map(trigger_key, want))
    live = RedisStore(redis_url, prefix).load_many(list(replay.store.states))
    assert {c: encode_state(s) for c, s in live.items()} == {
        c: encode_state(s) for c, s in replay.store.states.items()}
