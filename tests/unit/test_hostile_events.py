"""Hostile and careless input (issue "Hardening", items 1, 2 and 10): no event can stop the
engine, distort a sum, or make a state that cannot be stored; every message is applied or
dead-lettered, and a dead letter leaves the customer's state as it was."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import cli
from engine.events.decode import MAX_DEPTH, DeadLetter, EventDecoder, Stage
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile
from engine.state.customer import decode_state, encode_state

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = load_and_compile(ROOT / "rules")
T0 = 1_767_225_600_000   # 2026-01-01T00:00:00Z


class Raw(str):
    """JSON text to splice in as it is (json.dumps cannot write 1,000 levels)."""


def msg(eid: str, typ: str, props: object, cid: str = "c-1", ts: int = T0) -> bytes:
    body = props if isinstance(props, Raw) else json.dumps(props)
    head = json.dumps({"event_id": eid, "type": typ, "customer_id": cid, "ts": ts})
    return f'{head[:-1]}, "properties": {body}}}'.encode()


def nested(depth: int) -> Raw:
    """Objects and arrays alternating, `depth` levels, as JSON text."""
    opens = "".join('{"a": ' if i % 2 == 0 else "[" for i in range(depth))
    closes = "".join("}" if i % 2 == 0 else "]" for i in reversed(range(depth)))
    return Raw(f"{opens}1{closes}")


def run(lines: list[bytes], rules=BUNDLED):
    """Decode and replay like `triggers backtest`; (triggers, dead letters, replay)."""
    triggers: list = []
    dead: list[DeadLetter] = []
    replay = Replay(rules, triggers.extend, dead_letter=dead.extend)
    events, bad = EventDecoder().decode_batch((raw, f"test:{i + 1}") for i, raw in enumerate(lines))
    dead += bad
    replay.feed(events)
    replay.finish()
    return triggers, dead, replay


def assert_states_store(replay: Replay) -> None:
    for cid, state in replay.store.items():
        assert decode_state(encode_state(state)) == state, cid


# --- item 1: one event must not stop the engine ---------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_properties_nested_1000_deep_are_a_dead_letter_not_a_crash(depth: int) -> None:
    lines = [msg("deep", "product_view", nested(depth)), msg("ok", "purchase", {"amount": 10})]
    triggers, dead, replay = run(lines)
    assert [d.source for d in dead] == ["test:1"] and "nested too deep" in dead[0].reason
    assert replay.store.get("c-1").aggs["lifetime_spend"] == 10   # the next event is applied
    assert_states_store(replay)


def test_nesting_is_bounded_below_the_decoders_recursion_limit() -> None:
    assert isinstance(EventDecoder().decode(msg("e", "x", nested(MAX_DEPTH)), "s"), Event)
    dead = EventDecoder().decode(msg("e", "x", nested(MAX_DEPTH + 1)), "s")
    assert isinstance(dead, DeadLetter) and f"more than {MAX_DEPTH} levels" in dead.reason


def test_backtest_command_survives_a_deeply_nested_event(tmp_path: Path, capsys) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(msg("deep", "product_view", nested(1_000)) + b"\n" + msg("ok", "purchase", {"amount": 10}))
    code = cli.main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(events), "--out", str(tmp_path / "t"),
                     "--dead-letters", str(tmp_path / "dead.jsonl"), "--no-progress", "--quiet"])
    assert code == 0
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["source"] for d in dead] == [f"{events}:1"] and "nested too deep" in dead[0]["reason"]


@pytest.mark.parametrize("channel", [["email"], {"email": True}, 7, None, ""])
def test_a_consent_channel_that_is_not_a_string_is_a_dead_letter(channel: object) -> None:
    triggers, dead, replay = run([msg("c", "consent", {"channel": channel, "granted": True}),
                                  msg("s", "signup", {})])
    assert len(dead) == 1 and "consent event: 'channel' must be a non-empty string" in dead[0].reason
    assert dead[0].stage is Stage.DECODE
    assert replay.store.get("c-1").consent == {}


def test_a_consent_grant_that_is_not_a_boolean_is_a_dead_letter() -> None:
    _, dead, _ = run([msg("c", "consent", {"channel": "email", "granted": "yes"})])
    assert len(dead) == 1 and "'granted' must be true or false" in dead[0].reason


def test_integers_beyond_64_bits_become_floats_and_the_state_stores() -> None:
    big = 18446744073709551616   # 2^64: msgpack cannot hold it as an integer
    lines = [msg("p", "purchase", {"amount": big}),
             msg("i", "identify", {"birthday": "1990-05-05", "timezone": "UTC", "first_name": big, "score": -big}),
             msg("v", "product_view", {"category": big, "nested": {"deep": [big]}})]
    triggers, dead, replay = run(lines)
    assert dead == []
    state = replay.store.get("c-1")
    assert state.aggs["lifetime_spend"] == float(big)
    assert_states_store(replay)
    assert [t.rule_id for t in triggers if t.rule_id == "vip-5000"] == ["vip-5000"]


def test_an_integer_too_large_for_a_float_is_a_dead_letter() -> None:
    dead = EventDecoder().decode(b'{"event_id":"e","type":"purchase","customer_id":"c","ts":1,"properties":'
                                 b'{"amount":1' + b"0" * 400 + b"}}", "s")
    assert isinstance(dead, DeadLetter) and "too large" in dead.reason


def test_a_sum_beyond_2_53_then_a_decimal_amount_neither_crashes_nor_overflows() -> None:
    lines = [msg(f"p{i}", "purchase", {"amount": 2**53}) for i in range(3)]
    lines += [msg("d", "purchase", {"amount": 0.5}), msg("h1", "purchase", {"amount": 1e308}),
              msg("h2", "purchase", {"amount": 1e308})]
    _, dead, replay = run(lines)
    assert dead == []
    total = replay.store.get("c-1").aggs["lifetime_spend"]
    assert isinstance(total, float) and total == 1e308 + 3 * 2.0**53   # the second 1e308 would overflow: ignored
    assert_states_store(replay)


# --- item 2: only numbers are amounts ------------------------------------------------------


@pytest.mark.parametrize("amount", [True, "5_000", "٥٠٠٠", " 5000", "5000 ", "NaN", "inf", "1e999", "0x1388",
                                    [5000], {"v": 5000}, None])
def test_non_numeric_amounts_count_as_zero(amount: object) -> None:
    triggers, dead, replay = run([msg("p", "purchase", {"amount": amount}), msg("q", "purchase", {"amount": 4999})])
    assert dead == []
    assert replay.store.get("c-1").aggs["lifetime_spend"] == 4999
    assert "vip-5000" not in {t.rule_id for t in triggers}


@pytest.mark.parametrize("amount", [5000, 5000.0, "5000", "5000.00", "5e3", "+5000"])
def test_numbers_and_plain_numeric_text_count(amount: object) -> None:
    triggers, _, _ = run([msg("p", "purchase", {"amount": amount})])
    assert "vip-5000" in {t.rule_id for t in triggers}


def test_revenue_follows_the_same_rule_as_sums() -> None:
    lines = [msg("s", "signup", {}), msg("p1", "purchase", {"amount": True}, ts=T0 + 60_000),
             msg("p2", "purchase", {"amount": "12.5"}, ts=T0 + 120_000)]
    _, _, replay = run(lines)
    outcome = replay.evaluator.outcomes["welcome"]
    assert outcome.revenue + outcome.held_out_revenue in (0.0, 12.5)   # True never counts as 1


# --- item 10: a re-used event id is another cause --------------------------------------------


def test_an_event_id_reused_beyond_the_dedupe_window_gets_another_trigger_id(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    (d / "r.yaml").write_text(textwrap.dedent("""
        rules:
          - {id: thanks, type: transactional, on: purchase, then: {action: t, channel: email}}
    """))
    rules = load_and_compile(d)
    day = 86_400_000
    lines = [msg("order-1", "purchase", {}, ts=T0)]
    lines += [msg(f"x{i}", "product_view", {}, ts=T0 + i + 1) for i in range(5)]   # pushes order-1 out of the window
    lines += [msg("order-1", "purchase", {}, ts=T0 + day)]                          # the id re-used a day later
    lines += [msg("order-1", "purchase", {}, ts=T0 + day)]                          # a true re-delivery of it
    triggers, _, replay = run(lines, rules)
    assert len(triggers) == 2 and triggers[0].trigger_id != triggers[1].trigger_id
    assert replay.evaluator.counters.duplicates == 1


# --- isolation: an engine error costs one event, and the state is as before -------------------


def test_an_engine_error_dead_letters_the_event_and_restores_the_state(monkeypatch) -> None:
    replay = Replay(BUNDLED, lambda out: None)
    dead: list[DeadLetter] = []
    replay.dead_letter = dead.extend
    events, _ = EventDecoder().decode_batch([(msg("p1", "purchase", {"amount": 10}), "t:1")])
    replay.feed(events)
    before = encode_state(replay.store.get("c-1"))
    # The bug is injected as a rule's condition (an attribute, assignable in a compiled core too)
    vip = replay.evaluator.rules.by_id["vip-5000"]
    original = vip.cond

    def broken(state, ev, now):
        if ev.event_id != "p2":   # the restore replays p1 with the same rules: it goes well
            return original(state, ev, now)
        state.aggs["lifetime_spend"] = "poisoned"   # a half-applied change, then the failure
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(vip, "cond", broken)
    out: list = []
    replay.emit = out.extend
    events, _ = EventDecoder().decode_batch([(msg("p2", "purchase", {"amount": 5000}), "t:2")])
    replay.feed(events)
    assert len(dead) == 1 and dead[0].stage is Stage.EVALUATE and "ZeroDivisionError: injected" in dead[0].reason
    assert json.loads(dead[0].raw)["event_id"] == "p2"
    assert encode_state(replay.store.get("c-1")) == before and out == []
    monkeypatch.setattr(vip, "cond", original)
    events, _ = EventDecoder().decode_batch([(msg("p3", "purchase", {"amount": 5000}), "t:3")])
    replay.feed(events)
    assert [t.rule_id for t in out] == ["vip-5000"] and replay.store.get("c-1").aggs["lifetime_spend"] == 5010


def test_a_state_that_cannot_be_stored_is_refused_with_its_event(monkeypatch) -> None:
    """A bug that puts an unstorable value into a state (as a 2^64 amount once did) is found at
    the next checkpoint; the event behind it is dead-lettered and the state is rebuilt without it."""
    vip = BUNDLED.by_id["vip-5000"]   # a condition every purchase evaluates
    real = vip.cond

    def buggy(state, ev, now):
        if ev.event_id == "p1":
            state.profile["oops"] = 2**70   # no msgpack integer holds it
        return real(state, ev, now)

    monkeypatch.setattr(vip, "cond", buggy)   # the replays (same rules) hit the same bug
    replay = Replay(BUNDLED, lambda out: None)
    dead: list[DeadLetter] = []
    replay.dead_letter = dead.extend
    events, _ = EventDecoder().decode_batch([(msg(f"p{i}", "purchase", {"amount": 1}), f"t:{i}") for i in range(3)])
    replay.feed(events)
    replay.finish()
    assert [d.stage for d in dead] == [Stage.STORE] and json.loads(dead[0].raw)["event_id"] == "p1"
    state = replay.store.get("c-1")
    assert state.aggs["purchases"] == 2 and "oops" not in state.profile   # p0 and p2: p1 was refused
    assert_states_store(replay)
    assert replay.summary(0, 1.0).dead_letters == 1



def test_live_the_dead_letter_of_an_unstorable_state_is_in_the_commit_that_drops_its_event(monkeypatch) -> None:
    """Found in review: the live commit dead-lettered the event at its storability check but left
    the dead letter for the next commit, after moving the offset past the event: a kill -9 in
    between, or a stop (which commits and ends), lost it, and the event was in no state and no
    dead letter. Now it is in the outbox of that very commit."""
    from engine.operators.partition import Batch, PartitionWorker
    from engine.rules.reload import LiveRules
    from engine.state.outbox import decode_item
    from engine.testing import InMemoryStore, MemoryLog

    vip = BUNDLED.by_id["vip-5000"]
    real = vip.cond

    def buggy(state, ev, now):
        if ev.event_id == "p1":
            state.profile["oops"] = 2**70   # no msgpack integer holds it
        return real(state, ev, now)

    monkeypatch.setattr(vip, "cond", buggy)
    lines = [msg(f"p{i}", "purchase", {"amount": 1}) for i in range(3)]
    store = InMemoryStore()
    worker = PartitionWorker(MemoryLog("p-0", lines), store, LiveRules(ROOT / "rules", BUNDLED, watch=False), 0)
    worker.process(Batch(worker, worker.event_log.read(10), False, T0, False))
    worker.commit(3)   # the epoch's commit; the worker is gone after it (a kill -9, or the stop's last commit)
    assert store.load_offset("p-0") == 3 and store.states["c-1"].aggs["purchases"] == 2
    dead = [item for entry in store.read_outbox("p-0", 0, 100)[0]
            if isinstance(item := decode_item(entry), DeadLetter)]
    assert [(d.stage, json.loads(d.raw)["event_id"]) for d in dead] == [(Stage.STORE, "p1")]
    assert worker.session.rejected == [] and worker.stats.dead_letters == 1

# --- the invariant: any JSON in any field is applied or dead-lettered, and the state stores ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([2**53 + 1, 2**64, -(2**64) - 1, 10**30])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from(["5000", "5_000", "٥٠٠٠", "NaN", "email", "1990-05-05", "Europe/Berlin"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
# Fields the bundled rules read, so hostile values reach aggregates, conditions, payloads, consent.
PROPERTY_NAMES = st.sampled_from(["amount", "category", "sku", "cart_value", "coupon", "campaign", "channel",
                                  "granted", "birthday", "timezone", "first_name", "consent", "revenue", "x"])
TYPES = st.sampled_from(["purchase", "add_to_cart", "product_view", "signup", "consent", "identify", "profile",
                         "email_clicked", "email_opened", "coupon_issued", "coupon_redeemed", "page_view"])


@st.composite
def hostile_message(draw) -> bytes:
    """Mostly well-formed envelopes (so hostile values reach the core), each field sometimes any
    JSON at all, properties from the names the bundled rules read."""
    def sometimes_anything(valid):   # any JSON one time in five
        return st.integers(0, 4).flatmap(lambda k: json_values if k == 0 else valid)

    obj = {
        "event_id": draw(sometimes_anything(st.text(min_size=1, max_size=6) | st.integers(0, 50))),
        "type": draw(sometimes_anything(TYPES)),
        "customer_id": draw(sometimes_anything(st.sampled_from(["c-1", "c-2", "c-3"]))),
        "ts": draw(sometimes_anything(st.integers(T0, T0 + 90 * 86_400_000) | st.just("2026-02-01T10:00:00Z"))),
        "properties": draw(sometimes_anything(st.dictionaries(PROPERTY_NAMES, json_values, max_size=6))),
    }
    if draw(st.integers(0, 9)) == 0:
        del obj[draw(st.sampled_from(sorted(obj)))]
    return json.dumps(obj).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_message(), min_size=1, max_size=30))
def test_any_json_in_any_field_is_applied_or_dead_lettered_and_every_state_stores(lines: list[bytes]) -> None:
    triggers, dead, replay = run(lines)
    applied = replay.evaluator.counters.events
    assert applied + len(dead) == len(lines)
    assert_states_store(replay)
    for t in triggers:
        msgspec.json.encode(t)


def test_the_hostile_stream_through_the_backtest(tmp_path: Path) -> None:
    """The fuzz stream of bench.hostile (the categories of the hardening issue plus random JSON
    in random fields) through the backtest: it never stops, every message is applied or
    dead-lettered, and every state stores."""
    from bench.hostile import hostile_stream

    values = [v.replace(b"\n", b" ") for v, _ in hostile_stream(6000, seed=1) if v is not None]
    triggers, dead, replay = run(values)
    applied = replay.evaluator.counters.events
    assert applied + len(dead) == len(values)
    assert 1500 < len(dead) < 4500 and len(triggers) > 500
    assert_states_store(replay)

    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(values) + b"\n")
    code = cli.main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(path), "--out", str(tmp_path / "t"),
                     "--dead-letters", str(tmp_path / "dead.jsonl"), "--no-progress", "--quiet",
                     "--summary", str(tmp_path / "s.json")])
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["events"] + summary["dead_letters"] == len(values)
    assert len((tmp_path / "dead.jsonl").read_text().splitlines()) == summary["dead_letters"]
    print(f"{len(values)} hostile messages: {applied} applied, {len(dead)} dead-lettered, {len(triggers)} triggers")
