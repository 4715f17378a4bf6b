"""The evaluation core against SPEC §3's example rules, with hand-made event sequences."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.actions.trigger import Trigger
from engine.core.times import format_ts, parse_duration, parse_ts
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.compiler import load_and_compile

SPEC_RULES = Path(__file__).resolve().parents[1] / "fixtures" / "spec_rules"
T0 = parse_ts("2026-01-05T10:00:00Z")
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


@pytest.fixture(scope="module")
def spec():
    return load_and_compile(SPEC_RULES)


class Stream:
    """Builds events with unique ids and replays them like a backtest does.

    The SPEC rules carry a policy with `consent: required`, so each customer opts in to
    email and push a day before its first event (these customers are not in the 5% control
    group: `in_control_group` is deterministic)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.customers: set[str] = set()

    def add(self, type_: str, at: int, cid: str = "c1", **props) -> Event:
        if cid not in self.customers:
            self.customers.add(cid)
            for channel in ("email", "push"):
                self.events.append(Event(f"consent-{cid}-{channel}", "consent", cid, at - DAY,
                                         {"channel": channel, "granted": True}))
        ev = Event(f"e{len(self.events) + 1}", type_, cid, at, props)
        self.events.append(ev)
        return ev

    def replay(self, rules, until: int | None = None) -> list[Trigger]:
        """Drained: these tests are about what a rule's deadlines do, not where the data ends."""
        out: list[Trigger] = []
        replay = Replay(rules, out.extend, until=until, drain=True)
        replay.feed(sorted(self.events, key=lambda e: e.ts))
        replay.finish()
        return out


def fired(triggers: list[Trigger], rule_id: str) -> list[Trigger]:
    return [t for t in triggers if t.rule_id == rule_id]


# -- threshold --------------------------------------------------------------------------

def test_vip_fires_once_on_crossing(spec):
    s = Stream()
    s.add("purchase", T0, amount=3000)
    s.add("purchase", T0 + HOUR, amount=1500)
    crossing = s.add("purchase", T0 + 2 * HOUR, amount=600)       # 5100: crosses
    s.add("purchase", T0 + 3 * HOUR, amount=1000)                   # still above: no new fire
    vip = fired(s.replay(spec), "vip-5000")
    assert len(vip) == 1
    assert vip[0].cause_event_id == crossing.event_id
    assert vip[0].fired_at == format_ts(crossing.ts)
    assert (vip[0].action, vip[0].channel, vip[0].status) == ("vip-welcome", "email", "sent")


def test_threshold_below_never_fires(spec):
    s = Stream()
    for i in range(5):
        s.add("purchase", T0 + i * HOUR, amount=999.99)
    assert fired(s.replay(spec), "vip-5000") == []


def test_tenth_purchase(spec):
    s = Stream()
    purchases = [s.add("purchase", T0 + i * DAY, amount=10) for i in range(12)]
    tenth = fired(s.replay(spec), "tenth-purchase")
    assert [t.cause_event_id for t in tenth] == [purchases[9].event_id]


# -- transactional ----------------------------------------------------------------------

def test_cart_abandonment_cancelled_by_purchase_at_29_min(spec):
    s = Stream()
    s.add("add_to_cart", T0, sku="A-77", cart_value=129.8)
    s.add("purchase", T0 + 29 * MIN, amount=129.8)
    assert fired(s.replay(spec), "cart-abandoned") == []


def test_cart_abandonment_fires_30_min_later_without_purchase(spec):
    s = Stream()
    cart = s.add("add_to_cart", T0, sku="A-77", cart_value=129.8)
    s.add("product_view", T0 + 10 * MIN, sku="B-1", category="shoes")
    (t,) = fired(s.replay(spec), "cart-abandoned")
    assert t.fired_at == format_ts(T0 + 30 * MIN)
    assert t.cause_event_id == cart.event_id
    assert t.payload == {"sku": "A-77", "value": 129.8}      # typed, not stringified
    assert t.status == "sent"


def test_purchase_after_the_deadline_does_not_cancel(spec):
    s = Stream()
    s.add("add_to_cart", T0, sku="A-77", cart_value=10.0)
    s.add("purchase", T0 + 31 * MIN, amount=10.0)
    assert len(fired(s.replay(spec), "cart-abandoned")) == 1


def test_cart_cooldown_respected(spec):
    s = Stream()
    s.add("add_to_cart", T0, sku="A", cart_value=1.0)                 # fires at +30m: sent
    s.add("add_to_cart", T0 + 2 * HOUR, sku="B", cart_value=2.0)      # fires at 2h30: inside 24h -> suppressed
    s.add("add_to_cart", T0 + 26 * HOUR, sku="C", cart_value=3.0)     # 25h30 after the first send: sent
    carts = fired(s.replay(spec), "cart-abandoned")
    assert [(t.payload["sku"], t.status, t.reason) for t in carts] == [
        ("A", "sent", None), ("B", "suppressed", "cooldown"), ("C", "sent", None)]


def test_after_sale_three_days_later_when_drained(spec):
    s = Stream()
    p = s.add("purchase", T0, amount=20)
    (t,) = fired(s.replay(spec), "after-sale")
    assert t.fired_at == format_ts(T0 + 3 * DAY)
    assert t.cause_event_id == p.event_id


# -- behavioral -------------------------------------------------------------------------

def test_welcome_series_both_steps_without_click(spec):
    s = Stream()
    signup = s.add("signup", T0, email="a@b.c")
    steps = fired(s.replay(spec), "welcome-series")
    assert [(t.action, t.channel, t.fired_at) for t in steps] == [
        ("welcome-1", "email", format_ts(T0)), ("welcome-2", "push", format_ts(T0 + 2 * DAY))]
    assert {t.cause_event_id for t in steps} == {signup.event_id}
    assert len({t.trigger_id for t in steps}) == 2


def test_welcome_series_click_on_welcome_1_stops_step_2(spec):
    s = Stream()
    s.add("signup", T0)
    s.add("email_clicked", T0 + DAY, campaign="welcome-1")
    assert [t.action for t in fired(s.replay(spec), "welcome-series")] == ["welcome-1"]


def test_welcome_series_click_on_other_campaign_does_not_stop_it(spec):
    s = Stream()
    s.add("signup", T0)
    s.add("email_clicked", T0 + DAY, campaign="newsletter")
    assert [t.action for t in fired(s.replay(spec), "welcome-series")] == ["welcome-1", "welcome-2"]


def test_coupon_reminder_matches_the_coupon_code(spec):
    s = Stream()
    s.add("coupon_issued", T0, coupon="AAA")
    s.add("coupon_issued", T0 + HOUR, coupon="BBB")
    s.add("coupon_redeemed", T0 + 2 * DAY, coupon="AAA")          # redeems only AAA
    reminders = fired(s.replay(spec), "coupon-reminder")
    assert len(reminders) == 1
    assert reminders[0].fired_at == format_ts(T0 + HOUR + 7 * DAY)


def test_coupon_redeemed_too_late_still_reminds(spec):
    s = Stream()
    s.add("coupon_issued", T0, coupon="AAA")
    s.add("coupon_redeemed", T0 + 8 * DAY, coupon="AAA")
    assert len(fired(s.replay(spec), "coupon-reminder")) == 1


# -- inactivity -------------------------------------------------------------------------

def test_winback_after_30_days_of_silence(spec):
    s = Stream()
    s.add("product_view", T0, category="shoes")
    last = s.add("product_view", T0 + 20 * DAY, category="shoes")   # re-arms the deadline
    (t,) = fired(s.replay(spec), "winback-30d")
    assert t.fired_at == format_ts(last.ts + 30 * DAY)
    assert t.cause_event_id == ""          # no event causes inactivity; the id hashes the stretch's start


def test_winback_not_fired_while_active(spec):
    s = Stream()
    for i in range(0, 100, 20):
        s.add("product_view", T0 + i * DAY, category="shoes")
    winbacks = fired(s.replay(spec), "winback-30d")
    assert len(winbacks) == 1                 # only the end-of-file flush after the last event
    assert winbacks[0].fired_at == format_ts(T0 + 110 * DAY)


# -- recurring --------------------------------------------------------------------------

@pytest.mark.parametrize(("birthday", "zone", "utc_fire"), [
    ("1990-03-20", "Europe/Berlin", "2026-03-20T08:00:00.000Z"),    # before the DST change: CET, UTC+1
    ("1990-03-30", "Europe/Berlin", "2026-03-30T07:00:00.000Z"),    # after it (29 March): CEST, UTC+2
    ("1985-11-02", "America/New_York", "2026-11-02T14:00:00.000Z"),  # after US DST ends (1 Nov): EST
    ("1985-07-04", None, "2026-07-04T09:00:00.000Z"),                # no zone known: UTC
])
def test_birthday_at_nine_local_across_dst(spec, birthday, zone, utc_fire):
    s = Stream()
    traits = {"birthday": birthday} | ({"timezone": zone} if zone else {})
    s.add("identify", parse_ts("2026-01-10T12:00:00Z"), **traits)
    (t,) = fired(s.replay(spec, until=parse_ts("2026-12-31T00:00:00Z")), "birthday")
    assert t.fired_at == utc_fire
    assert t.action == "birthday-coupon"


def test_birthday_outside_replayed_period_does_not_fire(spec):
    s = Stream()
    s.add("identify", T0, birthday="1990-06-01", timezone="Europe/Berlin")
    s.add("product_view", T0 + DAY, category="shoes")
    assert fired(s.replay(spec), "birthday") == []


def test_birthday_fires_every_year_with_distinct_ids(spec):
    s = Stream()
    s.add("identify", T0, birthday="1990-02-01", timezone="Asia/Tokyo")
    s.add("identify", T0 + DAY, birthday="1990-02-01", timezone="Asia/Tokyo")   # re-sent profile: no double
    out = fired(s.replay(spec, until=parse_ts("2028-12-31T00:00:00Z")), "birthday")
    assert [t.fired_at for t in out] == [
        "2026-02-01T00:00:00.000Z", "2027-02-01T00:00:00.000Z", "2028-02-01T00:00:00.000Z"]
    assert len({t.trigger_id for t in out}) == 3


# -- aggregates -------------------------------------------------------------------------

def test_decayed_interest_halves_after_one_half_life(spec):
    from engine.core.evaluate import Evaluator
    ev = Evaluator(spec)
    state = ev.on_event(None, Event("e1", "product_view", "c1", T0, {"category": "shoes"}), [])
    read = spec.readers["interest"]
    assert read(state, T0)["shoes"] == pytest.approx(1.0)
    assert read(state, T0 + parse_duration("14d"))["shoes"] == pytest.approx(0.5)
    assert read(state, T0 + parse_duration("28d"))["shoes"] == pytest.approx(0.25)
    ev.on_event(state, Event("e2", "product_view", "c1", T0 + parse_duration("14d"), {"category": "shoes"}), [])
    assert read(state, T0 + parse_duration("14d"))["shoes"] == pytest.approx(1.5)


def test_views_7d_slides(spec):
    from engine.core.evaluate import Evaluator
    ev = Evaluator(spec)
    state = None
    for i in range(3):
        state = ev.on_event(state, Event(f"e{i}", "product_view", "c1", T0 + i * DAY, {"category": "x"}), [])
    read = spec.readers["views_7d"]
    assert read(state, T0 + 2 * DAY) == 3
    assert read(state, T0 + 9 * DAY) == 1                     # the view of day 2 is exactly 7 days old
    assert read(state, T0 + 10 * DAY) == 0
    assert read(state, T0 + 7 * DAY + DAY // 2) in (2, 3)    # each view counts 7d at least, 7d + 7d/8 at most


def test_duplicate_event_ids_apply_once(spec):
    s = Stream()
    first = s.add("purchase", T0, amount=6000)
    s.events.append(Event(first.event_id, "purchase", "c1", T0 + MIN, {"amount": 6000}))
    from engine.core.evaluate import Evaluator
    ev = Evaluator(spec)
    state = None
    for e in s.events:
        state = ev.on_event(state, e, [])
    assert state.aggs["lifetime_spend"] == 6000
    assert ev.counters.duplicates == 1


def test_trigger_ids_are_stable_and_distinct(spec):
    s = Stream()
    s.add("add_to_cart", T0, sku="A", cart_value=1.0)
    s.add("add_to_cart", T0, cid="c2", sku="A", cart_value=1.0)
    a, b = s.replay(spec), s.replay(spec)
    assert [t.trigger_id for t in a] == [t.trigger_id for t in b]
    assert len({t.trigger_id for t in a}) == len(a)


def test_winback_fires_again_after_a_new_stretch_of_silence(spec):
    s = Stream()
    s.add("product_view", T0, category="shoes")
    back = s.add("product_view", T0 + 45 * DAY, category="shoes")   # after the first winback
    s.add("product_view", T0 + 100 * DAY, cid="c2", category="bags")   # another customer moves the clock on
    winbacks = [t for t in fired(s.replay(spec), "winback-30d") if t.customer_id == "c1"]
    assert [t.fired_at for t in winbacks] == [format_ts(T0 + 30 * DAY), format_ts(back.ts + 30 * DAY)]
    assert len({t.trigger_id for t in winbacks}) == 2
