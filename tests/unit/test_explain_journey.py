"""`triggers explain` of a journey (SPEC §3a): each customer's position, the wait it is in and
why the walk took each branch, on the SPEC's welcome journey."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import msgspec
import pytest

from engine.cli.explain import add_parser
from engine.core.times import format_ts, parse_ts
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.offline.explain import Explanation, JourneyMove, explain_customer, print_explanation
from engine.rules.compiler import load_and_compile
from engine.state.customer import decode_state, encode_state

T0 = parse_ts("2026-03-02T10:00:00Z")
HOUR = 3_600_000
DAY = 24 * HOUR

RULES = (Path(__file__).resolve().parents[1] / "fixtures" / "spec_journey" / "rules.yaml").read_text() + """\
  - id: vip-5000
    type: threshold
    on: purchase
    if: lifetime_spend >= 5000
    then: {action: vip-welcome, channel: email}
policy:
  consent: required
"""   # SPEC §3a's example, and a threshold rule beside it


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rules")
    (d / "rules.yaml").write_text(RULES)
    return d


@pytest.fixture(scope="module")
def rules(rules_dir):
    return load_and_compile(rules_dir)


class Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, type_: str, at: int, cid: str, **props) -> Event:
        ev = Event(f"e{len(self.events) + 1}", type_, cid, at, props)
        self.events.append(ev)
        return ev

    def opt_in(self, cid: str, *channels: str) -> None:
        for ch in channels:
            self.add("consent", T0 - DAY, cid, channel=ch, granted=True)

    def write(self, path: Path) -> Path:
        path.write_text("".join(
            json.dumps({"event_id": e.event_id, "type": e.type, "customer_id": e.customer_id, "ts": format_ts(e.ts),
                        "properties": e.properties}) + "\n" for e in self.events))
        return path


def welcome_events() -> tuple[Events, dict[str, Event]]:
    """Four customers of the welcome journey, each entering at T0."""
    s = Events()
    marks: dict[str, Event] = {}
    # clicked in time: yes at 'clicked', recommendations sent, the walk completed
    s.opt_in("c-click", "email")
    s.add("signup", T0, "c-click")
    marks["click"] = s.add("email_clicked", T0 + DAY, "c-click", campaign="welcome-1")
    # mid-wait: a click on another campaign does not answer the wait
    s.opt_in("c-wait", "email")
    s.add("signup", T0, "c-wait")
    marks["other"] = s.add("email_clicked", T0 + HOUR, "c-wait", campaign="spring-sale")
    s.add("product_view", T0 + DAY, "c-wait", category="shoes")
    # no click: `no` at the deadline, the reminder on sms (no push consent), the condition says no
    s.opt_in("c-no", "email", "sms")
    marks["no-signup"] = s.add("signup", T0, "c-no")
    s.add("page_view", T0 + 3 * DAY, "c-no")
    # a purchase during the wait: exit_on
    s.opt_in("c-buy", "email")
    s.add("signup", T0, "c-buy")
    marks["buy"] = s.add("purchase", T0 + 2 * HOUR, "c-buy", amount=40)
    return s, marks


@pytest.fixture(scope="module")
def welcome():
    return welcome_events()


def text_of(e: Explanation) -> str:
    buf = io.StringIO()
    print_explanation(e, buf)
    return buf.getvalue()


def journey_of(e: Explanation):
    r = next(r for r in e.rules if r.rule_id == "welcome")
    assert r.kind == "journey" and r.journey is not None
    return r


def moves(r) -> list[tuple[str | None, str, str | None]]:
    return [(m.step, m.what, m.to) for m in r.journey.moves]


def test_clicked_in_time_took_yes_and_completed(rules, welcome):
    s, marks = welcome
    e = explain_customer(rules, "c-click", events=s.events)
    r = journey_of(e)
    j = r.journey
    assert not j.inside and j.ended == "completed" and j.ended_at == format_ts(T0 + DAY)
    assert j.entered_at == format_ts(T0) and j.entry_type == "signup" and j.held_out is False
    assert j.wait is None and j.step is None
    assert moves(r) == [(None, "entered", "hello"), ("clicked", "yes", "recommend"), ("recommend", "ended", None)]
    yes = r.journey.moves[1]
    assert yes.at == format_ts(T0 + DAY)
    assert yes.detail.startswith(f"email_clicked {marks['click'].event_id} came in time")
    assert [(t.step, t.action, t.status) for t in r.triggers] == [("hello", "welcome-1", "sent"),
                                                                   ("recommend", "recommendations", "sent")]
    assert r.summary == f"sent ×2; ended: completed at {format_ts(T0 + DAY)}"
    assert not r.timers and not e.timers
    text = text_of(e)
    assert f"at 'clicked': yes → recommend: email_clicked {marks['click'].event_id} came in time" in text
    assert f"position   ended: completed at {format_ts(T0 + DAY)}" in text
    assert "[step recommend, cause" in text


def test_mid_wait_shows_the_wait_and_what_it_awaits(rules, welcome):
    s, marks = welcome
    e = explain_customer(rules, "c-wait", events=s.events)
    r = journey_of(e)
    j = r.journey
    due = format_ts(T0 + 2 * DAY)
    assert j.inside and j.step == "clicked" and j.step_kind == "wait" and j.since == format_ts(T0)
    assert j.leads == {"yes": "recommend", "no": "remind"}
    assert j.wait is not None
    assert (j.wait.kind, j.wait.due, j.wait.awaits, j.wait.match, j.wait.overdue) == (
        "wait", due, ["email_clicked"], {"campaign": "welcome-1"}, False)
    assert j.ended is None
    # the click on another campaign is told, and does not move the walk
    ignored = next(m for m in j.moves if m.what == "ignored")
    assert (ignored.step, ignored.to) == ("clicked", None)
    assert marks["other"].event_id in ignored.detail and "'spring-sale', not 'welcome-1'" in ignored.detail
    assert r.summary == f"sent; inside at 'clicked': waiting until {due} for email_clicked with campaign \"welcome-1\""
    assert [(t.rule_id, t.what, t.due) for t in e.timers] == [("welcome", "journey wait 'clicked' for email_clicked", due)]
    assert r.timers == e.timers
    text = text_of(e)
    assert "position   at 'clicked' (wait) since" in text
    assert f"waiting    for email_clicked with campaign \"welcome-1\" until {due}" in text
    assert f"yes → recommend when it comes in time, no → remind at {due}" in text
    assert "▸ clicked: wait up to 2d for email_clicked" in text
    assert f"welcome  step 2  due {due}  journey wait 'clicked' for email_clicked" in text


def test_no_click_took_no_and_reminded_on_the_fallback_channel(rules, welcome):
    s, marks = welcome
    e = explain_customer(rules, "c-no", events=s.events)
    r = journey_of(e)
    deadline = format_ts(T0 + 2 * DAY)
    assert moves(r) == [(None, "entered", "hello"), ("clicked", "no", "remind"), ("big-spender", "no", "end"),
                        ("big-spender", "ended", None)]
    no = r.journey.moves[1]
    assert no.at == deadline and no.detail == f"no email_clicked by {deadline}"
    remind = next(t for t in r.triggers if t.step == "remind")
    assert (remind.action, remind.channel, remind.status, remind.fired_at) == ("welcome-reminder", "sms", "sent", deadline)
    assert remind.cause_event_id == marks["no-signup"].event_id
    assert "on sms, the first of push, sms with consent" in remind.why
    assert r.journey.ended == "completed"
    assert {c.channel for c in e.state.consent} >= {"push", "sms"}   # the fallback list's channels too
    text = text_of(e)
    assert f"at 'clicked': no → remind: no email_clicked by {deadline}" in text
    assert "at 'remind': welcome-reminder sent on sms" in text
    assert "at 'big-spender': no → end: lifetime_spend >= 500 was False" in text
    assert "welcome-reminder (sms)  sent on sms" in text


def test_purchase_exits_the_journey(rules, welcome):
    s, marks = welcome
    e = explain_customer(rules, "c-buy", events=s.events)
    r = journey_of(e)
    j = r.journey
    buy = marks["buy"]
    assert not j.inside and j.ended == "exit_on:purchase" and j.ended_at == format_ts(buy.ts)
    assert r.journey.moves[-1] == JourneyMove(format_ts(buy.ts), "clicked", "ended", None,
                                              f"exit_on:purchase at step 'clicked' (purchase {buy.event_id})")
    assert not e.timers
    assert r.summary == f"sent; ended: exit_on:purchase at {format_ts(buy.ts)}"
    # the generic timer notes stay out of a journey's walk: no "condition false" nor "cancelled"
    assert not any("condition was false" in n or n.startswith("cancelled") for n in r.notes)
    assert f"ended: exit_on:purchase at step 'clicked' (purchase {buy.event_id})" in text_of(e)


NUDGE = """\
rules:
  - id: nudge
    type: journey
    on: signup
    steps:
      - id: pause
        wait: 1d
      - id: opened
        wait: {event: app_open, within: 1d}
        yes: end
        no: end
"""


def test_waits_that_end_without_a_send_leave_no_generic_timer_notes(tmp_path):
    """A delay that leads to a wait, a `no` that leads to the end: deadlines that made no send.
    The journey tells them (next, no, ended), not the generic "its condition was false"."""
    (tmp_path / "rules.yaml").write_text(NUDGE)
    rules = load_and_compile(tmp_path)
    s = Events()
    s.add("signup", T0, "c-n")
    s.add("page_view", T0 + 3 * DAY, "c-n")
    r = next(x for x in explain_customer(rules, "c-n", events=s.events).rules if x.rule_id == "nudge")
    assert not any("condition was false" in n or "lapsed" in n for n in r.notes), r.notes
    assert moves(r) == [(None, "entered", "pause"), ("pause", "next", "opened"), ("opened", "no", "end"),
                        ("opened", "ended", None)]
    assert r.notes[-1] == f"{format_ts(T0 + 2 * DAY)} ended: completed"
    assert r.summary == f"ended: completed at {format_ts(T0 + 2 * DAY)}"


def test_a_send_suppressed_on_every_fallback_channel_ends_the_walk(rules):
    s = Events()
    s.opt_in("c-x", "email")
    s.add("signup", T0, "c-x")
    s.add("page_view", T0 + 3 * DAY, "c-x")
    r = journey_of(explain_customer(rules, "c-x", events=s.events))
    suppressed = next(t for t in r.triggers if t.step == "remind")
    assert (suppressed.status, suppressed.reason, suppressed.channel) == ("suppressed", "no_consent", "push")
    assert r.journey.ended == "suppressed:no_consent"
    assert r.notes[-1].endswith("ended: suppressed:no_consent at step 'remind'")


def test_never_entered(rules, welcome):
    s, _ = welcome
    r = journey_of(explain_customer(rules, "c-click", events=[e for e in s.events if e.type == "consent"]))
    assert r.journey.entered_at is None and not r.journey.inside and r.journey.moves == []
    assert r.summary == "never entered: no `signup` event"
    assert len(r.journey.steps) == 8 and r.journey.steps[1].startswith("clicked: wait up to 2d for email_clicked")
    other = next(x for x in explain_customer(rules, "c-click", events=s.events).rules if x.rule_id == "vip-5000")
    assert other.journey is None


def test_live_state_shows_the_position(rules, welcome):
    """Live (a state read from Redis), there are no trace notes: the position and its wait come
    from the state alone; past the deadline the wait is overdue."""
    s, _ = welcome
    replay = Replay(rules, [].extend)
    replay.feed([ev for ev in s.events if ev.customer_id == "c-wait"])   # its clock stops at its last event
    state = decode_state(encode_state(replay.store.states["c-wait"]))   # as the live engine stores it
    due = T0 + 2 * DAY
    e = explain_customer(rules, "c-wait", state=state, at=T0 + DAY)
    r = journey_of(e)
    j = r.journey
    assert e.source == "live" and r.notes == [] and j.moves == []
    assert j.inside and j.step == "clicked" and j.entry_event is not None
    assert j.wait is not None and j.wait.due == format_ts(due) and j.wait.match == {"campaign": "welcome-1"}
    assert not j.wait.overdue
    assert "inside at 'clicked': waiting until" in r.summary
    late = journey_of(explain_customer(rules, "c-wait", state=state, at=due + HOUR))
    assert late.journey.wait is not None and late.journey.wait.overdue
    assert late.summary.startswith("inside at 'clicked': overdue until")
    assert "OVERDUE" in text_of(explain_customer(rules, "c-wait", state=state, at=due + HOUR))


def test_a_whole_walk_is_kept_beyond_the_usual_notes(rules):
    """A big spender who did not click: no, a reminder, a condition, a split, a delay and an
    offer: more moments than the 8 notes kept for other kinds, every one of them kept."""
    s = Events()
    s.add("purchase", T0 - 2 * DAY, "c-vip", amount=900)   # before the entry: spend, no exit
    s.opt_in("c-vip", "email", "push")
    s.add("signup", T0, "c-vip")
    s.add("page_view", T0 + 5 * DAY, "c-vip")
    r = journey_of(explain_customer(rules, "c-vip", events=s.events))
    draw = next(m for m in r.journey.moves if m.what == "split")
    assert draw.to == "b" and "this customer's draw" in draw.detail   # deterministic per customer and journey
    assert moves(r) == [(None, "entered", "hello"), ("clicked", "no", "remind"), ("big-spender", "yes", "vip"),
                        ("vip", "split", "b"), ("b", "next", "a"), ("a", "ended", None)]
    assert [t.step for t in r.triggers] == ["hello", "remind", "a"]
    assert r.journey.ended == "completed" and r.journey.ended_at == format_ts(T0 + 3 * DAY)
    assert len(r.notes) > 8 and r.notes[0].endswith("entered on signup e4")
    assert any(n.endswith("at 'b': next → a: the 1d delay is over") for n in r.notes)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="triggers")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_json_has_the_journey(rules_dir, welcome, tmp_path, capsys):
    s, _ = welcome
    path = s.write(tmp_path / "events.jsonl")
    assert cli(["explain", "--rules", str(rules_dir), "--events", str(path), "--customer", "c-wait",
                "--rule", "welcome", "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    j = raw["rules"][0]["journey"]
    assert j["step"] == "clicked" and j["wait"]["awaits"] == ["email_clicked"]
    assert j["wait"]["match"] == {"campaign": "welcome-1"}
    e = msgspec.json.decode(json.dumps(raw), type=Explanation)
    assert e.rules[0].journey is not None and e.rules[0].journey.leads["no"] == "remind"
    assert cli(["explain", "--rules", str(rules_dir), "--events", str(path), "--customer", "c-wait"]) == 0
    assert "inside at 'clicked': waiting until" in capsys.readouterr().out
