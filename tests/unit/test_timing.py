"""SPEC §3b: each customer's best hour and best channel, learned from their responses, with
the population's hour as the fallback; hand-made cases through the backtest."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.actions.trigger import Trigger
from engine.core.times import format_ts, parse_ts
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.compiler import CompiledRules, load_and_compile
from engine.rules.errors import RulesInvalid
from engine.state.customer import encode_state
from engine.state.engagement import decode, local_hour, next_hour_start, read, record_response, record_send

HOUR = 3_600_000
DAY = 24 * HOUR
HALF = 30 * DAY

RULES = """
policy:
  responses_by_channel:
    email: [email_opened, email_clicked]
    push: [push_opened]
  send_time: {within: 24h, min_responses: 3, half_life: 30d}
rules:
  - id: restock
    type: transactional
    on: back_in_stock
    then: {action: restock, channel: CHANNEL, send_time: best}
"""


def compile_yaml(tmp_path: Path, text: str) -> CompiledRules:
    (tmp_path / "rules.yaml").write_text(text)
    return load_and_compile(tmp_path)


def run(rules: CompiledRules, events: list[Event]) -> tuple[list[Trigger], Replay]:
    out: list[Trigger] = []
    replay = Replay(rules, out.extend, drain=True)
    replay.feed(sorted(events, key=lambda e: e.ts))
    replay.finish()
    return out, replay


def ev(n: int, type_: str, cid: str, ts: str | int, **props: object) -> Event:
    return Event(f"{cid}-{type_}-{n}", type_, cid, parse_ts(ts) if isinstance(ts, str) else ts, props)


BERLIN = "Europe/Berlin"


def opener(cid: str, times: list[str], type_: str = "email_opened") -> list[Event]:
    return [ev(0, "identify", cid, "2026-01-01T00:00:00Z", timezone=BERLIN)] + [
        ev(i, type_, cid, t) for i, t in enumerate(times)]


# -- the bytes ---------------------------------------------------------------------------------------

def test_two_channels_take_62_bytes_and_round_trip():
    blob = b""
    t = parse_ts("2026-01-05T06:15:00Z")
    for i in range(5):
        blob = record_response(blob, 0, 7, t + i * DAY, HALF)
        blob = record_send(blob, 1, t + i * DAY, HALF)
    assert len(blob) == 62
    at, channels = decode(blob)
    assert at == (t + 4 * DAY) // HOUR
    assert channels[0].best_hour() == 7 and channels[0].responses == pytest.approx(4.77, abs=0.1)
    assert channels[0].count == 5 and channels[1].count == 0
    assert channels[1].sends == pytest.approx(4.77, abs=0.1) and channels[1].responses == 0


def test_values_halve_every_half_life_and_a_late_response_counts_for_its_age():
    t = parse_ts("2026-01-05T06:15:00Z")
    blob = record_response(b"", 0, 7, t, HALF)
    assert read(blob, t + HALF, HALF)[0].hours[7] == pytest.approx(0.5, abs=0.04)
    later = record_response(blob, 0, 9, t - HALF, HALF)   # a response 30 days older than the newest
    assert read(later, t, HALF)[0].hours[9] == pytest.approx(0.5, abs=0.04)
    assert read(later, t, HALF)[0].hours[7] == pytest.approx(1.0, abs=0.04)


def test_many_responses_keep_their_proportions_in_one_byte_each():
    blob = b""
    t = parse_ts("2026-01-05T06:15:00Z")
    for i in range(2000):
        blob = record_response(blob, 0, 7 if i % 4 else 20, t + i * 60_000, HALF)
    stats = read(blob, t + 2000 * 60_000, HALF)[0]
    assert stats.best_hour() == 7 and stats.hours[7] / stats.hours[20] == pytest.approx(3.0, rel=0.05)


def test_local_hours_follow_the_zone_and_daylight_saving():
    assert local_hour(parse_ts("2026-01-05T06:15:00Z"), BERLIN) == 7          # CET, UTC+1
    assert local_hour(parse_ts("2026-07-05T06:15:00Z"), BERLIN) == 8          # CEST, UTC+2
    assert local_hour(parse_ts("2026-01-05T06:15:00Z"), "Not/AZone") == 6     # unknown: UTC
    # 07:00 local the morning after the spring-forward night (2026-03-29 in Berlin) is 05:00 UTC
    assert format_ts(next_hour_start(parse_ts("2026-03-28T12:00:00Z"), BERLIN, 7)) == "2026-03-29T05:00:00.000Z"
    assert format_ts(next_hour_start(parse_ts("2026-03-27T12:00:00Z"), BERLIN, 7)) == "2026-03-28T06:00:00.000Z"
    now = parse_ts("2026-01-05T06:30:00Z")
    assert next_hour_start(now, BERLIN, 7) == now   # inside the hour already: now


# -- the best hour -----------------------------------------------------------------------------------

def test_a_customer_who_opens_at_7_gets_a_10_oclock_trigger_at_7_the_next_day(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email"))
    events = opener("c1", ["2026-01-05T06:12:00Z", "2026-01-06T06:40:00Z", "2026-01-07T06:05:00Z"])
    events.append(ev(0, "back_in_stock", "c1", "2026-01-08T09:00:00Z"))   # 10:00 in Berlin
    out, replay = run(rules, events)
    (t,) = out
    assert (t.fired_at, t.status, t.channel) == ("2026-01-09T06:00:00.000Z", "sent", "email")   # 07:00 local
    # the same trigger id as sending at once would have had: a deferral keeps its identity
    at_once, _ = run(compile_yaml(tmp_path, RULES.replace("CHANNEL", "email").replace(", send_time: best", "")),
                     events)
    assert at_once[0].trigger_id == t.trigger_id and at_once[0].fired_at == "2026-01-08T09:00:00.000Z"


def test_too_few_responses_and_none_get_the_populations_hour(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email"))
    # the population: twenty customers who open at 19:xx Berlin time, days before
    crowd = [e for i in range(20) for e in opener(f"p{i}", [f"2026-01-0{2 + i % 3}T18:{10 + i:02d}:00Z"])]
    few = opener("few", ["2026-01-06T06:12:00Z"])                    # one response at 07:xx: too few
    none = [ev(0, "identify", "none", "2026-01-01T00:00:00Z", timezone=BERLIN)]
    stock = [ev(0, "back_in_stock", c, "2026-01-08T09:00:00Z") for c in ("few", "none")]
    out, _ = run(rules, crowd + few + none + stock)
    assert {t.customer_id: t.fired_at for t in out} == {"few": "2026-01-08T18:00:00.000Z",    # 19:00 local
                                                          "none": "2026-01-08T18:00:00.000Z"}


def test_without_any_responses_anywhere_a_send_goes_at_once(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email"))
    out, _ = run(rules, [ev(0, "back_in_stock", "c1", "2026-01-08T09:00:00Z")])
    assert out[0].fired_at == "2026-01-08T09:00:00.000Z"


def test_the_populations_hour_in_force_today_ignores_todays_and_yesterdays_responses(tmp_path):
    """Deterministic whatever the order the day's events arrive in: only days before yesterday count."""
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email"))
    old = [e for i in range(5) for e in opener(f"o{i}", ["2026-01-02T18:30:00Z"])]     # 19:xx, 6 days before
    recent = [e for i in range(9) for e in opener(f"r{i}", ["2026-01-07T06:30:00Z"])]  # 07:xx, yesterday
    customer = opener("c1", []) + [ev(0, "back_in_stock", "c1", "2026-01-08T09:00:00Z")]
    out, _ = run(rules, old + recent + customer)
    assert out[0].fired_at == "2026-01-08T18:00:00.000Z"   # the old crowd's 19:00, not yesterday's 07:00
    utc = [ev(0, "back_in_stock", "u1", "2026-01-08T09:00:00Z")]   # the hour is local: 19:00 UTC for a UTC customer
    out, _ = run(rules, old + recent + utc)
    assert out[0].fired_at == "2026-01-08T19:00:00.000Z"


def test_daylight_saving_is_respected(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email"))
    events = opener("c1", ["2026-03-24T06:12:00Z", "2026-03-25T06:40:00Z", "2026-03-26T06:05:00Z"])  # 07:xx CET
    events.append(ev(0, "back_in_stock", "c1", "2026-03-28T12:00:00Z"))
    out, _ = run(rules, events)
    assert out[0].fired_at == "2026-03-29T05:00:00.000Z"   # 07:00 CEST, after the clocks went forward


def test_quiet_hours_win_over_the_best_hour(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email") .replace("policy:\n", """policy:
  quiet_hours: {from: "06:00", to: "08:00", mode: defer}
"""))
    events = opener("c1", ["2026-01-05T05:12:00Z", "2026-01-06T05:40:00Z", "2026-01-07T05:05:00Z"])   # 06:xx local
    events.append(ev(0, "back_in_stock", "c1", "2026-01-08T09:00:00Z"))
    out, _ = run(rules, events)
    assert out[0].fired_at == "2026-01-08T09:00:00.000Z"   # 06:00 is quiet: no deferral into it, sent now


def test_a_best_hour_beyond_within_sends_at_once(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email").replace("within: 24h", "within: 2h"))
    events = opener("c1", ["2026-01-05T06:12:00Z", "2026-01-06T06:40:00Z", "2026-01-07T06:05:00Z"])
    events.append(ev(0, "back_in_stock", "c1", "2026-01-08T09:00:00Z"))
    out, _ = run(rules, events)
    assert out[0].fired_at == "2026-01-08T09:00:00.000Z"


# -- the best channel ----------------------------------------------------------------------------------

def test_a_customer_who_ignores_mail_but_opens_pushes_gets_push(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "best").replace(", send_time: best", "") + """
  - {id: mail, type: behavioral, on: newsletter, then: {action: news, channel: email}}
  - {id: app, type: behavioral, on: app_promo, then: {action: promo, channel: push}}
""")
    cid = "c1"
    events = [ev(0, "identify", cid, "2026-01-01T00:00:00Z", timezone=BERLIN)]
    for d in range(4):   # four mails, none opened; four pushes, three opened
        day = f"2026-01-{10 + d:02d}"
        events.append(ev(d, "newsletter", cid, f"{day}T08:00:00Z"))
        events.append(ev(d, "app_promo", cid, f"{day}T12:00:00Z"))
        if d:
            events.append(ev(d, "push_opened", cid, f"{day}T12:30:00Z"))
    events.append(ev(0, "back_in_stock", cid, "2026-01-20T09:00:00Z"))
    out, _ = run(rules, events)
    (restock,) = [t for t in out if t.rule_id == "restock"]
    assert restock.channel == "push"
    # the same customer opening mails instead: email
    mails = [e if e.type != "push_opened" else ev(e.ts, "email_opened", cid, e.ts) for e in events]
    out, _ = run(rules, mails)
    assert [t.channel for t in out if t.rule_id == "restock"] == ["email"]


def test_channel_best_needs_three_sends_on_two_channels_else_the_policys_first(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "best").replace(", send_time: best", ""))
    events = opener("c1", ["2026-01-05T06:12:00Z"], type_="push_opened")
    events.append(ev(0, "back_in_stock", "c1", "2026-01-08T09:00:00Z"))
    out, _ = run(rules, events)
    assert out[0].channel == "email"   # no sends recorded on either: the policy's first channel


def test_channel_best_skips_channels_without_consent(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "best").replace(", send_time: best", ""))
    events = [ev(0, "consent", "c1", "2026-01-01T00:00:00Z", channel="email", granted=False),
              ev(0, "back_in_stock", "c1", "2026-01-08T09:00:00Z")]
    out, _ = run(rules, events)
    assert (out[0].channel, out[0].status) == ("push", "sent")


# -- validation, state size ------------------------------------------------------------------------------

def test_best_needs_the_policys_responses_by_channel(tmp_path):
    with pytest.raises(RulesInvalid) as info:
        compile_yaml(tmp_path, """
rules:
  - {id: r, type: transactional, on: x, then: {action: a, channel: best, send_time: best}}
""")
    assert "name them in the policy, e.g. responses_by_channel" in str(info.value)
    with pytest.raises(RulesInvalid) as info:
        compile_yaml(tmp_path, RULES.replace("CHANNEL", "sms"))
    assert "responses_by_channel names none for sms" in str(info.value)


def test_a_state_with_two_channels_of_engagement_grows_by_at_most_64_bytes(tmp_path):
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email"))
    events = opener("c1", [f"2026-01-{d:02d}T06:12:00Z" for d in range(2, 20)])
    events += [ev(d, "push_opened", "c1", f"2026-01-{d:02d}T18:00:00Z") for d in range(2, 20)]
    _, replay = run(rules, events)
    st = replay.store.states["c1"]
    without = msgspec.structs.replace(st, engagement=b"")
    assert 0 < len(encode_state(st)) - len(encode_state(without)) <= 64


# -- explain -------------------------------------------------------------------------------------------

def test_explain_says_why_that_hour_and_that_channel(tmp_path):
    from engine.offline.explain import explain_customer

    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "best") + """
  - {id: mail, type: behavioral, on: newsletter, then: {action: news, channel: email}}
  - {id: app, type: behavioral, on: app_promo, then: {action: promo, channel: push}}
""")
    events = opener("c1", [f"2026-01-{10 + d:02d}T06:30:00Z" for d in range(1, 4)], type_="push_opened")
    for d in range(4):
        events += [ev(d, "newsletter", "c1", f"2026-01-{10 + d:02d}T08:00:00Z"),
                   ev(d, "app_promo", "c1", f"2026-01-{10 + d:02d}T05:00:00Z")]
    events.append(ev(0, "back_in_stock", "c1", "2026-01-20T09:00:00Z"))
    e = explain_customer(rules, "c1", events=sorted(events, key=lambda x: x.ts), at="2026-01-22T00:00:00Z")
    (r,) = [r for r in e.rules if r.rule_id == "restock"]
    assert any("send_time best, deferred to 2026-01-21T06:00:00.000Z: 07:00 local, the customer's most frequent"
               " response hour" in n for n in r.notes), r.notes
    (t,) = r.triggers
    assert t.channel == "push" and "the best decayed response rate of email, push (channel: best)" in t.why


def test_explain_shows_the_populations_hour_from_every_customer(tmp_path):
    """Explain replays one customer; the population's hour needs every customer's responses (it
    sent the newcomer at once before: from its own events there was no population)."""
    from engine.offline.explain import explain_customer

    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email"))
    crowd = [e for i in range(20) for e in opener(f"p{i}", [f"2026-01-0{2 + i % 3}T18:{10 + i:02d}:00Z"])]
    newcomer = [ev(0, "identify", "n", "2026-01-01T00:00:00Z", timezone=BERLIN),
                ev(0, "back_in_stock", "n", "2026-01-08T09:00:00Z")]
    events = sorted(crowd + newcomer, key=lambda x: x.ts)
    e = explain_customer(rules, "n", events=events, at="2026-01-09T00:00:00Z")
    (r,) = e.rules
    assert any("deferred to 2026-01-08T18:00:00.000Z: 19:00 local, the population's best hour" in n
               for n in r.notes), r.notes
    path = tmp_path / "events.jsonl"   # the same from a file
    path.write_bytes(b"\n".join(msgspec.json.encode(x) for x in events))
    (r,) = explain_customer(rules, "n", events=path, at="2026-01-09T00:00:00Z").rules
    assert any("the population's best hour" in n for n in r.notes)


# -- evaluation on generated data ------------------------------------------------------------------------

def planted_summary(tmp_path: Path, **kwargs: object):
    from bench.planted_hours import RULES as PLANTED
    from bench.planted_hours import generate
    from engine.offline.backtest import backtest_file

    d = tmp_path / "planted"
    d.mkdir()
    (d / "rules.yaml").write_text(PLANTED)
    events = d / "events.jsonl"
    events.write_bytes(b"\n".join(msgspec.json.encode(e) for e in generate(**kwargs)))  # type: ignore[arg-type]
    return backtest_file(load_and_compile(d), events, lambda out: None, lambda dead: None, progress=False)


def test_with_planted_hours_the_best_hour_holds_the_next_response_at_least_twice_as_often(tmp_path):
    t = planted_summary(tmp_path, customers=300, days=45, seed=3).timing["restock"]
    assert t.responded > 1000
    assert t.hour_hits >= 2 * t.hour_hits_at_once
    assert t.hour_hits / t.responded > 0.5


def test_without_a_preferred_hour_the_best_hour_is_no_better_than_at_once(tmp_path):
    """No planted effect: opens at any hour. Choosing an hour must not look like it pays."""
    t = planted_summary(tmp_path, customers=300, days=45, seed=3, in_hour=0.0).timing["restock"]
    assert t.responded > 1000
    best, once = t.hour_hits / t.responded, t.hour_hits_at_once / t.responded
    assert 0.02 < best < 0.08 and 0.02 < once < 0.08   # about 1 in 24 either way


def test_a_journey_step_waits_for_the_best_hour_and_its_next_wait_starts_then(tmp_path):
    rules = compile_yaml(tmp_path, """
policy:
  responses_by_channel: {email: [email_opened]}
rules:
  - id: j
    type: journey
    on: signup
    steps:
      - {id: hello, then: {action: hello, channel: email, send_time: best}}
      - {id: pause, wait: 1d}
      - {id: again, then: {action: again, channel: email}}
""")
    events = opener("c1", ["2026-01-05T06:12:00Z", "2026-01-06T06:40:00Z", "2026-01-07T06:05:00Z"])
    events.append(ev(0, "signup", "c1", "2026-01-08T09:00:00Z"))
    out, _ = run(rules, events)
    assert [(t.step, t.fired_at) for t in out] == [("hello", "2026-01-09T06:00:00.000Z"),
                                                    ("again", "2026-01-10T06:00:00.000Z")]


def test_a_timing_experiment_sends_a_share_at_once_and_report_compares_the_arms(tmp_path):
    from bench.planted_hours import generate
    from engine.cli.report import build_report
    from engine.offline.backtest import backtest_file
    from engine.policy.contact import at_once

    d = tmp_path / "exp"
    d.mkdir()
    (d / "rules.yaml").write_text(RULES.replace("CHANNEL", "email").replace("send_time: best",
                                                                            "send_time: {best, holdout: 30%}"))
    events = d / "events.jsonl"
    events.write_bytes(b"\n".join(msgspec.json.encode(e) for e in generate(customers=200, days=30, seed=5)))
    out: list[Trigger] = []
    summary = backtest_file(load_and_compile(d), events, out.extend, lambda dead: None, progress=False)
    sent = [t for t in out if t.status == "sent"]
    held = {t.customer_id for t in sent if at_once(t.customer_id, "restock", "", 0.3)}
    arm = summary.by_customer["restock (send time)"]
    assert arm.control.customers <= len(held)
    assert arm.contacted.customers <= len({t.customer_id for t in sent}) - len(held)
    assert 0.15 < arm.control.customers / (arm.control.customers + arm.contacted.customers) < 0.45
    # the best-hour arm is sent on the hour (deferred to its start), the at-once arm when the rule fired
    on_the_hour = [parse_ts(t.fired_at) % HOUR == 0 for t in sent if t.customer_id not in held]
    assert sum(on_the_hour) > 0.8 * len(on_the_hour)
    at_once_sends = [t for t in sent if t.customer_id in held]
    assert sum(1 for t in at_once_sends if parse_ts(t.fired_at) % HOUR) > 0.9 * len(at_once_sends)
    report = build_report(summary)
    assert "restock (send time)" in [r.rule_id for r in report.rules]


# -- the timing experiment, in a closed loop (bench.timing_experiment) -------------------------------------

def test_the_timing_experiment_finds_a_planted_effect_and_covers_the_true_one():
    """Customers buy after a restock message with 30% in their planted hour, 10% otherwise."""
    from bench.timing_experiment import simulate, timing_lift, true_effect

    covered = excluded = 0
    for seed in (1, 2, 3):
        c = timing_lift(simulate(400, 30, seed, 0.3, 0.1)).conversion
        truth = true_effect(400, 30, seed, 0.3, 0.1)
        assert c.ci is not None and truth > 0.1
        covered += c.ci[0] <= truth <= c.ci[1]
        excluded += c.ci[0] > 0
    assert excluded == 3 and covered >= 2


def test_the_timing_experiment_rarely_excludes_zero_without_an_effect():
    """The same loop, 20% whatever the hour: the interval should hold zero (about 95% of the time)."""
    from bench.timing_experiment import simulate, timing_lift

    excludes = 0
    for seed in range(20):
        c = timing_lift(simulate(300, 30, seed, 0.2, 0.2)).conversion
        assert c.ci is not None
        excludes += not (c.ci[0] <= 0 <= c.ci[1])
    assert excludes <= 3   # 2 of these 20 (2 of 50 seeds in all: 4%); 3 or fewer has a 98% chance at 5%


def test_responses_and_sends_at_the_edges_of_the_calendar_are_learned_without_error(tmp_path):
    """Found by the fuzz stream: an event time before 1970 (or near year 9000) overflowed the
    engagement header; every time the decoder accepts must be learned, in any zone."""
    assert format_ts(parse_ts("0001-01-01T00:30:00Z")) == "0001-01-01T00:30:00.000Z"   # RFC 3339: four digits
    rules = compile_yaml(tmp_path, RULES.replace("CHANNEL", "email"))
    for ts in ("0001-01-01T00:30:00Z", "1969-12-31T23:00:00Z", "8999-12-31T23:30:00Z"):
        events = [ev(0, "identify", "c1", ts, timezone="Pacific/Kiritimati"), ev(1, "email_opened", "c1", ts),
                  ev(2, "email_opened", "c1", ts), ev(3, "email_opened", "c1", ts), ev(4, "back_in_stock", "c1", ts)]
        out, replay = run(rules, events)
        assert replay.dead_letters == 0 and [t.status for t in out] == ["sent"], ts
        assert decode(replay.store.states["c1"].engagement)[1][0].count == 3


def test_engagement_bytes_are_those_of_every_earlier_release_over_a_long_random_history():
    """The bytes (and what `read` decays them to) after 3,000 random responses and sends, late ones
    and gaps included, pinned by digest: a faster encoding must not move a single bit, or a live
    engine would disagree with the states it wrote before an upgrade."""
    import hashlib
    import random

    from engine.state import engagement as eng

    def digest(seed: int) -> str:
        rnd, h, blob, ts = random.Random(seed), hashlib.sha256(), b"", 1_767_225_600_000
        for _ in range(3000):
            ts += (rnd.choice([0, 1, 60_000, 3_600_000, 86_400_000, 40 * 86_400_000]) if rnd.random() > 0.1
                   else -rnd.randrange(0, 5 * 86_400_000))
            half_life = rnd.choice([3_600_000, 86_400_000, 30 * 86_400_000])
            if rnd.random() < 0.6:
                blob = eng.record_response(blob, rnd.randrange(3), rnd.randrange(24), ts, half_life)
            else:
                blob = eng.record_send(blob, rnd.randrange(3), ts, half_life)
            h.update(blob)
            seen = eng.read(blob, ts + rnd.randrange(0, 10 * 86_400_000), half_life)
            h.update(repr(sorted((k, v.hours, v.sends, v.count) for k, v in seen.items())).encode())
        return h.hexdigest()[:16]

    assert [digest(s) for s in range(4)] == ["4f66eb1194619452", "209862cbe20ae2cc", "be54b44f07c1c586",
                                             "02c2b5006298f158"]


def test_engagement_rounding_is_the_builtin_round_bit_for_bit():
    """The encoder's own rounding (a generic call is slow compiled) against `round`: exact ties,
    both sides of them, and random values over the range it rounds."""
    import random

    from engine.state.engagement import _round

    values = [k / 2 for k in range(0, 1200)] + [k / 2 + d for k in range(0, 600) for d in (-1e-9, 1e-9)]
    values += [2.0**52 - 0.5, 2.0**52, 2.0**53, 0.49999999999999994, 1e-300]
    rnd = random.Random(7)
    values += [rnd.uniform(0, 4096) for _ in range(20_000)] + [rnd.random() * 16 for _ in range(5_000)]
    assert [_round(v) for v in values] == [round(v) for v in values]
