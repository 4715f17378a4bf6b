"""The rules loader: SPEC §3's example loads as the structs it describes, and each kind of
mistake is reported once, at its file and line, with a hint where the fix is obvious."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.rules.compiler import compile_rules
from engine.rules.errors import RulesInvalid
from engine.rules.expr import RESERVED_NAMES
from engine.rules.loader import load_rules
from engine.rules.model import Action, Aggregate, FrequencyCap, QuietHours, RuleSet, Source, Step, Unless

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SPEC_FILE = "spec_rules/rules.yaml"

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def errors_of(path: str | Path) -> list[str]:
    with pytest.raises(RulesInvalid) as caught:
        load_rules(path)
    return [str(error) for error in caught.value.errors]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


# --------------------------------------------------------------------------- SPEC §3 example


@pytest.fixture
def spec(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(FIXTURES)
    return load_rules("spec_rules")


def test_spec_example_files_and_aggregates(spec) -> None:
    assert spec.files == (SPEC_FILE,)
    aggs = spec.aggregates
    assert list(aggs) == ["lifetime_spend", "purchases", "views_7d", "last_active", "interest"]
    assert (aggs["lifetime_spend"].kind, aggs["lifetime_spend"].field, aggs["lifetime_spend"].on) == (
        "sum", "amount", ("purchase",))
    assert (aggs["purchases"].kind, aggs["purchases"].on, aggs["purchases"].window) == ("count", ("purchase",), None)
    assert (aggs["views_7d"].on, aggs["views_7d"].window) == (("product_view",), 7 * DAY)
    assert (aggs["last_active"].kind, aggs["last_active"].field, aggs["last_active"].on) == ("last", "ts", ("*",))
    interest = aggs["interest"]
    assert (interest.kind, interest.on, interest.by, interest.half_life) == (
        "decayed_count", ("product_view",), "category", 14 * DAY)
    assert aggs["purchases"].source == Source(SPEC_FILE, 3)


def test_spec_example_rules(spec) -> None:
    rules = {rule.id: rule for rule in spec.rules}
    assert [rule.id for rule in spec.rules] == [
        "vip-5000", "tenth-purchase", "cart-abandoned", "after-sale",
        "welcome-series", "coupon-reminder", "winback-30d", "birthday",
    ]
    vip = rules["vip-5000"]
    assert (vip.type, vip.on, vip.condition) == ("threshold", ("purchase",), "lifetime_spend >= 5000")
    assert (vip.source.line, vip.condition_line) == (9, 12)
    assert vip.then == Action("vip-welcome", "email", Source(SPEC_FILE, 13))

    cart = rules["cart-abandoned"]
    assert cart.unless == Unless(("purchase",), Source(SPEC_FILE, 24), within=30 * MINUTE)
    assert cart.then.payload == {"sku": "{event.sku}", "value": "{event.cart_value}"}
    assert cart.cooldown == 24 * HOUR

    assert rules["after-sale"].delay == 3 * DAY

    welcome = rules["welcome-series"]
    assert welcome.then is None
    assert welcome.steps == (
        Step(Action("welcome-1", "email", Source(SPEC_FILE, 38)), Source(SPEC_FILE, 38)),
        Step(
            Action("welcome-2", "push", Source(SPEC_FILE, 41)), Source(SPEC_FILE, 39), after=2 * DAY,
            unless=Unless(("email_clicked",), Source(SPEC_FILE, 40), match={"campaign": "welcome-1"}),
        ),
    )
    coupon = rules["coupon-reminder"].unless
    assert (coupon.events, coupon.within, coupon.match) == (
        ("coupon_redeemed",), 7 * DAY, {"coupon": "{event.coupon}"})

    winback = rules["winback-30d"]
    assert (winback.on, winback.inactive, winback.condition) == ((), 30 * DAY, None)

    birthday = rules["birthday"]
    assert (birthday.every, birthday.date, birthday.at, birthday.on) == ("year", "profile.birthday", (9, 0), ())


def test_spec_example_policy(spec) -> None:
    policy = spec.policy
    assert policy.source == Source(SPEC_FILE, 61)
    assert policy.frequency_caps == (FrequencyCap("email", 3, 7 * DAY, Source(SPEC_FILE, 63)),)
    assert policy.quiet_hours == QuietHours((21, 0), (8, 0), "defer", Source(SPEC_FILE, 64))
    assert (policy.consent, policy.control_group, policy.control_group_salt) == ("required", 0.05, "")


def test_projects_rules_directory_is_valid() -> None:
    assert load_rules(ROOT / "rules").rules


# --------------------------------------------------------------------------- one mistake per file

# file -> (line, substring of the message, the message ends with this did-you-mean or None)
BROKEN = {
    "aggregate_kind_typo.yaml": (3, "unknown aggregate kind 'sume'", "(did you mean 'sum'?)"),
    "aggregate_key_typo.yaml": (5, "unknown key 'windw'", "(did you mean 'window'?)"),
    "bad_duration.yaml": (8, "'within': bad duration '30 minutes'", None),
    "yaml_syntax.yaml": (7, "YAML syntax error: expected ',' or '}'", None),
    "missing_then.yaml": (3, "rule 'vip-5000': needs 'then'", None),
    "rule_key_typo.yaml": (6, "rule 'cart-abandoned': unknown key 'unles'", "(did you mean 'unless'?)"),
    "duplicate_rule_id.yaml": (
        9, "duplicate rule id 'after-sale': already used at broken/duplicate_rule_id.yaml:3", None),
    "bad_rule_type.yaml": (4, "unknown rule type 'tresholds'", "(did you mean 'threshold'?)"),
    "bad_at.yaml": (7, "'9am' is not a time of day: write HH:MM in quotes, like \"09:00\"", None),
    "at_number.yaml": (7, "9 is not a time of day: write HH:MM in quotes, like \"09:00\"", None),
    "control_group_over_100.yaml": (6, "'control_group' must be a share from 0% to below 100%", None),
    "date_not_profile.yaml": (6, "'date' must name a profile attribute", "(did you mean 'profile.birthday'?)"),
    "first_step_after.yaml": (7, "step 1: the first step is sent when the rule fires, so it takes no 'after'", None),
    "policy_key_typo.yaml": (4, "policy: unknown key 'frequency_cap'", "(did you mean 'frequency_caps'?)"),
    "quiet_hours_mode_typo.yaml": (6, "unknown quiet_hours mode 'deferred'", "(did you mean 'defer'?)"),
    "duplicate_key.yaml": (8, "duplicate key 'then' (first at line 6)", None),
    "unknown_top_level_key.yaml": (2, "unknown key 'rule' at the top level", "(did you mean 'rules'?)"),
    "delay_and_unless.yaml": (3, "'delay' and 'unless' exclude each other", None),
    "reserved_aggregate_name.yaml": (4, "'event' is reserved", None),
    "step_unless_within.yaml": (9, "step 2: a step's 'unless' watches the wait given by the step's 'after'", None),
    "recurring_with_on.yaml": (3, "a recurring rule is started by its date, so it takes no 'on'", None),
    "then_key_typo.yaml": (9, "unknown key 'chanel' in 'then'", "(did you mean 'channel'?)"),
}


def test_every_broken_fixture_is_in_the_table() -> None:
    assert sorted(path.name for path in (FIXTURES / "broken").glob("*.yaml")) == sorted(BROKEN)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_reports_its_one_mistake(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    line, text, suggestion = BROKEN[name]
    monkeypatch.chdir(FIXTURES)
    (error,) = errors_of(f"broken/{name}")
    assert error.startswith(f"broken/{name}:{line}: "), error
    assert text in error
    if suggestion:
        assert error.endswith(suggestion), error
    else:
        assert "did you mean" not in error


def test_broken_directory_reports_every_file_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    errors = errors_of("broken")
    for name, (line, _, _) in BROKEN.items():
        assert any(e.startswith(f"broken/{name}:{line}: ") for e in errors), name
    places = [(e.split(":")[0], int(e.split(":")[1])) for e in errors]
    assert places == sorted(places)
    # two files declare a policy: the later one is told where the first one is
    assert [e for e in errors if "second policy" in e] == [
        "broken/quiet_hours_mode_typo.yaml:2: a second policy: there is one at broken/policy_key_typo.yaml:2 already;"
        " keep one per rules directory"
    ]


def test_a_file_with_several_mistakes_reports_all_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    assert errors_of("several_mistakes.yaml") == [
        "several_mistakes.yaml:3: aggregate 'lifetime_spend': unknown aggregate kind 'sume' (did you mean 'sum'?)",
        "several_mistakes.yaml:9: rule 'cart-abandoned': unknown key 'unles' (did you mean 'unless'?)",
        "several_mistakes.yaml:15: rule 'after-sale': 'delay': bad duration '3 days': write a number and a unit,"
        " e.g. 30m, 24h, 7d, 1h30m (units: ms, s, m, h, d, w)",
        "several_mistakes.yaml:19: policy: unknown quiet_hours mode 'silent': use defer or drop",
    ]


# --------------------------------------------------------------------------- YAML 1.1 traps

def test_yaml_11_booleans_and_sexagesimals_stay_text(tmp_path: Path) -> None:
    write(tmp_path, "traps.yaml", """\
aggregates:
  yes_count: {count: [yes, no, on, off, y, n]}
  last_y: {last: y, on: n}
rules:
  - id: noon
    type: recurring
    every: year
    date: profile.birthday
    at: 09:00
    then: {action: off, channel: no}
  - id: always
    type: threshold
    on: on
    if: true
    then: {action: yes, channel: email, payload: {flag: true, n: 1.50, t: 12:30, none: ~}}
""")
    rules = load_rules(tmp_path)
    assert rules.aggregates["yes_count"].on == ("yes", "no", "on", "off", "y", "n")
    assert (rules.aggregates["last_y"].field, rules.aggregates["last_y"].on) == ("y", ("n",))
    noon, always = rules.rules
    assert noon.at == (9, 0)
    assert (noon.then.action, noon.then.channel) == ("off", "no")
    assert (always.on, always.condition, always.then.action) == (("on",), "true", "yes")
    assert always.then.payload == {"flag": True, "n": 1.5, "t": "12:30", "none": None}


# --------------------------------------------------------------------------- directory handling


def test_directory_reads_yaml_and_yml_by_name_and_not_recursively(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", "rules:\n  - {id: b, type: threshold, if: x > 1, then: {action: b, channel: email}}\n")
    write(tmp_path, "a.yaml", "aggregates:\n  x: {count: purchase}\n")
    write(tmp_path, "notes.txt", "not: [rules")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "c.yaml", "rule: broken")
    rules = load_rules(str(tmp_path) + "/")
    assert rules.files == (f"{tmp_path}/a.yaml", f"{tmp_path}/b.yml")
    assert rules.rules[0].source == Source(f"{tmp_path}/b.yml", 2)


def test_missing_path_and_empty_directory_are_errors(tmp_path: Path) -> None:
    assert errors_of(tmp_path / "nope") == [f"{tmp_path / 'nope'}: no such rules directory or file"]
    assert "no rules files (*.yaml, *.yml) in this directory" in errors_of(tmp_path)[0]


def test_an_empty_file_adds_nothing(tmp_path: Path) -> None:
    write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert load_rules(tmp_path).rules == ()


def test_duplicates_across_files_name_both_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    rule = "  - {id: same, type: transactional, on: purchase, then: {action: a, channel: email}}\n"
    write(tmp_path / "rules", "a.yaml", "aggregates:\n  spend: {sum: amount, on: purchase}\n"
          "rules:\n" + rule + "policy: {consent: required}\n")
    write(tmp_path / "rules", "b.yaml", "\naggregates:\n  spend: {count: purchase}\nrules:\n" + rule
          + "policy:\n  consent: optional\n")
    assert errors_of("rules") == [
        "rules/b.yaml:3: aggregate 'spend' is already defined at rules/a.yaml:2",
        "rules/b.yaml:5: rule 'same': duplicate rule id 'same': already used at rules/a.yaml:4",
        "rules/b.yaml:6: a second policy: there is one at rules/a.yaml:5 already; keep one per rules directory",
    ]


# --------------------------------------------------------------------------- details


def rule_errors(tmp_path: Path, body: str) -> list[str]:
    """Errors of a one-rule file, without the `file:line: ` part."""
    write(tmp_path, "r.yaml", "rules:\n  - id: r\n" + body)
    return [re.sub(r"^[^:]+:\d+: ", "", error) for error in errors_of(tmp_path / "r.yaml")]


def test_rule_needs_id_and_type(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", "rules:\n  - then: {action: a, channel: email}\n    on: x\n    type: behavioral\n"
          "  - id: 'bad id'\n    type: behavioral\n    on: x\n    then: {action: a, channel: email}\n")
    errors = errors_of(tmp_path / "r.yaml")
    assert errors[0].endswith(":2: a rule needs an 'id', e.g. id: cart-abandoned")
    assert "rule 'bad id': a rule id uses letters" in errors[1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    type: threshold\n    then: {action: a, channel: email}\n", "a threshold rule needs 'if'"),
        ("    type: behavioral\n    then: {action: a, channel: email}\n", "a behavioral rule needs 'on'"),
        ("    type: recurring\n    every: year\n    then: {action: a, channel: email}\n",
         "a recurring rule needs 'date'"),
        ("    type: threshold\n    if: x > 1\n    every: year\n    then: {action: a, channel: email}\n",
         "'every' is only for recurring rules"),
        ("    type: threshold\n    inactive: 30d\n    on: purchase\n    then: {action: a, channel: email}\n",
         "'inactive' fires when no event arrives at all, so it takes no 'on'"),
        ("    type: behavioral\n    on: x\n    then: {action: a, channel: email}\n    steps:\n"
         "      - then: {action: b, channel: email}\n", "has both 'then' and 'steps'"),
        ("    type: behavioral\n    on: x\n    steps:\n      - then: {action: a, channel: email}\n"
         "      - then: {action: b, channel: email}\n", "step 2: needs 'after'"),
        ("    type: transactional\n    on: x\n    unless: {event: purchase}\n    then: {action: a, channel: email}\n",
         "'unless' needs 'within'"),
        ("    type: transactional\n    on: x\n    then: {action: a}\n", "'then' needs 'channel'"),
        ("    type: transactional\n    on: x\n    priority: high\n    then: {action: a, channel: email}\n",
         "'priority' must be a whole number, not 'high'"),
        ("    type: transactional\n    on: x\n    control_group: 5\n    then: {action: a, channel: email}\n",
         "not 5 (did you mean 5%?)"),
        ("    type: transactional\n    on: x\n    quiet_hours: later\n    then: {action: a, channel: email}\n",
         "unknown quiet_hours mode 'later': use defer or drop"),
        ("    type: transactional\n    on: [\"*\", purchase]\n    then: {action: a, channel: email}\n",
         "\"*\" already means every event"),
        ("    type: transactional\n    on: []\n    then: {action: a, channel: email}\n",
         "'on' needs at least one event type"),
        ("    type: transactional\n    on: x\n    cooldown:\n    then: {action: a, channel: email}\n",
         "'cooldown' has no value"),
    ],
)
def test_rule_consistency(tmp_path: Path, body: str, message: str) -> None:
    (error,) = rule_errors(tmp_path, body)
    assert message in error


def test_rule_options_are_read(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", """\
rules:
  - id: r
    type: threshold
    on: [purchase, refund]
    if: |
      lifetime_spend >= 100
    priority: 5
    control_group: 0.1
    quiet_hours: drop
    then: {action: a, channel: sms, payload: {items: [1, 2], nested: {a: b}}}
""")
    (rule,) = load_rules(tmp_path).rules
    assert (rule.on, rule.condition, rule.condition_line) == (("purchase", "refund"), "lifetime_spend >= 100\n", 6)
    assert (rule.priority, rule.control_group, rule.quiet_hours) == (5, 0.1, "drop")
    assert rule.then.payload == {"items": [1, 2], "nested": {"a": "b"}}


@pytest.mark.parametrize(
    ("aggregate", "message"),
    [
        ("{sum: amount}", "a sum aggregate needs 'on', e.g. {sum: amount, on: purchase}"),
        ("{sum: amount, count: purchase, on: x}", "has 2 kinds (sum, count): keep exactly one"),
        ("{on: purchase}", "needs a kind: sum, count, last or decayed_count"),
        ("{count: purchase, on: x}", "'on' does not apply to a count aggregate"),
        ("{last: ts, window: 7d}", "only sum and count aggregates have a window"),
        ("{decayed_count: view, by: category}", "needs 'half_life'"),
        ("{decayed_count: view, by: category, half_life: 2 weeks}", "bad duration '2 weeks'"),
        ("7", "an aggregate is a mapping like {count: purchase}"),
    ],
)
def test_aggregate_mistakes(tmp_path: Path, aggregate: str, message: str) -> None:
    write(tmp_path, "a.yaml", f"aggregates:\n  spend: {aggregate}\n")
    (error,) = errors_of(tmp_path / "a.yaml")
    assert ":2: aggregate 'spend': " in error and message in error, error


def test_aggregate_names(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "aggregates:\n  Spend: {count: x}\n  top: {count: x}\n  class: {count: x}\n")
    errors = errors_of(tmp_path / "a.yaml")
    assert "lower-case letters" in errors[0]
    assert "'top' is reserved" in errors[1] and "'class' is reserved" in errors[2]


@pytest.mark.parametrize("name", sorted(name for name in RESERVED_NAMES if re.fullmatch(r"[a-z_][a-z0-9_]*", name)))
def test_every_reserved_name_is_an_error_at_its_line(tmp_path: Path, name: str) -> None:
    # the loader reads the expression language's own list, so the two cannot drift apart
    write(tmp_path, "a.yaml", f"aggregates:\n  ok: {{count: x}}\n  {name}: {{count: x}}\n")
    (error,) = errors_of(tmp_path / "a.yaml")
    assert error.startswith(f"{tmp_path / 'a.yaml'}:3: ") and f"'{name}' is reserved" in error, error


def test_a_reserved_name_in_a_ruleset_built_by_hand_is_a_file_line_error() -> None:
    # compile_rules is handed a RuleSet the loader did not check: still file:line, never Env's ValueError
    clash = Aggregate(name="now", kind="count", on=("x",), source=Source("hand.yaml", 7))
    with pytest.raises(RulesInvalid) as caught:
        compile_rules(RuleSet(aggregates={"now": clash}, rules=(), policy=None, files=("hand.yaml",)))
    assert str(caught.value) == "hand.yaml:7: aggregate 'now': 'now' is reserved in `if:` expressions: choose another name"


def test_policy_details(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", """\
policy:
  frequency_caps:
    - {channel: "*", max: 10, per: 1d}
    - {channel: email, max: 0, per: 7d}
  quiet_hours: {from: "21:00", to: "25:00"}
  consent: maybe
  control_group: 1
""")
    assert [re.sub(r"^[^:]+:", "", e) for e in errors_of(tmp_path / "p.yaml")] == [
        "4: policy: 'max' must be a whole number above 0, not the number 0",
        "5: policy: 'to': '25:00' is not a time of day: write HH:MM in quotes, like \"09:00\"",
        "6: policy: unknown consent 'maybe': use required or optional",
        "7: policy: 'control_group' must be a share from 0% to below 100%, like 5% or 0.05, not 1 (did you mean 1%?)",
    ]
    write(tmp_path, "p.yaml", "policy:\n  quiet_hours: {from: '22:00', to: '07:30'}\n  control_group_salt: 2024\n")
    policy = load_rules(tmp_path).policy
    assert (policy.quiet_hours.start, policy.quiet_hours.end, policy.quiet_hours.mode) == ((22, 0), (7, 30), "defer")
    assert policy.control_group_salt == "2024"


def test_yaml_structure_mistakes(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "- just\n- a list\n")
    assert errors_of(tmp_path / "a.yaml") == [
        f"{tmp_path}/a.yaml:1: a rules file is a mapping with aggregates, rules, policy or time, not a list"]
    write(tmp_path, "a.yaml", "base: &b {count: x}\naggregates:\n  <<: *b\n")
    assert any("merge keys (<<) are not supported" in e for e in errors_of(tmp_path / "a.yaml"))
    write(tmp_path, "a.yaml", "rules: &r [*r]\n")
    assert any("recursive" in e for e in errors_of(tmp_path / "a.yaml"))


def test_unless_match_values_compare_as_the_events_text(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", """\
rules:
  - id: r
    type: transactional
    on: order
    unless: {event: [refund, cancel], within: 1h, match: {order: "{event.order}", vip: true, n: 3}}
    then: {action: a, channel: email}
""")
    (rule,) = load_rules(tmp_path).rules
    assert rule.unless.events == ("refund", "cancel")
    assert rule.unless.match == {"order": "{event.order}", "vip": "True", "n": "3"}
