"""SPEC §3a, line by line: `type: journey` rules run through the backtest (the core the live
worker shares), with hand-made events for every step kind and every sentence of the section."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.actions.trigger import Trigger, trigger_id
from engine.core.times import now_ms, parse_ts
from engine.events.decode import EventDecoder
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.compiler import CompiledRules, load_and_compile
from engine.rules.errors import RulesInvalid
from engine.state.customer import decode_state, encode_state
from engine.testing import run_in_memory

T0 = parse_ts("2026-03-02T10:00:00Z")
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WELCOME = (FIXTURES / "spec_journey" / "rules.yaml").read_text()   # SPEC §3a's example, whole


def compile_yaml(tmp_path: Path, text: str) -> CompiledRules:
    (tmp_path / "rules.yaml").write_text(text)
    return load_and_compile(tmp_path)


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RulesInvalid) as info:
        compile_yaml(tmp_path, text)
    return [str(e) for e in info.value.errors]


Ev = tuple[str, int, dict]


def events_of(cases: dict[str, list[Ev]]) -> list[Event]:
    out = [Event(f"{cid}-{i}", t, cid, ts, props) for cid, evs in cases.items() for i, (t, ts, props) in enumerate(evs)]
    return sorted(out, key=lambda e: e.ts)


def run(rules: CompiledRules, cases: dict[str, list[Ev]], drain: bool = True) -> tuple[list[Trigger], Replay]:
    out: list[Trigger] = []
    replay = Replay(rules, out.extend, drain=drain)
    replay.feed(events_of(cases))
    replay.finish()
    return out, replay


def walk(triggers: list[Trigger], cid: str = "c1") -> list[tuple[str, str, str, str]]:
    return [(t.step, t.status, t.channel, t.fired_at) for t in triggers if t.customer_id == cid]  # type: ignore[misc]


def at(ms: int) -> str:
    from engine.core.times import format_ts
    return format_ts(ms)


# -- wait for an event: in time, too late, another campaign ---------------------------------------------

def test_a_response_in_time_takes_yes_at_the_events_time(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    out, _ = run(rules, {"c1": [("signup", T0, {}), ("email_clicked", T0 + DAY, {"campaign": "welcome-1"})]})
    assert walk(out) == [("hello", "sent", "email", at(T0)), ("recommend", "sent", "email", at(T0 + DAY))]


def test_a_response_at_the_deadline_itself_is_in_time(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    out, _ = run(rules, {"c1": [("signup", T0, {}), ("email_clicked", T0 + 2 * DAY, {"campaign": "welcome-1"})]})
    assert [s for s, *_ in walk(out)] == ["hello", "recommend"]


def test_a_response_too_late_comes_after_no_has_been_taken(tmp_path):
    """Mautic #12686: the negative path must fire at the deadline, not later, and a late click changes nothing."""
    rules = compile_yaml(tmp_path, WELCOME)
    out, _ = run(rules, {"c1": [("signup", T0, {}),
                                ("email_clicked", T0 + 2 * DAY + 1, {"campaign": "welcome-1"})]})
    assert walk(out) == [("hello", "sent", "email", at(T0)), ("remind", "sent", "push", at(T0 + 2 * DAY))]


def test_a_response_to_another_campaign_does_not_answer_the_wait(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    out, _ = run(rules, {"c1": [("signup", T0, {}), ("email_clicked", T0 + HOUR, {"campaign": "promo"})]})
    assert [s for s, *_ in walk(out)] == ["hello", "remind"]


def test_match_is_a_template_over_the_entry_event(tmp_path):
    rules = compile_yaml(tmp_path, """
rules:
  - id: coupon
    type: journey
    on: coupon_issued
    steps:
      - {id: issued, then: {action: coupon, channel: email}}
      - {id: redeemed, wait: {event: coupon_redeemed, match: {coupon: "{event.coupon}"}, within: 7d},
         yes: thanks, no: nudge}
      - {id: thanks, then: {action: thanks, channel: email}, next: end}
      - {id: nudge, then: {action: coupon-reminder, channel: email}}
""")
    out, _ = run(rules, {
        "c1": [("coupon_issued", T0, {"coupon": "X1"}), ("coupon_redeemed", T0 + DAY, {"coupon": "X1"})],
        "c2": [("coupon_issued", T0, {"coupon": "X2"}), ("coupon_redeemed", T0 + DAY, {"coupon": "X1"})],
    })
    assert [s for s, *_ in walk(out, "c1")] == ["issued", "thanks"]
    assert [s for s, *_ in walk(out, "c2")] == ["issued", "nudge"]


def test_an_event_entry_with_a_wait_for_in_one_journey(tmp_path):
    """Dittofeed #1463: an event entry and a wait-for in the same journey."""
    rules = compile_yaml(tmp_path, WELCOME)
    out, _ = run(rules, {"c1": [("signup", T0, {}), ("email_clicked", T0 + MIN, {"campaign": "welcome-1"})],
                         "c2": [("signup", T0, {})]})
    assert [s for s, *_ in walk(out, "c1")] == ["hello", "recommend"]
    assert [s for s, *_ in walk(out, "c2")] == ["hello", "remind"]


# -- conditions, splits, delays -------------------------------------------------------------------------

def test_a_condition_step_branches_on_the_state_when_reached(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    big = [("purchase", T0 - DAY, {"amount": 900}), ("signup", T0, {})]
    out, replay = run(rules, {"big": big, "small": [("signup", T0, {})]})
    assert [s for s, *_ in walk(out, "big")] == ["hello", "remind", "a"]   # through the split: a, or b then a
    assert [s for s, *_ in walk(out, "small")] == ["hello", "remind"]
    f = replay.evaluator.funnels["welcome"]
    assert f.branches["big-spender"]["yes"].total == 1 and f.branches["big-spender"]["no"].total == 1


def test_a_split_sends_its_shares_within_5_points_over_1000_customers_and_is_stable(tmp_path):
    rules = compile_yaml(tmp_path, """
rules:
  - id: ab
    type: journey
    on: signup
    steps:
      - {id: pick, split: {a: 20%, b: 30%, c: 50%}}
      - {id: a, then: {action: offer-a, channel: email}, next: end}
      - {id: b, then: {action: offer-b, channel: email}, next: end}
      - {id: c, then: {action: offer-c, channel: email}, next: end}
""")
    cases = {f"c{i}": [("signup", T0 + i, {})] for i in range(1000)}
    first, replay = run(rules, cases)
    shares = {s: sum(1 for t in first if t.step == s) / 1000 for s in "abc"}
    assert abs(shares["a"] - 0.20) <= 0.05 and abs(shares["b"] - 0.30) <= 0.05 and abs(shares["c"] - 0.50) <= 0.05
    assert {k: p.total for k, p in replay.evaluator.funnels["ab"].branches["pick"].items()} == {
        s: round(shares[s] * 1000) for s in "abc"}
    again, _ = run(compile_yaml(tmp_path, (tmp_path / "rules.yaml").read_text()), cases)
    assert [(t.customer_id, t.step) for t in again] == [(t.customer_id, t.step) for t in first]


def test_a_plain_delay_waits_from_the_previous_steps_send(tmp_path):
    rules = compile_yaml(tmp_path, """
rules:
  - id: series
    type: journey
    on: signup
    steps:
      - {id: one, then: {action: one, channel: email}}
      - {id: pause, wait: 3d}
      - {id: two, then: {action: two, channel: email}}
""")
    out, _ = run(rules, {"c1": [("signup", T0, {})]})
    assert [(s, f) for s, _, _, f in walk(out)] == [("one", at(T0)), ("two", at(T0 + 3 * DAY))]


def test_a_wait_starts_when_a_deferred_send_went_out(tmp_path):
    """A wait starts when the previous step completes: for a send, after its quiet-hours deferral."""
    rules = compile_yaml(tmp_path, WELCOME + """
policy:
  quiet_hours: {from: "21:00", to: "08:00", mode: defer}
""")
    late = parse_ts("2026-03-02T22:00:00Z")
    out, _ = run(rules, {"c1": [("signup", late, {})]})
    morning = parse_ts("2026-03-03T08:00:00Z")
    assert walk(out) == [("hello", "sent", "email", at(morning)), ("remind", "sent", "push", at(morning + 2 * DAY))]


# -- exit, suppression, fallback --------------------------------------------------------------------------

def test_exit_on_leaves_the_journey_at_once(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    out, replay = run(rules, {"c1": [("signup", T0, {}), ("purchase", T0 + HOUR, {"amount": 10})]})
    assert [s for s, *_ in walk(out)] == ["hello"]
    st = replay.store.states["c1"]
    assert st.journeys["welcome"].step == "" and st.journeys["welcome"].ended == "exit_on:purchase"
    assert [t for t in st.timers if t.rule == "welcome"] == []
    assert replay.evaluator.funnels["welcome"].exits["exit_on:purchase"].total == 1


def test_a_suppressed_send_ends_the_journey(tmp_path):
    """The opted-out customer must not get an SMS reminder about a mail they never received."""
    rules = compile_yaml(tmp_path, WELCOME)
    out, replay = run(rules, {"c1": [("consent", T0 - 1, {"channel": "email", "granted": False}),
                                     ("signup", T0, {})]})
    assert walk(out) == [("hello", "suppressed", "email", at(T0))]
    assert out[0].reason == "no_consent"
    assert replay.store.states["c1"].journeys["welcome"].ended == "suppressed:no_consent"
    assert replay.evaluator.funnels["welcome"].exits["suppressed:no_consent"].total == 1


def test_if_suppressed_continue_goes_on(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME.replace("reenter: after_end", "if_suppressed: continue"))
    out, _ = run(rules, {"c1": [("consent", T0 - 1, {"channel": "email", "granted": False}), ("signup", T0, {})]})
    assert walk(out) == [("hello", "suppressed", "email", at(T0)), ("remind", "sent", "push", at(T0 + 2 * DAY))]


def test_a_fallback_list_sends_on_the_first_channel_with_consent(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    out, _ = run(rules, {"c1": [("consent", T0 - 1, {"channel": "push", "granted": False}), ("signup", T0, {})],
                         "c2": [("consent", T0 - 1, {"channel": "push", "granted": False}),
                                ("consent", T0 - 1, {"channel": "sms", "granted": False}), ("signup", T0, {})]})
    assert walk(out, "c1")[-1] == ("remind", "sent", "sms", at(T0 + 2 * DAY))
    assert walk(out, "c2")[-1] == ("remind", "suppressed", "push", at(T0 + 2 * DAY))


def test_a_fallback_list_skips_a_capped_channel(tmp_path):
    rules = compile_yaml(tmp_path, """
rules:
  - id: j
    type: journey
    on: signup
    steps:
      - {id: one, then: {action: one, channel: push}}
      - {id: two, then: {action: two, channel: [push, email]}}
policy:
  frequency_caps: [{channel: push, max: 1, per: 1d}]
""")
    out, _ = run(rules, {"c1": [("signup", T0, {})]})
    assert [(s, st, ch) for s, st, ch, _ in walk(out)] == [("one", "sent", "push"), ("two", "sent", "email")]


# -- reenter ----------------------------------------------------------------------------------------------

TWO_SIGNUPS = [("signup", T0, {}), ("signup", T0 + DAY, {}), ("signup", T0 + 10 * DAY, {})]


@pytest.mark.parametrize(("reenter", "hellos"), [
    ("after_end", [T0, T0 + 10 * DAY]),          # the second signup came while inside: ignored
    ("never", [T0]),
    ("restart", [T0, T0 + DAY, T0 + 10 * DAY]),
    ("30d", [T0]),                               # ended by then, but less than 30d since the entry
    ("5d", [T0, T0 + 10 * DAY]),
])
def test_reenter(tmp_path, reenter, hellos):
    rules = compile_yaml(tmp_path, WELCOME.replace("reenter: after_end", f"reenter: {reenter}"))
    out, _ = run(rules, {"c1": TWO_SIGNUPS})
    assert [f for s, _, _, f in walk(out) if s == "hello"] == [at(t) for t in hellos]


def test_restart_ends_the_walk_in_progress(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME.replace("reenter: after_end", "reenter: restart"))
    out, replay = run(rules, {"c1": TWO_SIGNUPS[:2]})
    assert [s for s, *_ in walk(out)] == ["hello", "hello", "remind"]
    assert replay.evaluator.funnels["welcome"].exits["restarted"].total == 1


# -- the held-out walk --------------------------------------------------------------------------------------

def test_held_out_customers_walk_the_same_steps_with_held_out_sends(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME.replace("reenter: after_end", "control_group: 30%"))
    cases = {f"c{i}": [("signup", T0 + i, {})] + ([("email_clicked", T0 + HOUR, {"campaign": "welcome-1"})]
                                                    if i % 2 else []) for i in range(200)}
    out, replay = run(rules, cases)
    by_customer: dict[str, list[Trigger]] = {}
    for t in out:
        by_customer.setdefault(t.customer_id, []).append(t)
    held = {c for c, ts in by_customer.items() if ts[0].status == "held_out"}
    assert 30 <= len(held) <= 90
    for cid, ts in by_customer.items():
        # drawn once at entry: a walk is held out all along, or never
        assert {t.status for t in ts} == ({"held_out"} if cid in held else {"sent"})
        i = int(cid[1:])
        assert [t.step for t in ts] == (["hello", "recommend"] if i % 2 else ["hello", "remind"])
    f = replay.evaluator.funnels["welcome"]
    assert f.entered.held_out == len(held) and f.entered.contacted == 200 - len(held)
    assert f.branches["clicked"]["yes"].held_out == sum(1 for c in held if int(c[1:]) % 2)


# -- trigger ids, state ----------------------------------------------------------------------------------

def test_the_trigger_id_hashes_rule_customer_entry_and_step(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    out, _ = run(rules, {"c1": [("signup", T0, {})]})
    assert [t.trigger_id for t in out] == [trigger_id("welcome", "c1", "c1-0#hello", T0),
                                           trigger_id("welcome", "c1", "c1-0#remind", T0)]
    assert all(t.cause_event_id == "c1-0" for t in out)
    raw = msgspec.json.encode(out[0])
    assert b'"step":"hello"' in raw
    assert msgspec.json.decode(raw, type=Trigger) == out[0]


def test_triggers_of_other_rules_carry_no_step(tmp_path):
    rules = compile_yaml(tmp_path, """
rules:
  - {id: hi, type: behavioral, on: signup, then: {action: hi, channel: email}}
""")
    out, _ = run(rules, {"c1": [("signup", T0, {})]})
    assert b'"step"' not in msgspec.json.encode(out[0])


def test_a_loop_through_a_wait_gives_each_lap_its_own_trigger_id(tmp_path):
    rules = compile_yaml(tmp_path, """
rules:
  - id: nag
    type: journey
    on: signup
    exit_on: [purchase]
    steps:
      - {id: ask, then: {action: ask, channel: email}}
      - {id: pause, wait: 1d, next: ask}
""")
    out, _ = run(rules, {"c1": [("signup", T0, {}), ("purchase", T0 + 2 * DAY + HOUR, {})]})
    assert [t.fired_at for t in out] == [at(T0), at(T0 + DAY), at(T0 + 2 * DAY)]
    assert len({t.trigger_id for t in out}) == 3


def test_the_position_is_one_per_journey_and_survives_a_state_round_trip(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    half, replay = run(rules, {"c1": [("signup", T0, {})]}, drain=False)
    st = replay.store.states["c1"]
    assert list(st.journeys) == ["welcome"] and st.journeys["welcome"].step == "clicked"
    assert [(t.rule, t.due) for t in st.timers] == [("welcome", T0 + 2 * DAY)]
    # a restart: the state goes through its wire form, then the click arrives
    restored = decode_state(encode_state(st))
    assert restored == st
    out: list[Trigger] = []
    again = Replay(rules, out.extend)
    again.store.states["c1"] = restored
    again.feed([Event("c1-1", "email_clicked", "c1", T0 + DAY, {"campaign": "welcome-1"})])
    again.finish()
    assert [t.step for t in out] == ["recommend"]


def test_pending_waits_count_and_drain(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME)
    _, replay = run(rules, {"c1": [("signup", T0, {})]}, drain=False)
    assert replay.summary(0, 0.0).pending == {"welcome": 1}
    out, _ = run(rules, {"c1": [("signup", T0, {})]}, drain=True)
    assert [s for s, *_ in walk(out)] == ["hello", "remind"]


# -- validation ----------------------------------------------------------------------------------------------

def journey_yaml(steps: str, extra: str = "") -> str:
    return f"""
rules:
  - id: j
    type: journey
    on: signup
{extra}    steps:
{steps}"""


def test_validate_rejects_an_unknown_target_with_did_you_mean(tmp_path):
    errors = errors_of(tmp_path, journey_yaml("""
      - {id: hello, then: {action: a, channel: email}}
      - id: clicked
        wait: {event: email_clicked, within: 2d}
        yes: recomend
        no: end
      - {id: recommend, then: {action: b, channel: email}}
"""))
    assert errors == [f"{tmp_path / 'rules.yaml'}:11: rule 'j': step 'clicked': 'yes' names unknown step"
                      " 'recomend' (did you mean 'recommend'?)"]


def test_validate_rejects_unreachable_steps(tmp_path):
    errors = errors_of(tmp_path, journey_yaml("""
      - {id: hello, then: {action: a, channel: email}, next: end}
      - {id: orphan, then: {action: b, channel: email}}
"""))
    assert len(errors) == 1 and ":9: rule 'j': step 'orphan' is never reached" in errors[0]


def test_validate_rejects_a_loop_without_a_wait(tmp_path):
    errors = errors_of(tmp_path, journey_yaml("""
      - {id: hello, then: {action: a, channel: email}}
      - {id: again, if: "true", yes: hello, no: end}
"""))
    assert len(errors) == 1 and "hello → again → hello loop without a wait" in errors[0]
    assert ":9: rule 'j'" in errors[0]


def test_a_loop_through_a_wait_is_valid(tmp_path):
    compile_yaml(tmp_path, journey_yaml("""
      - {id: hello, then: {action: a, channel: email}}
      - {id: pause, wait: 1d}
      - {id: again, if: "true", yes: hello, no: end}
"""))


def test_validate_rejects_split_shares_that_do_not_sum_to_100(tmp_path):
    errors = errors_of(tmp_path, journey_yaml("""
      - {id: pick, split: {a: 50%, b: 40%}}
      - {id: a, then: {action: a, channel: email}, next: end}
      - {id: b, then: {action: b, channel: email}, next: end}
"""))
    assert len(errors) == 1 and ":8: rule 'j': step 'pick': the split shares sum to 90%, not 100%" in errors[0]


@pytest.mark.parametrize(("steps", "wanted"), [
    ("      - {id: a, then: {action: a, channel: email}}\n      - {id: a, wait: 1d}\n", "step id 'a' is used twice"),
    ("      - {id: a, then: {action: a, channel: email}, wait: 1d}\n", "a step does one thing, this one has then or"
     " wait"),
    ("      - {then: {action: a, channel: email}}\n", "a journey step needs an 'id'"),
    ("      - {id: a, then: {action: a, channel: email}, yes: end}\n", "'yes' does not go with a send step"),
    ("      - {id: a, wait: {event: email_clicked}}\n", "'wait' needs 'within'"),
    ("      - {id: end, then: {action: a, channel: email}}\n", "'end' is the target that ends the journey"),
    ("      - {id: a, then: {action: a, channel: [email, email]}}\n", "lists a channel twice"),
    ("      - {id: a, wiat: 1d}\n", "unknown key 'wiat' (did you mean 'wait'?)"),
])
def test_validate_names_the_step_and_the_mistake(tmp_path, steps, wanted):
    errors = errors_of(tmp_path, journey_yaml(steps))
    assert any(wanted in e and f"{tmp_path / 'rules.yaml'}:" in e for e in errors), errors


@pytest.mark.parametrize(("extra", "wanted"), [
    ("    reenter: sometimes\n", "unknown 'reenter' value 'sometimes'"),
    ("    if_suppressed: skip\n", "unknown 'if_suppressed' value 'skip'"),
    ("    then: {action: a, channel: email}\n", "unknown key 'then'"),
])
def test_validate_checks_the_journeys_own_keys(tmp_path, extra, wanted):
    errors = errors_of(tmp_path, journey_yaml("      - {id: a, then: {action: a, channel: email}}\n", extra))
    assert any(wanted in e for e in errors), errors


# -- live, on the shipped test doubles -------------------------------------------------------------------------

def test_live_on_the_test_doubles_gives_the_backtests_triggers(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME.replace("reenter: after_end", "control_group: 20%") + """
policy:
  frequency_caps: [{channel: push, max: 1, per: 7d}]
""")
    start = now_ms() - 30 * DAY   # every deadline falls before the wall clock the live run fires by
    cases: dict[str, list[Ev]] = {}
    for i in range(40):
        evs: list[Ev] = [("signup", start + i * MIN, {})]
        if i % 4 == 1:
            evs.append(("email_clicked", start + DAY, {"campaign": "welcome-1"}))
        if i % 4 == 2:
            evs.append(("purchase", start + HOUR, {"amount": 700}))
        if i % 4 == 3:
            evs.append(("consent", start - 1, {"channel": "push", "granted": False}))
            evs.sort(key=lambda e: e[1])
        cases[f"c{i}"] = evs
    enc = msgspec.json.encode
    lines = [enc({"event_id": e.event_id, "type": e.type, "customer_id": e.customer_id, "ts": e.ts,
                  "properties": e.properties}) for e in events_of(cases)]
    triggers, dead, store = run_in_memory(rules, lines)
    expected: list[Trigger] = []
    replay = Replay(rules, expected.extend, until=now_ms())
    decoded, _ = EventDecoder().decode_batch((raw, "test") for raw in lines)
    replay.feed(decoded)
    replay.finish()
    assert dead == []
    assert {t.step for t in expected} == {"hello", "recommend", "remind"}
    sent = sorted(enc(t) for t in expected)
    assert sorted(enc(t) for t in triggers) == sent
    assert {c: encode_state(s) for c, s in store.items()} == {c: encode_state(s) for c, s in replay.store.states.items()}


# -- hot reload: an edited journey and the customers inside it ---------------------------------------------

BEFORE_EDIT = """
rules:
  - id: j
    type: journey
    on: signup
    steps:
      - {id: hello, then: {action: hello, channel: email}}
      - {id: clicked, wait: {event: email_clicked, within: 2d}, yes: thanks, no: remind}
      - {id: thanks, then: {action: thanks, channel: email}, next: end}
      - {id: remind, then: {action: remind, channel: email}}
      - {id: pause, wait: 3d}
      - {id: last, then: {action: last, channel: email}}
"""
AFTER_EDIT = """
rules:
  - id: j
    type: journey
    on: signup
    steps:
      - {id: hello, then: {action: hello-v2, channel: email}}
      - {id: clicked, wait: {event: email_clicked, within: 5d}, yes: recommend, no: remind}
      - {id: recommend, then: {action: recommend, channel: email}, next: end}
      - {id: remind, then: {action: remind-v2, channel: email}, next: end}
"""


def test_an_edit_keeps_positions_by_step_id_and_pending_waits_keep_their_due_time(tmp_path):
    """SPEC §3a: positions are kept by step id; a customer whose step no longer exists leaves the
    journey, counted as `step_removed`; pending waits keep their due time. Run through `Session.use`,
    what a live worker does when the rules directory changes."""
    from engine.core.session import Session

    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    v1 = compile_yaml(tmp_path / "v1", BEFORE_EDIT)
    v2 = compile_yaml(tmp_path / "v2", AFTER_EDIT)
    session = Session(v1, "test")
    out: list[Trigger] = []
    session.apply([Event("p-0", "signup", "paused", T0 - 2 * DAY - HOUR, {}),       # no click: at `pause` by T0
                   Event("w-0", "signup", "late-clicker", T0, {}),
                   Event("k-0", "signup", "clicker", T0, {})], out)
    session.advance(T0 + HOUR, out)
    assert {c: s.journeys["j"].step for c, s in session.states.items()} == {
        "paused": "pause", "late-clicker": "clicked", "clicker": "clicked"}
    before = len(out)

    session.use(v2)   # the edit: `clicked` waits 5d now and says yes -> recommend; `pause` and `last` are gone
    session.apply([Event("k-1", "email_clicked", "clicker", T0 + DAY, {}),
                   Event("w-1", "email_clicked", "late-clicker", T0 + 3 * DAY, {})], out)
    session.advance(T0 + 10 * DAY, out)
    after = [(t.customer_id, t.step, t.action, t.fired_at) for t in out[before:]]
    assert sorted(after) == sorted([
        ("clicker", "recommend", "recommend", at(T0 + DAY)),      # a kept step, the new definition's branch
        # its wait kept the due time it had (T0 + 2d, not T0 + 5d): the click at T0 + 3d came too late
        ("late-clicker", "remind", "remind-v2", at(T0 + 2 * DAY)),
    ])
    paused = session.states["paused"].journeys["j"]
    assert paused.step == "" and paused.ended == "step_removed"   # left at its wait's due time, sending nothing
    assert session.evaluator.funnels["j"].exits["step_removed"].total == 1
    assert not any(t.rule == "j" for s in session.states.values() for t in s.timers)


def test_a_step_first_reached_from_a_later_one_keeps_the_plain_trigger_id(tmp_path):
    """Only a send reached again in one walk gets a suffix: a step listed earlier but reached first is no repeat."""
    rules = compile_yaml(tmp_path, """
rules:
  - id: j
    type: journey
    on: signup
    steps:
      - {id: start, if: "true", yes: later, no: end}
      - {id: a, then: {action: a, channel: email}, next: end}
      - {id: later, wait: 1d, next: a}
""")
    out, _ = run(rules, {"c1": [("signup", T0, {})]})
    assert [t.trigger_id for t in out] == [trigger_id("j", "c1", "c1-0#a", T0)]


def test_the_readmes_journeys_validate_and_walk(tmp_path):
    """Docs that match the code: every journey the README shows validates, beside the bundled aggregates."""
    import re

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "type: journey" in b]
    assert len(blocks) >= 2
    aggregates = (root / "rules" / "aggregates.yaml").read_text()
    for n, block in enumerate(blocks):
        rules_part = block[block.index("rules:"):] if "rules:" in block else "rules:\n" + block
        rules_part = rules_part.split("\npolicy:")[0]
        d = tmp_path / f"b{n}"
        d.mkdir()
        (d / "aggregates.yaml").write_text(aggregates)
        compiled = compile_yaml(d, rules_part)
        journeys = [r for r in compiled.rules if r.kind.value == "journey"]
        assert journeys
        out, _ = run(compiled, {"c1": [("signup", T0, {}), ("consent", T0 + 1, {"channel": "email", "granted": True})]})
        assert any(t.rule_id == journeys[0].id for t in out)


def test_a_drain_of_a_journey_that_loops_ends_at_its_horizon(tmp_path):
    """A loop through a wait would never drain: the drain stops at the rules' span, the rest stays pending."""
    rules = compile_yaml(tmp_path, """
rules:
  - id: nag
    type: journey
    on: signup
    steps:
      - {id: ask, then: {action: ask, channel: email}}
      - {id: pause, wait: 1d, next: ask}
""")
    assert rules.drain_span == 3 * DAY   # its wait once, and a day per send for a deferral, and a day
    out, replay = run(rules, {"c1": [("signup", T0, {})]})
    assert [t.fired_at for t in out] == [at(T0 + d * DAY) for d in range(4)]
    assert replay.undrained == 1


def test_validate_events_checks_a_journeys_exit_and_wait_types(tmp_path):
    from collections import Counter

    from engine.rules.loader import load_rules
    from engine.rules.usage import missing_types

    (tmp_path / "rules.yaml").write_text(WELCOME.replace("exit_on: [purchase]", "exit_on: [purchse]")
                                         .replace("event: email_clicked", "event: email_clickd"))
    seen = Counter({"signup": 3, "purchase": 2, "email_clicked": 4, "product_view": 9})
    warnings = missing_types(load_rules(tmp_path), seen)
    assert len(warnings) == 2, warnings
    assert "rule 'welcome' exit_on 'purchse': no such event in the sample (did you mean 'purchase'?)" in warnings[0]
    assert ":15: warning: rule 'welcome' step 'clicked' wait 'email_clickd'" in warnings[1]
    assert "did you mean 'email_clicked'" in warnings[1]


def test_a_journeys_cooldown_counts_from_an_earlier_walk_not_from_its_own_sends(tmp_path):
    rules = compile_yaml(tmp_path, WELCOME.replace("reenter: after_end", "cooldown: 7d"))
    out, _ = run(rules, {"c1": [("signup", T0, {}), ("signup", T0 + 3 * DAY, {})]})
    # the first walk: hello, then remind 2 days later (its own sends); the second walk's hello came
    # 1 day after the first walk's remind: cooled down, and the suppression ends that walk
    assert [(s, st) for s, st, _, _ in walk(out)] == [("hello", "sent"), ("remind", "sent"), ("hello", "suppressed")]
    assert out[-1].reason == "cooldown"
