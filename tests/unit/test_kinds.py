"""Rule kinds as classes (engine.rules.kinds), kinds and statuses as enums that keep the wire strings."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
import pytest

from connectors.base import Status as SinkStatus
from engine.actions.trigger import STATUSES, Status, Trigger
from engine.policy.contact import DEFERRED, Reason
from engine.rules.compiler import load_and_compile
from engine.rules.kinds import (
    AbsenceRule,
    CrossingRule,
    DelayRule,
    ImmediateRule,
    InactiveRule,
    Kind,
    RecurringRule,
    RulePolicy,
    SeriesRule,
)
from engine.rules.model import RULE_TYPES, RuleType
from engine.state.customer import Timer

SPEC_RULES = Path(__file__).resolve().parents[1] / "fixtures" / "spec_rules"


@pytest.fixture(scope="module")
def spec():
    return load_and_compile(SPEC_RULES)


EXPECTED = {
    "vip-5000": (CrossingRule, Kind.IMMEDIATE),
    "tenth-purchase": (CrossingRule, Kind.IMMEDIATE),
    "cart-abandoned": (AbsenceRule, Kind.ABSENCE),
    "after-sale": (DelayRule, Kind.DELAY),
    "welcome-series": (SeriesRule, Kind.SERIES),
    "coupon-reminder": (AbsenceRule, Kind.ABSENCE),
    "winback-30d": (InactiveRule, Kind.INACTIVE),
    "birthday": (RecurringRule, Kind.RECURRING),
}


def test_each_rule_compiles_to_the_class_of_its_kind(spec):
    assert {r.id: (type(r), r.kind) for r in spec.rules} == EXPECTED
    assert [r.id for r in spec.inactive] == ["winback-30d"]
    assert [r.id for r in spec.recurring] == ["birthday"]
    # the clock runs inactivity and recurring rules; events run the others
    assert {r.id for r in spec.rules if not r.on_events} == {"winback-30d", "birthday"}
    assert {r.id for r in spec.rules if r.dated} == {"birthday"}   # held back past a backtest's end


def test_a_transactional_rule_without_a_wait_is_immediate_not_a_crossing(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: now\n    type: transactional\n    on: purchase\n    then: {action: a, channel: email}\n")
    (rule,) = load_and_compile(tmp_path).rules
    assert type(rule) is ImmediateRule and rule.kind is Kind.IMMEDIATE and not rule.crossing


def test_the_kind_decides_the_waits_actions_and_unlesses(spec):
    by_id = spec.by_id
    assert by_id["cart-abandoned"].wait == 30 * 60_000
    assert by_id["after-sale"].wait == 3 * 86_400_000
    assert by_id["winback-30d"].wait == 30 * 86_400_000
    assert by_id["birthday"].date_attr == "birthday"
    series = by_id["welcome-series"]
    assert [a.action for a in series.actions()] == ["welcome-1", "welcome-2"]
    assert series.action_for_step(1).action == "welcome-2" and series.action_for_step(2) is None
    assert series.unless_for_step(0) is None and series.unless_for_step(1).events == {"email_clicked"}
    assert by_id["cart-abandoned"].unless_for_step(0).events == {"purchase"}
    assert by_id["after-sale"].unless_for_step(0) is None
    assert by_id["vip-5000"].action_for_step(0).action == "vip-welcome"
    assert by_id["vip-5000"].action_for_step(1) is None
    assert spec.cancel_types == {"purchase", "email_clicked", "coupon_redeemed"}
    assert spec.channels == {"email", "push"}
    # only a rule that waits for the event keeps its properties on the timer
    assert by_id["cart-abandoned"].ctx_props == ("cart_value", "sku")
    assert by_id["vip-5000"].ctx_props == () and by_id["winback-30d"].ctx_props == ()


@pytest.mark.parametrize("rule_id, steps_accepted", [
    ("vip-5000", []), ("cart-abandoned", [0]), ("after-sale", [0]), ("winback-30d", [0]), ("birthday", [0]),
    ("welcome-series", [1]),
])
def test_a_stored_deadline_is_accepted_only_by_the_kind_that_can_have_armed_it(spec, rule_id, steps_accepted):
    rule = spec.by_id[rule_id]
    accepted = [step for step in range(3) if rule.accepts(Timer(0, rule_id, step, "", "e", 0, {}))]
    assert accepted == steps_accepted


def test_rule_policy_holds_the_rules_own_contact_settings(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: r\n    type: transactional\n    on: purchase\n    then: {action: a, channel: email}\n"
        "    priority: 5\n    cooldown: 1h\n    control_group: 10%\n    quiet_hours: drop\n"
        "    attribution_window: 2d\n  - id: plain\n    type: transactional\n    on: purchase\n"
        "    then: {action: b, channel: email}\n")
    rules = load_and_compile(tmp_path)
    assert rules.by_id["r"].policy == RulePolicy(priority=5, cooldown=3_600_000, control_group=0.1,
                                                  quiet_hours="drop", attribution_window=2 * 86_400_000)
    assert rules.by_id["plain"].policy == RulePolicy()
    assert rules.attribution_windows == {"r": 2 * 86_400_000}


def test_enums_keep_the_wire_strings():
    assert [str(s) for s in Status] == ["sent", "held_out", "suppressed"] and STATUSES == tuple(Status)
    assert [str(k) for k in Kind] == ["immediate", "absence", "delay", "series", "inactive", "recurring",
                                      "journey"]
    assert RULE_TYPES == ("threshold", "transactional", "behavioral", "recurring", "journey")
    assert [str(r) for r in Reason] == ["no_consent", "cooldown", "priority", "quiet_hours_dropped",
                                        "frequency_cap"]
    assert DEFERRED == "deferred" and DEFERRED not in STATUSES
    trigger = Trigger("t", "r", "c", "a", "email", Status.SUPPRESSED, Reason.COOLDOWN, "2026-01-01T00:00:00.000Z",
                      "e")
    raw = msgspec.json.encode(trigger)
    assert b'"status":"suppressed","reason":"cooldown"' in raw
    back = msgspec.json.decode(raw, type=Trigger)
    assert back.status is Status.SUPPRESSED and back == trigger


def test_the_connectors_status_literal_names_the_same_statuses():
    """Connectors keep a Literal (settings decode and help show its strings); it must not drift."""
    assert typing.get_args(SinkStatus) == tuple(s.value for s in Status)


def test_the_loader_gives_the_rule_type_as_the_enum(spec):
    assert {r.id: r.rule.type for r in spec.rules}["birthday"] is RuleType.RECURRING
    assert all(isinstance(r.rule.type, RuleType) for r in spec.rules)
