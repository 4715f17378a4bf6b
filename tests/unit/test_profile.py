"""A customer's profile (`engine.offline.profile`) and the live lookup of the profile API
(`engine.operators.profile_api`) on a real partition worker over the in-memory store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec
import orjson
import pytest

from engine.core.evaluate import Evaluator
from engine.core.times import format_ts, parse_ts
from engine.events.model import Event
from engine.offline.explain import explain_customer
from engine.offline.profile import Source, customer_profile
from engine.operators.partition import Batch, PartitionWorker
from engine.operators.profile_api import LiveCustomers
from engine.rules.compiler import load_and_compile
from engine.rules.reload import LiveRules
from engine.state.memory import InMemoryStore
from engine.testing import MemoryLog

T0 = parse_ts("2026-03-02T10:00:00Z")
MIN, DAY = 60_000, 86_400_000

RULES = """\
aggregates:
  lifetime_spend: {sum: amount, on: purchase}
  views_7d: {count: product_view, window: 7d}
  interest: {decayed_count: product_view, by: category, half_life: 14d}
rules:
  - id: cart-abandoned
    type: transactional
    on: add_to_cart
    unless: {event: [purchase], within: 30m}
    then: {action: cart-reminder, channel: email}
  - id: welcome
    type: journey
    on: signup
    steps:
      - id: hello
        then: {action: welcome-1, channel: email}
      - id: clicked
        wait: {event: email_clicked, within: 2d}
        yes: end
        no: end
policy:
  frequency_caps:
    - {channel: email, max: 3, per: 7d}
"""

EVENTS = [
    Event("e0", "consent", "c-1", T0 - DAY, {"channel": "email", "granted": True}),
    Event("e1", "signup", "c-1", T0 - DAY + MIN, {}),
    Event("e2", "product_view", "c-1", T0, {"category": "shoes"}),
    Event("e3", "product_view", "c-1", T0 + MIN, {"category": "shoes"}),
    Event("e4", "product_view", "c-1", T0 + 2 * MIN, {"category": "hats"}),
    Event("e5", "purchase", "c-1", T0 + 3 * MIN, {"amount": 120.5}),
    Event("e6", "add_to_cart", "c-1", T0 + 4 * MIN, {"sku": "A"}),
]


def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "rules.yaml").write_text(RULES)
    return d


def state_of(rules, events=EVENTS):
    evaluator, state, out = Evaluator(rules), None, []
    for ev in events:
        state = evaluator.on_event(state, ev, out)
    return state


def test_profile_reads_aggregates_as_explain_does_at_the_same_moment(tmp_path):
    rules = load_and_compile(rules_dir(tmp_path))
    st = state_of(rules)
    at = T0 + 10 * MIN
    p = customer_profile(rules, "c-1", st, at, Source.CACHE)
    shown = explain_customer(rules, "c-1", state=st, at=at).state
    assert p.aggregates == {a.name: a.value for a in shown.aggregates}
    assert p.aggregates["lifetime_spend"] == 120.5 and p.aggregates["views_7d"] == 3
    assert [i.key for i in p.interests["interest"]] == ["shoes", "hats"]
    assert p.interests["interest"][0].weight < 2.0   # decayed to `at`, not the stored score
    assert p.consent["email"].granted is True
    assert p.last_contact == {"email": format_ts(T0 - DAY + MIN)}   # the journey's welcome-1
    assert p.last_contact_by_rule == {"welcome": format_ts(T0 - DAY + MIN)}
    due = {(d.rule, d.due) for d in p.deadlines}
    assert ("cart-abandoned", format_ts(T0 + 34 * MIN)) in due
    assert p.journeys["welcome"].step == "clicked" and p.journeys["welcome"].ended is None
    decoded = orjson.loads(msgspec.json.encode(p))
    assert decoded["source"] == "cache" and decoded["at"] == format_ts(at)


def test_a_windowed_count_and_an_interest_are_read_at_the_moment_asked(tmp_path):
    rules = load_and_compile(rules_dir(tmp_path))
    st = state_of(rules)
    later = customer_profile(rules, "c-1", st, T0 + 9 * DAY)
    assert later.aggregates["views_7d"] == 0   # the window has passed
    now = customer_profile(rules, "c-1", st, T0 + 2 * MIN)
    w_now = now.interests["interest"][0].weight
    w_later = later.interests["interest"][0].weight
    assert abs(w_later / w_now - 2 ** (-(9 * DAY - 2 * MIN) / (14 * DAY))) < 1e-9


def _worker(tmp_path: Path):
    path = rules_dir(tmp_path)
    rules = load_and_compile(path)
    lines = [msgspec.json.encode(ev) for ev in EVENTS]
    log = MemoryLog("events-0", lines, None)
    store = InMemoryStore()
    live = LiveRules(path, rules, interval_s=60, watch=False)
    worker = PartitionWorker(log, store, live, 0)
    return worker, store, live


def test_live_lookup_answers_from_the_cache_then_the_store_and_404(tmp_path):
    worker, store, live = _worker(tmp_path)
    api = LiveCustomers()
    api.configure(live, lambda: store, None)
    api.watch(worker)
    worker.process(Batch(worker, worker.event_log.read(100), False, T0, False))   # evaluated, not committed
    status, body, _ = api.answer("/customers/c-1", {})
    assert status == 200 and orjson.loads(body)["source"] == "cache"
    assert orjson.loads(body)["aggregates"]["lifetime_spend"] == 120.5
    worker.commit(len(EVENTS))
    api.forget(worker)
    status, body, _ = api.answer("/customers/c-1", {})
    assert status == 200 and orjson.loads(body)["source"] == "redis"
    status, body, _ = api.answer("/customers/nobody", {})
    assert status == 404 and "unknown customer 'nobody'" in orjson.loads(body)["error"]


def test_url_encoded_ids_and_the_bearer_token(tmp_path):
    worker, store, live = _worker(tmp_path)
    state = store.load_many(["c-1"])
    api = LiveCustomers()
    api.configure(live, lambda: store, "s3cret")
    store.save_many({"a/b c": state_of(live.rules)} | state)
    assert api.answer("/customers/a%2Fb%20c", {})[0] == 401
    status, _, headers = api.answer("/customers/a%2Fb%20c", {"Authorization": "Bearer wrong"})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = api.answer("/customers/a%2Fb%20c", {"Authorization": "Bearer s3cret"})
    assert status == 200 and orjson.loads(body)["customer_id"] == "a/b c"


def test_the_reader_waits_for_the_batch_in_hand(tmp_path):
    """The worker mutates cached states under its lock; a request copies only between batches."""
    worker, store, live = _worker(tmp_path)
    api = LiveCustomers()
    api.configure(live, lambda: store, None)
    api.watch(worker)
    worker.process(Batch(worker, worker.event_log.read(100), False, T0, False))
    answers: list = []
    with worker.lock:   # as the worker holds it while it evaluates a batch
        reader = threading.Thread(target=lambda: answers.append(api.answer("/customers/c-1", {})))
        reader.start()
        time.sleep(0.2)
        assert not answers, "the profile was read while the worker held its lock"
    reader.join(5)
    assert answers and answers[0][0] == 200


def test_a_worker_stuck_in_its_batch_does_not_hold_requests_forever(tmp_path):
    """Review of issue 16: the worker holds its lock across a batch's Redis retries, so during an
    outage a request waited behind it for as long as the outage lasted (threads piling up). After
    `LOCK_WAIT_S` it asks the store instead: here the last commit's state, marked `redis`."""
    from engine.operators.profile_api import LOCK_WAIT_S

    worker, store, live = _worker(tmp_path)
    api = LiveCustomers()
    api.configure(live, lambda: store, None)
    api.watch(worker)
    worker.process(Batch(worker, worker.event_log.read(100), False, T0, False))
    worker.commit(len(EVENTS))
    answers: list = []
    with worker.lock:   # as a batch stuck retrying Redis holds it
        reader = threading.Thread(target=lambda: answers.append(api.answer("/customers/c-1", {})))
        started = time.monotonic()
        reader.start()
        reader.join(LOCK_WAIT_S + 5)
        waited = time.monotonic() - started
    assert answers and answers[0][0] == 200 and orjson.loads(answers[0][1])["source"] == "redis"
    assert LOCK_WAIT_S <= waited < LOCK_WAIT_S + 5


def test_a_worker_that_ended_or_was_replaced_is_not_read_any_more(tmp_path):
    """Review: a partition that ended here (stopped, failed, revoked) left its worker in the
    profile API, whose cache then answered an old state after another owner had committed newer
    ones. Once its partition ends the answer is Redis's, and a new worker of the partition
    replaces the old one."""
    from engine.operators.profile_api import CUSTOMERS
    from engine.operators.source import EnginePartition

    worker, store, live = _worker(tmp_path)
    CUSTOMERS.configure(live, lambda: store, None)
    try:
        CUSTOMERS.watch(worker)
        worker.process(Batch(worker, worker.event_log.read(100), False, T0, False))
        worker.commit(len(EVENTS))
        assert orjson.loads(CUSTOMERS.answer("/customers/c-1", {})[1])["source"] == "cache"
        newer = state_of(live.rules, EVENTS[:1])   # what another process, the partition's owner now, committed
        store.save_many({"c-1": newer})
        partition = EnginePartition(worker, 100, 10, 1000, exit_at_end=True)
        with pytest.raises(StopIteration):
            partition._end()
        body = orjson.loads(CUSTOMERS.answer("/customers/c-1", {})[1])
        assert (body["source"], body["aggregates"]["lifetime_spend"]) == ("redis", 0)   # not the cache's 120.5

        (tmp_path / "again").mkdir()
        again, _, _ = _worker(tmp_path / "again")   # the partition's worker after a restart of its part
        CUSTOMERS.watch(worker)
        CUSTOMERS.watch(again)
        assert CUSTOMERS._workers == [again]
    finally:
        CUSTOMERS.configure(live, lambda: store, None)   # no worker left watched for the other tests
