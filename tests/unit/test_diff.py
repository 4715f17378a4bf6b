"""`triggers diff`: two backtests over the same events, triggers matched by trigger_id."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from engine.cli import main
from engine.core.times import format_ts, parse_ts
from engine.events.model import Event
from engine.offline.diff import DiffResult, DiffSummary, diff_backtests
from engine.rules.compiler import load_and_compile

T0 = parse_ts("2026-03-02T10:00:00Z")
MIN = 60_000
HOUR = 60 * MIN

BASE_RULES = """\
aggregates:
  lifetime_spend: {sum: amount, on: purchase}
rules:
  - id: vip
    type: threshold
    on: purchase
    if: lifetime_spend >= 100
    then: {action: vip-welcome, channel: email}
  - id: cart
    type: transactional
    on: add_to_cart
    unless: {event: [purchase], within: 30m}
    then: {action: cart-reminder, channel: email, payload: {sku: "{event.sku}"}}
    cooldown: 1h
"""

EXTRA_RULE = """\
  - id: big-order
    type: transactional
    on: purchase
    if: event.amount >= 100
    then: {action: thanks, channel: email}
"""


def rules_dir(tmp_path: Path, name: str, text: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "rules.yaml").write_text(text)
    return d


def events() -> list[Event]:
    """c1 spends 60 + 60 and abandons two carts 2 h apart; c2 spends 150; c3 spends 50."""
    evs = [
        Event("e1", "purchase", "c1", T0, {"amount": 60}),
        Event("e2", "purchase", "c2", T0 + MIN, {"amount": 150}),
        Event("e3", "purchase", "c3", T0 + 2 * MIN, {"amount": 50}),
        Event("e4", "purchase", "c1", T0 + 3 * MIN, {"amount": 60}),
        Event("e5", "add_to_cart", "c1", T0 + 10 * MIN, {"sku": "A"}),
        Event("e6", "add_to_cart", "c1", T0 + 2 * HOUR, {"sku": "B"}),
        Event("e7", "product_view", "c3", T0 + 5 * HOUR, {}),
    ]
    return evs


def write_events(path: Path, evs: list[Event]) -> Path:
    path.write_text("".join(
        json.dumps({"event_id": e.event_id, "type": e.type, "customer_id": e.customer_id, "ts": format_ts(e.ts),
                    "properties": e.properties}) + "\n" for e in evs))
    return path


def test_identical_rules_give_an_empty_diff(tmp_path):
    old = rules_dir(tmp_path, "old", BASE_RULES)
    new = rules_dir(tmp_path, "new", BASE_RULES)
    result = diff_backtests(load_and_compile(old), load_and_compile(new), events(), None)
    assert result.empty
    s = result.summary
    assert s.old_triggers == s.new_triggers == s.unchanged == 4   # vip c1, vip c2, two carts of c1
    assert (s.removed, s.added, s.changed, s.customers) == (0, 0, 0, 0)
    assert not s.rules_added and not s.rules_removed and not s.rules_changed and not s.policy_changed
    assert {r.rule_id: r.rule for r in s.rules} == {"vip": "same", "cart": "same"}


def test_raising_a_threshold_removes_triggers(tmp_path):
    old = rules_dir(tmp_path, "old", BASE_RULES)
    new = rules_dir(tmp_path, "new", BASE_RULES.replace("lifetime_spend >= 100", "lifetime_spend >= 130"))
    result = diff_backtests(old, new, events(), None)
    vip = result.rules["vip"]
    assert vip.rule == "changed"
    assert (vip.removed, vip.added, vip.changed, vip.unchanged, vip.customers) == (1, 0, 0, 1, 1)
    assert [c.customer_id for c in result.removed] == ["c1"] and vip.affected == ["c1"]
    assert result.removed[0].old.action == "vip-welcome" and result.removed[0].new is None
    assert vip.removed_examples[0].customer_id == "c1"
    assert vip.removed_examples[0].status == "sent"
    assert result.rules["cart"].rule == "same" and result.rules["cart"].removed == 0
    assert result.summary.rules_changed == ["vip"]


def test_adding_a_rule_adds_triggers_and_is_called_out(tmp_path):
    old = rules_dir(tmp_path, "old", BASE_RULES)
    new = rules_dir(tmp_path, "new", BASE_RULES + EXTRA_RULE)
    result = diff_backtests(old, new, events(), None)
    assert result.summary.rules_added == ["big-order"]
    big = result.rules["big-order"]
    assert big.rule == "added"
    assert (big.added, big.removed, big.old_triggers, big.new_triggers) == (1, 0, 0, 1)
    assert [(c.customer_id, c.new.action) for c in result.added] == [("c2", "thanks")]
    # and the other way round: a removed rule
    back = diff_backtests(new, old, events(), None)
    assert back.summary.rules_removed == ["big-order"]
    assert back.rules["big-order"].removed == 1 and back.rules["big-order"].rule == "removed"


def test_changing_a_cooldown_changes_statuses(tmp_path):
    old = rules_dir(tmp_path, "old", BASE_RULES)
    new = rules_dir(tmp_path, "new", BASE_RULES.replace("cooldown: 1h", "cooldown: 3h"))
    result = diff_backtests(old, new, events(), None)
    cart = result.rules["cart"]
    assert (cart.changed, cart.added, cart.removed, cart.unchanged) == (1, 0, 0, 1)
    change = result.changed[0]
    assert change.fields == ["status", "reason"]
    assert (change.old.status, change.new.status, change.new.reason) == ("sent", "suppressed", "cooldown")
    assert change.old.trigger_id == change.new.trigger_id
    assert cart.changed_examples[0].status == "sent → suppressed (cooldown)"


def test_until_limits_both_replays(tmp_path):
    old = rules_dir(tmp_path, "old", BASE_RULES)
    new = rules_dir(tmp_path, "new", BASE_RULES.replace("cooldown: 1h", "cooldown: 3h"))
    # the second cart (T0 + 2 h) is after --until: nothing differs any more
    result = diff_backtests(old, new, events(), format_ts(T0 + HOUR))
    assert result.empty
    assert result.summary.until == format_ts(T0 + HOUR)


def test_deadlines_after_the_end_are_pending_in_both_runs_unless_drained(tmp_path, capsys):
    """A 4-hour wait: c1's second cart (T0 + 2 h) replaces the first's wait, and its reminder
    is due after the last event (T0 + 5 h): pending, not fired. --drain fires it: then it is a
    changed fired_at instead of a removal."""
    old = rules_dir(tmp_path, "old", BASE_RULES)
    new = rules_dir(tmp_path, "new", BASE_RULES.replace("within: 30m", "within: 4h"))
    result = diff_backtests(old, new, events(), None)
    s = result.summary
    assert (s.old_pending, s.new_pending, s.drained, s.ended_at) == (0, 1, False, format_ts(T0 + 5 * HOUR))
    assert result.rules["cart"].removed == 2
    drained = diff_backtests(old, new, events(), None, drain=True)
    cart = drained.rules["cart"]
    assert (cart.removed, cart.added, cart.changed) == (1, 0, 1) and drained.summary.drained
    assert [(c.old.cause_event_id, c.fields) for c in drained.changed] == [("e6", ["fired_at"])]
    assert drained.changed[0].new.fired_at == format_ts(T0 + 6 * HOUR)
    path = write_events(tmp_path / "events.jsonl", events())
    assert cli(["diff", "--rules", str(old), "--rules", str(new), "--events", str(path)]) == 0
    assert (f"note: 0 deadlines before, 1 after pending at the end of data ({format_ts(T0 + 5 * HOUR)}) "
            "were not fired; --drain fires them") in capsys.readouterr().out
    assert cli(["diff", "--rules", str(old), "--rules", str(new), "--events", str(path), "--drain", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["drained"] is True


def test_events_file_is_decoded_once_and_counts_dead_letters(tmp_path):
    old = rules_dir(tmp_path, "old", BASE_RULES)
    new = rules_dir(tmp_path, "new", BASE_RULES.replace(">= 100", ">= 130"))
    path = write_events(tmp_path / "events.jsonl", events())
    with path.open("a") as fh:
        fh.write("not json\n")
    result = diff_backtests(old, new, path, None)
    assert result.summary.events == 7 and result.summary.dead_letters == 1
    assert len(result.removed) == 1


# -- the command line (engine.cli.diff), through the `triggers` command ---------------------------

def cli(argv: list[str]) -> int:
    return main(argv)


def test_cli_table_json_and_out(tmp_path, capsys):
    old = rules_dir(tmp_path, "old", BASE_RULES)
    new = rules_dir(tmp_path, "new", BASE_RULES.replace(">= 100", ">= 130").replace("1h", "3h") + EXTRA_RULE)
    path = write_events(tmp_path / "events.jsonl", events())
    out = tmp_path / "changes.jsonl"
    assert cli(["diff", "--rules", str(old), "--rules", str(new), "--events", str(path), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "rules added: big-order" in table
    assert "rules changed: vip, cart" in table
    assert "1 removed, 1 added, 1 changed" in table
    assert "sent → suppressed (cooldown)" in table
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["change"] for line in lines) == ["added", "changed", "removed"]
    assert all(line["trigger_id"] for line in lines)

    assert cli(["diff", "--rules", str(old), "--rules", str(new), "--events", str(path), "--json"]) == 0
    summary = msgspec.json.decode(capsys.readouterr().out, type=DiffSummary)
    assert (summary.removed, summary.added, summary.changed) == (1, 1, 1)
    assert summary.old_rules == str(old) and summary.new_rules == str(new)


def test_cli_errors(tmp_path, capsys):
    old = rules_dir(tmp_path, "old", BASE_RULES)
    broken = rules_dir(tmp_path, "broken", BASE_RULES.replace("lifetime_spend >= 100", "lifetime_spnd >= 100"))
    path = write_events(tmp_path / "events.jsonl", events())
    assert cli(["diff", "--rules", str(old), "--events", str(path)]) == 2
    assert "exactly twice" in capsys.readouterr().err
    assert cli(["diff", "--rules", str(old), "--rules", str(old), "--events", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such events file" in capsys.readouterr().err
    assert cli(["diff", "--rules", str(old), "--rules", str(broken), "--events", str(path)]) == 1
    err = capsys.readouterr().err
    assert "lifetime_spnd" in err and "NEW rules" in err
    assert cli(["diff", "--rules", str(old), "--rules", str(old), "--events", str(path), "--until", "yesterday"]) == 2
    assert "--until" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli(["diff", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--rules rules/ --rules rules-new/" in text


def test_diff_result_is_a_struct():
    assert issubclass(DiffResult, msgspec.Struct)


def test_report_shows_both_sides_volume_per_channel_and_lift(tmp_path, monkeypatch):
    """`--report FILE.html` (issue 12): the bundled rules against a copy that sends cart reminders
    by sms instead of email, on the bundled sample: each side's volume per channel and status,
    each side's lift verdict, the change counts, and no absolute path of this machine."""
    import re
    import shutil
    from html.parser import HTMLParser

    root = Path(__file__).resolve().parents[2]
    new = tmp_path / "rules-sms"
    shutil.copytree(root / "rules", new)
    text = (new / "transactional.yaml").read_text()
    assert "action: cart-reminder, channel: email" in text
    (new / "transactional.yaml").write_text(text.replace("action: cart-reminder, channel: email",
                                                         "action: cart-reminder, channel: sms"))
    report = tmp_path / "diff.html"
    monkeypatch.chdir(root)
    assert cli(["diff", "--rules", "rules", "--rules", str(new), "--events", "examples/sample-events.jsonl",
                "--report", str(report)]) == 0
    page = report.read_text()

    result = diff_backtests(root / "rules", new, root / "examples" / "sample-events.jsonl")
    row = page[page.index("<b>cart-abandoned</b>"):].split("</tr>")[0]
    before, after = row.split('<td class="side">')[1:3]
    old_cart = sum(1 for ts in result.old_triggers.values() for t in ts if t.rule_id == "cart-abandoned")
    assert f"<b>email</b> {old_cart:,}:" in before and "sms" not in before
    assert f"<b>sms</b> {old_cart:,}:" in after and "email" not in after
    assert "inconclusive: control has" in before          # the old side's verdict (customers as the unit)
    r = result.rules["cart-abandoned"]
    assert r.changed == old_cart and f'<td class="num">{r.customers:,}</td>' in row
    assert str(tmp_path) not in page and "rules-sms" in page   # no absolute path: the directory's name

    class Tags(HTMLParser):   # well-formed: every opened element closed, in order
        VOID = {"meta", "link", "br", "img", "input", "hr"}

        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag not in self.VOID:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack.pop() == tag, tag

    parser = Tags()
    parser.feed(page)
    assert parser.stack == [] and not re.search(r"<script", page)
