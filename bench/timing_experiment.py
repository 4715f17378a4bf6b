"""A closed loop for SPEC §3b's timing experiment: simulated customers who react to when a
message reaches them, so that `send_time: {best, holdout: …}` has an effect to find.

A replay of recorded events cannot show what timing is worth (the events do not react to the
sends). Here each customer of `bench.planted_hours` also buys after a restock message with a
probability that depends on the hour it arrived in: `convert_in_hour` in their planted hour,
`convert_otherwise` at any other. The engine runs hour by hour: each hour's generated events,
plus the purchases its earlier sends caused, go into the same `Replay` the backtest uses; the
triggers of that hour decide the purchases of the next ones. `report`'s row
`restock (send time)` then compares the best-hour arm with the at-once arm.

    python -m bench.timing_experiment [--customers 2000] [--days 60] [--in-hour 0.3 --otherwise 0.1]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import msgspec

from bench.planted_hours import generate
from engine.actions.trigger import Trigger
from engine.cli.report import build_report
from engine.core.times import parse_ts
from engine.events.decode import EventDecoder
from engine.events.model import Event
from engine.offline.backtest import BacktestSummary, Replay
from engine.policy.lift import CustomerLift
from engine.rules.compiler import load_and_compile
from engine.state.engagement import local_hour

HOUR = 3_600_000
RULES = """
policy:
  responses_by_channel: {email: [email_opened]}
  send_time: {within: 24h, min_responses: 3, half_life: 30d}
  attribution: {window: 2d, responses: [email_opened], conversions: [purchase], revenue: amount}
rules:
  - id: restock
    type: transactional
    on: back_in_stock
    then: {action: restock, channel: email, send_time: {best, holdout: 50%}}
    cooldown: 3d
"""


def simulate(customers: int = 2000, days: int = 60, seed: int = 7, convert_in_hour: float = 0.3,
             convert_otherwise: float = 0.1, arms: str = "experiment") -> BacktestSummary:
    """The loop's backtest summary (triggers, lift by customer, the timing arms). `arms`:
    "experiment" (half sent at once), "best" (everyone at the best hour) or "at_once" (nobody
    deferred): the last two give the true effect of timing, to check the experiment against."""
    rnd = random.Random(seed + 1)
    raw = list(generate(customers, days, seed, restocks_per_day=0.05))
    preferred = {e["customer_id"]: e["properties"]["preferred_hour"] for e in raw if e["type"] == "identify"}
    zones = {e["customer_id"]: e["properties"]["timezone"] for e in raw if e["type"] == "identify"}
    events, _ = EventDecoder().decode_batch((msgspec.json.encode(e), "sim") for e in raw)
    with tempfile.TemporaryDirectory() as tmp:
        send_time = {"experiment": "send_time: {best, holdout: 50%}", "best": "send_time: best"}.get(arms)
        text = RULES.replace(", send_time: {best, holdout: 50%}", f", {send_time}" if send_time else "")
        (Path(tmp) / "rules.yaml").write_text(text)
        rules = load_and_compile(tmp)
    out: list[Trigger] = []
    replay = Replay(rules, out.extend)
    caused: list[Event] = []   # purchases the sends caused, fed in as their time comes
    start, end = events[0].ts // HOUR, events[-1].ts // HOUR + 1
    i = seen = 0
    for hour in range(start, end + 1):
        limit = (hour + 1) * HOUR
        batch = []
        while i < len(events) and events[i].ts < limit:
            batch.append(events[i])
            i += 1
        due = sorted((e for e in caused if e.ts < limit), key=lambda e: e.ts)
        caused = [e for e in caused if e.ts >= limit]
        batch = sorted(batch + due, key=lambda e: (e.ts, e.event_id))
        if batch:
            replay.feed(batch)
        for t in out[seen:]:
            if t.status != "sent":
                continue
            at = parse_ts(t.fired_at)
            hit = local_hour(at, zones[t.customer_id]) == preferred[t.customer_id]
            if rnd.random() < (convert_in_hour if hit else convert_otherwise):
                ts = max(at, limit) + rnd.randrange(HOUR, 6 * HOUR)   # within hours, never in the past
                caused.append(Event(f"buy-{t.trigger_id}", "purchase", t.customer_id, ts, {"amount": 40.0}))
        seen = len(out)
    replay.finish()
    return replay.summary(0, 0.0)


def timing_lift(summary: BacktestSummary) -> CustomerLift:
    return next(r for r in build_report(summary).rules if r.rule_id == "restock (send time)")


def true_effect(customers: int, days: int, seed: int, convert_in_hour: float, convert_otherwise: float) -> float:
    """Everyone at the best hour, against nobody deferred: the share of the rule's customers
    converted in each world, and their difference."""
    rates = []
    for arms in ("best", "at_once"):
        g = simulate(customers, days, seed, convert_in_hour, convert_otherwise, arms).by_customer["restock"].contacted
        rates.append(g.converted / g.customers)
    return rates[0] - rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--in-hour", type=float, default=0.3)
    parser.add_argument("--otherwise", type=float, default=0.1)
    args = parser.parse_args()
    lift = timing_lift(simulate(args.customers, args.days, args.seed, args.in_hour, args.otherwise))
    c = lift.conversion
    ci = f"[{c.ci[0] * 100:+.1f}, {c.ci[1] * 100:+.1f}]" if c.ci else "-"
    print(f"best-hour arm: {lift.contacted.converted}/{lift.contacted.customers} converted; at-once arm:"
          f" {lift.control.converted}/{lift.control.customers}")
    print(f"conversion lift of timing: {c.lift * 100 if c.lift is not None else float('nan'):+.1f} points {ci};"
          f" {lift.verdict}")
    truth = true_effect(args.customers, args.days, args.seed, args.in_hour, args.otherwise)
    print(f"true effect (everyone at the best hour vs nobody deferred, same customers): {truth * 100:+.1f} points")


if __name__ == "__main__":
    main()
