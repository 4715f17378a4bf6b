"""`triggers validate` reports structural and expression errors in one pass (issue 16): a rules
engineer sees every mistake at once, not the expression errors only after fixing the others."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.cli import main
from engine.rules import check
from engine.rules.check import check_rules
from engine.rules.compiler import compile_rules, load_and_compile
from engine.rules.errors import MAX_ERRORS, RulesInvalid
from engine.rules.loader import load_rules, read_rules
from engine.rules.model import Action, LeftOut, Rule, RuleType, Source

ROOT = Path(__file__).resolve().parents[2]

MIXED = """\
aggregates:
  spend: {sum: amount, on: purchase}
  broken: {sum: amount, on: purchase, window: 3 days}
rules:
  - id: typo
    type: threshold
    on: purchase
    if: spnd >= 5
    then: {action: x, channel: email}
  - id: slow
    type: transactional
    on: add_to_cart
    unless: {event: [purchase], within: 30 minutes}
    then: {action: y, channel: email}
  - id: syntax
    type: threshold
    if: spend >=
    then: {action: w, channel: email}
  - id: reads-the-broken-one
    type: threshold
    if: broken > 1
    then: {action: w, channel: email}
"""


def test_structural_and_expression_errors_come_in_one_pass(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text(MIXED)
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    f = tmp_path / "r.yaml"
    assert err == [
        f"{f}:3: aggregate 'broken': 'window': bad duration '3 days': write a number and a unit, e.g. 30m, 24h, "
        "7d, 1h30m (units: ms, s, m, h, d, w)",
        f"{f}:8: rule 'typo': if (column 1): unknown aggregate 'spnd' (did you mean 'spend'?)",
        f"{f}:13: rule 'slow': 'within': bad duration '30 minutes': write a number and a unit, e.g. 30m, 24h, 7d, "
        "1h30m (units: ms, s, m, h, d, w)",
        f"{f}:17: rule 'syntax': if (column 9): syntax error: invalid syntax",
        f"4 error(s) in {tmp_path}",
    ]
    # the loader alone stops at the structural errors: this is what one pass adds
    with pytest.raises(RulesInvalid) as e:
        load_and_compile(tmp_path)
    assert len(e.value.errors) == 2


def test_an_error_caused_by_a_left_out_policy_is_not_reported(tmp_path):
    """`channel: best` needs the policy's responses_by_channel: with a policy that has an error
    of its own, that error alone is reported, not a second one on every rule using `best`."""
    (tmp_path / "r.yaml").write_text(
        "policy:\n  responses_by_channel: {email: [email_opened]}\n  consent: sometimes\n"
        "rules:\n  - id: r\n    type: transactional\n    on: back_in_stock\n"
        "    then: {action: restock, channel: best}\n  - id: s\n    type: threshold\n    if: nope > 1\n"
        "    then: {action: a, channel: email}\n")
    with pytest.raises(RulesInvalid) as e:
        check_rules(tmp_path)
    messages = [str(err) for err in e.value.errors]
    assert len(messages) == 2, messages
    assert "policy: " in messages[0] and "consent" in messages[0]
    assert "unknown aggregate 'nope'" in messages[1]


def _pairs(n: int) -> str:
    """n rules with a structural error, n with an expression error."""
    return "rules:\n" + "".join(
        f"  - id: s{i}\n    type: transactional\n    on: x\n    delay: 3 days\n    then: {{action: a, channel: email}}\n"
        f"  - id: e{i}\n    type: threshold\n    if: nope{i} > 1\n    then: {{action: a, channel: email}}\n"
        for i in range(n))


@pytest.mark.parametrize("pairs,shown", [(40, 80), (60, MAX_ERRORS + 1)])
def test_both_kinds_count_against_the_error_limit(tmp_path, pairs, shown):
    (tmp_path / "r.yaml").write_text(_pairs(pairs))
    with pytest.raises(RulesInvalid) as e:
        check_rules(tmp_path)
    errors = e.value.errors
    assert len(errors) == shown
    assert {"bad duration" in err.message for err in errors[:-1]} == {True, False}     # both kinds
    assert errors[-1].message.startswith("stopped after") == (shown > MAX_ERRORS)
    assert [err.line for err in errors[:-1]] == sorted(err.line for err in errors[:-1])


def test_valid_rules_are_the_compilers():
    rules, compiled = check_rules(ROOT / "rules"), load_and_compile(ROOT / "rules")
    assert rules.ruleset == compiled.ruleset
    assert [r.id for r in rules.rules] == [r.id for r in compiled.rules]
    assert (rules.readers.keys(), rules.profile_attrs, rules.channels, rules.cancel_types) == (
        compiled.readers.keys(), compiled.profile_attrs, compiled.channels, compiled.cancel_types)


def test_valid_rules_are_read_once(monkeypatch):
    opened: list[str] = []
    real_open = Path.open

    def counting_open(self, *args, **kwargs):
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    check_rules(ROOT / "rules")
    files = sorted(p.name for p in (ROOT / "rules").glob("*.yaml"))
    assert sorted(opened) == files


def test_the_rules_compiled_are_those_read(tmp_path, monkeypatch):
    """A file changed after the reading (here: broken) does not change what is compiled."""
    (tmp_path / "r.yaml").write_text("rules:\n  - id: r\n    type: transactional\n    on: x\n"
                                     "    then: {action: a, channel: email}\n")

    def read_then_change(path):
        partial = read_rules(path)
        (tmp_path / "r.yaml").write_text("rules: [")
        return partial

    monkeypatch.setattr(check, "read_rules", read_then_change)
    assert [r.id for r in check_rules(tmp_path).rules] == ["r"]


BAD_POLICY = "policy:\n  responses_by_channel: {email: [email_opened]}\n  consent: sometimes\n"


def check_errors(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RulesInvalid) as e:
        check_rules(tmp_path)
    return [err.message for err in e.value.errors]


def test_a_left_out_policy_hides_no_error_that_does_not_follow_from_it(tmp_path):
    """Only what reads the policy is spared: an unknown aggregate whose name happens to say
    "policy" is an error of its own."""
    messages = check_errors(tmp_path, BAD_POLICY + "rules:\n  - id: s\n    type: threshold\n"
                            "    if: policy_hits > 1\n    then: {action: a, channel: email}\n")
    assert len(messages) == 2, messages
    assert "consent" in messages[0]
    assert messages[1] == "if (column 1): unknown aggregate 'policy_hits'"


def test_a_left_out_aggregate_is_read_in_any_form_without_a_second_error(tmp_path):
    """The aggregate's kind is unknown once its declaration has an error: `x`, `top(x)` and
    `x[key]` (of a `by:` aggregate) all compile, and its own error is the one reported."""
    messages = check_errors(tmp_path, """\
aggregates:
  views: {count: product_view, by: sku, colour: red}
rules:
  - id: plain
    type: threshold
    if: views > 1
    then: {action: a, channel: email}
  - id: top
    type: threshold
    if: top(views) == "shoes"
    then: {action: a, channel: email}
  - id: keyed
    type: threshold
    on: product_view
    if: views[event.sku] >= 3
    then: {action: a, channel: email}
""")
    assert len(messages) == 1, messages
    assert "colour" in messages[0]


def test_an_aggregate_declared_nowhere_is_still_unknown(tmp_path):
    messages = check_errors(tmp_path, """\
aggregates:
  views: {count: product_view, window: 3 days}
rules:
  - id: r
    type: threshold
    if: views > 1 and clicks > 1
    then: {action: a, channel: email}
""")
    assert len(messages) == 2, messages
    assert messages[1] == "if (column 15): unknown aggregate 'clicks'"


def test_an_aggregate_left_out_of_a_valid_policy_is_only_spared_where_it_is_read(tmp_path):
    """A left-out aggregate spares nothing else: `send_time: best` on a channel the (valid)
    policy names no responses for is still an error."""
    messages = check_errors(tmp_path, """\
aggregates:
  views: {count: product_view, window: 3 days}
policy:
  responses_by_channel: {email: [email_opened]}
rules:
  - id: r
    type: threshold
    if: views > 1
    then: {action: a, channel: sms, send_time: best}
""")
    assert len(messages) == 2, messages
    assert "the policy's responses_by_channel names none for sms" in messages[1]


def test_the_loader_says_what_it_left_out(tmp_path):
    (tmp_path / "a.yaml").write_text("aggregates:\n  ok: {count: purchase}\n  bad: {count: purchase, window: x}\n"
                                     "  ok: {count: purchase, window: x}\n")
    (tmp_path / "b.yaml").write_text(BAD_POLICY)
    partial = read_rules(tmp_path)
    assert partial.left_out == LeftOut(aggregates=frozenset({"bad"}), policy=True)   # not the duplicate 'ok'
    assert set(partial.ruleset.aggregates) == {"ok"}
    (tmp_path / "b.yaml").write_text("policy:\n  consent: required\n")
    assert read_rules(tmp_path).left_out.policy is False


def test_the_compiler_takes_what_was_left_out():
    ruleset = load_rules(ROOT / "tests" / "fixtures" / "spec_rules")
    reads = Rule(id="reads", type=RuleType.THRESHOLD, source=Source("hand.yaml", 1), condition="gone > 1",
                 then=Action(action="a", channel="best", source=Source("hand.yaml", 2)))
    partial = msgspec.structs.replace(ruleset, rules=(reads,), policy=None)
    with pytest.raises(RulesInvalid) as e:
        compile_rules(partial)
    assert len(e.value.errors) == 2   # unknown 'gone'; `channel: best` without responses_by_channel
    compiled = compile_rules(partial, LeftOut(aggregates=frozenset({"gone"}), policy=True))
    assert [r.id for r in compiled.rules] == ["reads"]
