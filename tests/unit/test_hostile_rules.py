"""Hostile rules files (SPEC §6): each is rejected by `triggers validate` within seconds, as a
`file:line:` error like any other mistake, never with a traceback, and without the memory or
the minutes it would otherwise cost. A rule that validates cannot crash a backtest later."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.rules import compiler, limits, schema, yaml_lines
from engine.rules.compiler import load_and_compile
from engine.rules.errors import MAX_ERRORS, RulesInvalid

ROOT = Path(__file__).resolve().parents[2]
LIMIT_S = 5.0   # the limit for rejecting a hostile file, on a slow machine

AGGREGATES = "aggregates:\n  purchases: {count: purchase}\n"
RULE = ("  - id: ok\n    type: threshold\n    on: purchase\n    if: purchases >= 1\n"
        "    then: {action: a, channel: email}\n")


def write(directory: Path, text: str | bytes, name: str = "hostile.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def rejected(capsys: pytest.CaptureFixture[str], path: Path) -> list[str]:
    """`triggers validate path`: exit 1 within LIMIT_S, no traceback; the error lines printed."""
    capsys.readouterr()
    start = time.perf_counter()
    code = main(["validate", str(path)])
    took = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert took < LIMIT_S, f"took {took:.1f} s"
    assert "Traceback" not in out + err
    errors = err.splitlines()
    assert errors[-1].endswith(f"error(s) in {path}")
    return errors[:-1]


def assert_rejected_at(capsys, path: Path, line: int, *fragments: str, directory: Path | None = None) -> str:
    """The (only) error names `path:line:` and says each fragment."""
    errors = rejected(capsys, directory or path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}:{line}: "), errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --------------------------------------------------------------------------- alias bombs


def billion_laughs(levels: int = 9, width: int = 9) -> list[str]:
    """The classic: each anchor is a list of `width` aliases of the previous one (9^9 values)."""
    return ["lol0: &lol0 lol"] + [
        f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * width) + "]" for i in range(1, levels + 1)]


def test_alias_bomb_in_a_payload_is_rejected_at_its_first_big_alias(tmp_path, capsys) -> None:
    laughs = billion_laughs()
    text = (AGGREGATES + "rules:\n  - id: bomb\n    type: threshold\n    on: purchase\n    if: purchases >= 1\n"
            "    then:\n      action: a\n      channel: email\n      payload:\n"
            + "".join(f"        {laugh}\n" for laugh in laughs))
    path = write(tmp_path, text)
    # the line of the first list whose aliases take the file past MAX_VALUES values
    size, total, level = 1, 40, 0
    while total <= limits.MAX_VALUES:
        level += 1
        size = 1 + 9 * size
        total += size
    error = assert_rejected_at(capsys, path, line_of(text, f"lol{level}: "), "alias *lol", "aliases counted expanded")
    assert f"{limits.MAX_VALUES:,}" in error


def test_a_few_aliases_are_fine(tmp_path) -> None:
    text = (AGGREGATES + "rules:\n  - id: reuse\n    type: threshold\n    on: purchase\n    if: purchases >= 1\n"
            "    then: {action: a, channel: email, payload: {a: &x [1, 2, 3], b: *x}}\n")
    (rule,) = load_and_compile(write(tmp_path, text).parent).ruleset.rules
    assert rule.then.payload == {"a": [1, 2, 3], "b": [1, 2, 3]}


# --------------------------------------------------------------------------- nesting


def deep(kind: str, depth: int) -> str:
    if kind == "flow lists":
        return "[" * depth + "]" * depth
    if kind == "flow mappings":
        return "{a: " * depth + "1" + "}" * depth
    return "- " * depth + "x"   # block lists, all on one line


@pytest.mark.parametrize("depth", [5_000, 50_000])
@pytest.mark.parametrize("kind", ["flow lists", "flow mappings", "block lists"])
def test_deep_nesting_is_rejected_before_anything_recurses(tmp_path, capsys, kind, depth) -> None:
    text = AGGREGATES + "rules:\n" + RULE + "  - " + deep(kind, depth) + "\n"
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, text.count("\n"), f"nests more than {limits.MAX_DEPTH} levels deep")


def test_deep_block_mappings_are_rejected_at_the_line_past_the_limit(tmp_path, capsys) -> None:
    # line n (n >= 2) opens the mapping n + 1 levels deep (the file's mapping is level 1, the list 2)
    lines = ["rules:", "  - a:"] + [" " * (4 + n) + "a:" for n in range(1, 1_500)]
    text = "\n".join(lines) + " 1\n"
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, limits.MAX_DEPTH, "nests more than")


def test_nesting_at_the_limit_is_fine(tmp_path) -> None:
    payload = deep("flow lists", limits.MAX_DEPTH - 5)   # file, rules, rule, then and payload come first
    text = AGGREGATES + "rules:\n" + RULE.replace("channel: email}", f"channel: email, payload: {{p: {payload}}}}}")
    assert load_and_compile(write(tmp_path, text).parent).rules


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("rule", "key", "message"), [
    ("    inactive: 99999999999d\n", "inactive", "at most 3650d (10 years)"),
    ("    inactive: 3651d\n", "inactive", "at most 3650d (10 years)"),
    ("    inactive: " + "9" * 400 + "d\n", "inactive", "at most 3650d"),
    ("    inactive: 0.5ms\n", "inactive", "must be at least 1ms"),
    ("    on: purchase\n    delay: 522w\n", "delay", "at most 3650d"),
    ("    on: purchase\n    delay: 1d\n    cooldown: 87601h\n", "cooldown", "at most 3650d"),
    ("    on: purchase\n    unless: {event: purchase,\n             within: 5256001m}\n", "within", "at most 3650d"),
    ("    on: purchase\n    delay: 1d\n    attribution_window: 315360000001ms\n", "attribution_window", "at most"),
])
def test_absurd_durations_are_rejected(tmp_path, capsys, rule, key, message) -> None:
    text = "rules:\n  - id: long\n    type: transactional\n" + rule + "    then: {action: a, channel: email}\n"
    path = write(tmp_path, text)
    error = assert_rejected_at(capsys, path, line_of(text, f"{key}:"), f"'{key}': bad duration", message)
    assert len(error) < 300   # a 400-digit number is not echoed whole


@pytest.mark.parametrize(("aggregate", "key"), [
    ("{count: view, window: 3651d}", "window"),
    ("{decayed_count: view, by: category, half_life: 1000000d}", "half_life"),
])
def test_absurd_aggregate_durations_are_rejected(tmp_path, capsys, aggregate, key) -> None:
    path = write(tmp_path, f"aggregates:\n  a: {aggregate}\n")
    assert_rejected_at(capsys, path, 2, f"'{key}': bad duration", "at most 3650d")


def test_absurd_policy_durations_are_rejected(tmp_path, capsys) -> None:
    text = "policy:\n  frequency_caps:\n    - {channel: email, max: 3, per: 99999999999d}\n"
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, 3, "'per': bad duration", "at most 3650d")


def test_a_series_spans_at_most_ten_years(tmp_path, capsys) -> None:
    steps = "".join("      - {after: 3650d, then: {action: a, channel: email}}\n" for _ in range(800))
    text = ("rules:\n  - id: forever\n    type: behavioral\n    on: signup\n    steps:\n"
            "      - then: {action: a, channel: email}\n" + steps)
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, 6, "the steps wait", "a series may span at most 3650d")


def test_rules_at_the_longest_durations_backtest_to_the_end_without_crashing(tmp_path, capsys) -> None:
    """Every deadline of a rule that validates stays inside datetime's range, even from an
    event in the year 8999, with --drain firing all of them at the end."""
    rules = write(tmp_path / "rules", AGGREGATES + (
        "rules:\n"
        "  - id: winback\n    type: threshold\n    inactive: 3650d\n    then: {action: w, channel: email}\n"
        "  - id: later\n    type: transactional\n    on: purchase\n    delay: 3650d\n"
        "    cooldown: 3650d\n    attribution_window: 3650d\n    then: {action: l, channel: email}\n"
        "  - id: series\n    type: behavioral\n    on: purchase\n    steps:\n"
        "      - then: {action: s1, channel: email}\n"
        "      - {after: 1825d, then: {action: s2, channel: email}}\n"
        "      - {after: 1825d, then: {action: s3, channel: email}}\n"
    )).parent
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "e1", "type": "purchase", "customer_id": "c1", "ts": "8999-12-31T23:00:00Z",'
                      ' "properties": {"amount": 5}}\n')
    out = tmp_path / "triggers.jsonl"
    capsys.readouterr()
    assert main(["backtest", "--rules", str(rules), "--events", str(events), "--out", str(out),
                 "--no-progress", "--quiet", "--drain"]) == 0
    assert "Traceback" not in "".join(capsys.readouterr())
    fired = out.read_text()
    assert all(f'"rule_id":"{rule}"' in fired for rule in ("winback", "later", "series"))
    assert '"fired_at":"9009-12-2' in fired


# --------------------------------------------------------------------------- characters


RULE_LINES = {
    "id": "  - id: vip-5000",
    "type": "    type: threshold",
    "comment": "    # fires once",
    "on": "    on: purchase",
    "if": "    if: purchases >= 1",
    "then": "    then: {action: a, channel: email}",
}


@pytest.mark.parametrize(("where", "key", "line"), [
    ("an expression", "if", '    if: "purchases >= 1 \u202e and false"'),
    ("a string in an expression", "if", "    if: event.sku == 'A-1\u202e' or purchases >= 1"),
    ("an id", "id", "  - id: vip\u202e-5000"),
    ("a comment", "comment", "    # access level \u2067admin\u2069"),
    ("a payload", "then", '    then: {action: a, channel: email, payload: {note: "a\u202ab"}}'),
    ("an arabic letter mark", "on", "    on: purch\u061case"),
    ("an escape", "on", "    on: purchase\x1b[2K"),
    ("a NUL", "on", "    on: purchase\x00"),
    ("a DEL", "on", "    on: purchase\x7f"),
    ("a C1 control", "on", "    on: purchase\x85"),
    ("a line separator", "on", "    on: purchase\u2028"),
    ("a byte order mark inside", "on", "    on: \ufeffpurchase"),
])
def test_bidi_and_control_characters_are_rejected_anywhere(tmp_path, capsys, where, key, line) -> None:
    text = AGGREGATES + "rules:\n" + "\n".join((line if k == key else v) for k, v in RULE_LINES.items()) + "\n"
    path = write(tmp_path, text)
    hidden = next(c for c in line if not c.isprintable())
    errors = rejected(capsys, path)
    code = f"U+{ord(hidden):04X}"
    assert errors[0].startswith(f"{path}:{line_of(text, line[:10])}: invisible character {code}"), errors[0]
    assert f" at column {line.index(hidden) + 1}: " in errors[0] and errors[0].endswith("delete it")


def test_every_hidden_character_of_a_file_is_reported_with_its_place(tmp_path, capsys) -> None:
    text = "# one \u202e\r\nrules: # two \u2066 and \u2069\n  - id: x\u200f\n"
    path = write(tmp_path, text)
    assert [e.split(" at column ")[0] for e in rejected(capsys, path)] == [
        f"{path}:1: invisible character U+202E RIGHT-TO-LEFT OVERRIDE",
        f"{path}:2: invisible character U+2066 LEFT-TO-RIGHT ISOLATE",
        f"{path}:2: invisible character U+2069 POP DIRECTIONAL ISOLATE",
        f"{path}:3: invisible character U+200F RIGHT-TO-LEFT MARK",
    ]


@pytest.mark.parametrize(("value", "key", "column"), [
    ("if: 'event.category == \"shoes\u200b\"'", "if", 25),
    ("on: purch\u200base", "on", 6),
    ("then: {action: a, channel: em\u2060ail}", "channel", 3),
    ("then: {action: a, channel: email, payload: {c: '{event.cate\u200dgory}'}}", "payload.c", 12),
])
def test_zero_width_characters_are_rejected_in_names_and_expressions(tmp_path, capsys, value, key, column) -> None:
    rule = {"if": "    if: purchases >= 1\n", "on": "    on: purchase\n",
            "then": "    then: {action: a, channel: email}\n"}
    rule[value.split(":")[0]] = "    " + value + "\n"
    text = AGGREGATES + "rules:\n  - id: z\n    type: threshold\n" + "".join(rule.values())
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, line_of(text, value[:6]),
                       f"'{key}' (column {column}): the invisible character U+20")


def test_zero_width_characters_stay_allowed_in_message_text(tmp_path) -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"   # an emoji sequence joined by U+200D
    payload = f"channel: email, payload: {{t: '{family} {{event.sku}}'}}}}"
    text = AGGREGATES + "rules:\n" + RULE.replace("channel: email}", payload)
    assert load_and_compile(write(tmp_path, text).parent).rules


# --------------------------------------------------------------------------- sizes


def test_a_60_mb_file_is_rejected_without_being_read(tmp_path, capsys) -> None:
    text = AGGREGATES + "rules:\n" + RULE + "# " + "x" * 60_000_000 + "\n"
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, 1, f"the file has {len(text):,} bytes", "at most 2,097,152 bytes (2 MiB)")
    path.unlink()   # the disk's, not the test's


def test_a_20000_rule_file_is_rejected_fast(tmp_path, capsys) -> None:
    rules = "".join(f"  - {{id: r{i}, type: threshold, on: purchase, if: 'purchases >= 1', then: {{action: a,"
                    f" channel: email}}}}\n" for i in range(20_000))
    text = AGGREGATES + "rules:\n" + rules
    path = write(tmp_path, text)
    (error,) = rejected(capsys, path)
    line = int(error.split(":")[1])
    assert error.startswith(f"{path}:{line}: ") and "- {id: r" in text.splitlines()[line - 1]
    assert f"more than {limits.MAX_VALUES:,} YAML values" in error or f"more than {limits.MAX_RULES:,} rules" in error


def test_a_directory_over_the_rule_limit_is_rejected_at_the_first_rule_too_many(tmp_path, capsys) -> None:
    per_file = limits.MAX_RULES // 2
    for f in range(3):
        rules = "".join(f"  - {{id: r{f}-{i}, type: threshold, if: 'true', then: {{action: a, channel: e}}}}\n"
                        for i in range(per_file))
        write(tmp_path, "rules:\n" + rules, f"{f}.yaml")
    error = assert_rejected_at(capsys, tmp_path / "2.yaml", 2, f"more than {limits.MAX_RULES:,} rules",
                               directory=tmp_path)
    assert "rule 'r2-0'" not in error


def test_a_directory_over_the_aggregate_limit_is_rejected(tmp_path, capsys) -> None:
    aggregates = "".join(f"  a{i}: {{count: e{i}}}\n" for i in range(limits.MAX_AGGREGATES + 1))
    path = write(tmp_path, "aggregates:\n" + aggregates)
    assert_rejected_at(capsys, path, limits.MAX_AGGREGATES + 2, f"more than {limits.MAX_AGGREGATES} aggregates")


def test_a_directory_over_the_size_limit_is_rejected_at_the_file_that_passes_it(tmp_path, capsys) -> None:
    comment = "# " + "x" * (limits.MAX_FILE_BYTES - 10) + "\n"
    count = limits.MAX_DIRECTORY_BYTES // limits.MAX_FILE_BYTES + 1
    for f in range(count + 2):
        write(tmp_path, comment, f"{f:02d}.yaml")
    assert_rejected_at(capsys, tmp_path / f"{count - 1:02d}.yaml", 1,
                       f"more than {limits.MAX_DIRECTORY_BYTES:,} bytes", directory=tmp_path)


def test_a_directory_with_too_many_files_is_rejected(tmp_path, capsys) -> None:
    for f in range(limits.MAX_FILES + 1):
        write(tmp_path, "# nothing\n", f"{f:03d}.yaml")
    assert_rejected_at(capsys, tmp_path / f"{limits.MAX_FILES:03d}.yaml", 1,
                       f"{limits.MAX_FILES + 1} rules files", directory=tmp_path)


def test_too_many_values_are_rejected(tmp_path, capsys) -> None:
    text = ("rules:\n" + RULE.replace("channel: email}\n", "channel: email, payload: {p: [\n")
            + "1,\n" * limits.MAX_VALUES + "]}}\n")
    path = write(tmp_path, text)
    # the file's mapping, `rules`, its list, the rule's mapping, 8 scalars, `then`, its mapping, 4
    # scalars, `payload`, its mapping, `p` and the list come before the first item
    before = 22
    line = line_of(text, "1,") + limits.MAX_VALUES - before
    assert_rejected_at(capsys, path, line, f"more than {limits.MAX_VALUES:,} YAML values")


def test_a_long_expression_is_rejected(tmp_path, capsys) -> None:
    condition = " or ".join(["purchases >= 1"] * 1_000)
    text = AGGREGATES + "rules:\n" + RULE.replace("if: purchases >= 1", f"if: {condition}")
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, line_of(text, "if:"), f"'if' is {len(condition):,} characters long")


def test_the_expressions_of_a_directory_are_bounded(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(compiler, "MAX_EXPRESSIONS", 10)
    text = AGGREGATES + "rules:\n" + "".join(RULE.replace("id: ok", f"id: r{i}") for i in range(12))
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, line_of(text, "id: r10") + 3, "rule 'r10': more than 10 expressions")
    monkeypatch.setattr(compiler, "MAX_EXPRESSIONS", 100)
    monkeypatch.setattr(compiler, "MAX_EXPRESSION_TEXT", 100)
    assert_rejected_at(capsys, path, line_of(text, "id: r7") + 3, "rule 'r7': more than 100 characters of expressions")


def test_rulegen_directories_up_to_the_rule_limit_stay_valid(tmp_path) -> None:
    from bench.rulegen import rule_set

    assert len(rule_set(1_000, tmp_path).rules) == 1_000
    assert len(rule_set(limits.MAX_RULES, tmp_path).rules) == limits.MAX_RULES


# --------------------------------------------------------------------------- many errors, long messages


def test_errors_stop_at_the_limit(tmp_path, capsys) -> None:
    text = "rules:\n" + "".join(f"  - {{id: r{i}, type: treshold, then: {{action: a, channel: e}}}}\n"
                                for i in range(5_000))
    path = write(tmp_path, text)
    errors = rejected(capsys, path)
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1] == f"{path}:{MAX_ERRORS + 1}: stopped after {MAX_ERRORS} errors: fix these, then validate again"


def test_what_a_message_quotes_is_bounded(tmp_path, capsys) -> None:
    path = write(tmp_path, f"rules:\n  - id: {'i' * 100_000}\n    type: {'t' * 900_000}\n"
                           f"    ? {'k' * 900_000}\n    : 1\n")
    errors = rejected(capsys, path)
    assert len(errors) == 3 and all(len(error) < 1_000 for error in errors)
    (bad_type,) = [error for error in errors if "unknown rule type" in error]
    assert " … " in bad_type and bad_type.endswith(": use threshold, transactional, behavioral, recurring or journey")


# --------------------------------------------------------------------------- never a traceback


def test_an_unexpected_failure_in_the_loader_is_an_error_of_its_file(tmp_path, capsys, monkeypatch) -> None:
    def overflow(*_args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(schema, "rule", overflow)
    path = write(tmp_path, AGGREGATES + "rules:\n" + RULE)
    assert_rejected_at(capsys, path, 1, "cannot read this file (RecursionError: maximum recursion depth exceeded)")


def test_an_unexpected_failure_in_the_compiler_is_an_error_of_its_rule(tmp_path, capsys, monkeypatch) -> None:
    def exhausted(*_args):
        raise MemoryError

    monkeypatch.setattr(compiler, "compile_expr", exhausted)
    path = write(tmp_path, AGGREGATES + "rules:\n" + RULE)
    assert_rejected_at(capsys, path, line_of(path.read_text(), "if:"),
                       "rule 'ok': if: cannot be compiled (MemoryError)")


def test_load_and_compile_raises_nothing_but_rules_invalid(tmp_path, monkeypatch) -> None:
    def broken(_ruleset):
        raise OverflowError("date value out of range")

    monkeypatch.setattr(compiler, "compile_rules", broken)
    with pytest.raises(RulesInvalid) as caught:
        load_and_compile(write(tmp_path, AGGREGATES + "rules:\n" + RULE).parent)
    assert "cannot load the rules (OverflowError: date value out of range)" in str(caught.value)


def test_an_unreadable_directory_is_an_error(tmp_path, capsys, monkeypatch) -> None:
    def denied(_self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)
    write(tmp_path, AGGREGATES)
    (error,) = rejected(capsys, tmp_path)
    assert error == f"{tmp_path}: cannot read the rules directory: Permission denied"


# --------------------------------------------------------------------------- without libyaml


@pytest.mark.parametrize("case", ["alias bomb", "deep flow lists", "deep block lists", "duration", "bidi"])
def test_pyyaml_without_libyaml_rejects_the_same_files(tmp_path, capsys, monkeypatch, case) -> None:
    monkeypatch.setattr(yaml_lines, "FastYamlLoader", yaml_lines.RulesYamlLoader)
    texts = {
        "alias bomb": ("rules:\n  - id: b\n    then:\n      payload:\n"
                       + "".join(f"        {laugh}\n" for laugh in billion_laughs())),
        "deep flow lists": "rules:\n  - " + deep("flow lists", 50_000) + "\n",
        "deep block lists": "rules:\n  - " + deep("block lists", 50_000) + "\n",
        "duration": ("rules:\n  - id: w\n    type: threshold\n    inactive: 99999999999d\n"
                     "    then: {action: a, channel: e}\n"),
        "bidi": "# \u202e\n",
    }
    rejected(capsys, write(tmp_path, texts[case]))


# --------------------------------------------------------------------------- what must keep working


def test_the_bundled_rules_and_the_spec_example_still_validate(capsys) -> None:
    assert main(["validate", str(ROOT / "rules")]) == 0
    assert main(["validate", str(ROOT / "tests" / "fixtures" / "spec_rules")]) == 0
    assert "OK" in capsys.readouterr().out


def test_syntax_errors_keep_pyyaml_s_wording(tmp_path, capsys) -> None:
    path = write(tmp_path, "rules:\n  - id: x\n    then: {action: a, channel: e\n    type: threshold\n")
    assert_rejected_at(capsys, path, 4, "YAML syntax error: expected ',' or '}', but got ':'"
                       " (while parsing a flow mapping at line 3)")


def test_the_where_expressions_of_aggregates_count_toward_the_bound(tmp_path, capsys, monkeypatch) -> None:
    """`where:` is an expression like `if:`: it counts toward the directory's bound and is
    reported at its own line (it was counted but never checked)."""
    monkeypatch.setattr(compiler, "MAX_EXPRESSIONS", 5)
    text = "aggregates:\n" + "".join(f"  a{i}: {{count: purchase, where: event.amount > {i}}}\n" for i in range(8)) \
        + "rules:\n" + RULE.replace("if: purchases >= 1", "if: a1 >= 1")
    path = write(tmp_path, text)
    assert_rejected_at(capsys, path, line_of(text, "a5:"), "aggregate 'a5': more than 5 expressions")
