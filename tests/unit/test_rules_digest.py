"""The content hash shown with compiled rules is of the bytes compiled: the loader hashes what
it reads (`RuleSet.digest`), so a file changed just before or after the reading cannot give the
log a hash of other rules."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from engine.cli import main
from engine.rules import check
from engine.rules.compiler import load_and_compile
from engine.rules.digest import rules_digest
from engine.rules.loader import load_rules, read_rules
from engine.rules.reload import LiveRules

ROOT = Path(__file__).resolve().parents[2]

RULES = """\
aggregates:
  purchases: {count: purchase}
rules:
  - id: first
    type: threshold
    on: purchase
    if: purchases == 1
    then: {action: a, channel: email}
"""


def by_hand(directory: Path) -> str:
    """The documented hash: each file's name and bytes, lengths first, in name order."""
    sha = hashlib.sha256()
    for f in sorted(list(directory.glob("*.yaml")) + list(directory.glob("*.yml")), key=lambda f: f.name):
        name, content = f.name.encode(), f.read_bytes()
        sha.update(b"%d:%s%d:" % (len(name), name, len(content)) + content)
    return "sha256:" + sha.hexdigest()[:12]


def test_the_loader_hashes_what_it_reads_as_rules_digest_does(tmp_path):
    bundled = ROOT / "rules"
    assert load_rules(bundled).digest == rules_digest(bundled) == by_hand(bundled)
    one = bundled / "aggregates.yaml"
    assert load_rules(one).digest == rules_digest(one)
    (tmp_path / "r.yaml").write_bytes(b"\xef\xbb\xbf" + RULES.encode())   # the byte order mark too
    assert load_rules(tmp_path).digest == rules_digest(tmp_path) == by_hand(tmp_path)


def test_validate_prints_the_hash_of_the_rules_it_read(tmp_path, monkeypatch, capsys):
    rules_file = tmp_path / "r.yaml"
    rules_file.write_text(RULES)
    read = rules_digest(tmp_path)

    def read_then_change(path):
        partial = read_rules(path)
        rules_file.write_text(RULES + "# changed after the reading\n")
        return partial

    monkeypatch.setattr(check, "read_rules", read_then_change)
    assert main(["validate", str(tmp_path)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"; {read})")
    assert rules_digest(tmp_path) != read


def test_a_reload_logs_the_hash_of_the_rules_it_compiled(tmp_path, monkeypatch, caplog):
    """The files change again between the change seen and the reading: the log's hash is of
    what was read and compiled, not of what the watch saw first."""
    rules_file = tmp_path / "r.yaml"
    rules_file.write_text(RULES)
    live = LiveRules(tmp_path, load_and_compile(tmp_path), interval_s=0)
    rules_file.write_text(RULES.replace("purchases == 1", "purchases == 2"))
    os.utime(rules_file, ns=(1, 1))   # a new fingerprint even within the mtime's grain
    final = RULES.replace("purchases == 1", "purchases == 3")

    def change_then_read(path):
        rules_file.write_text(final)
        return read_rules(path)

    monkeypatch.setattr(check, "read_rules", change_then_read)
    with caplog.at_level(logging.INFO, logger="engine.rules"):
        live.poll()
    assert live.rules.ruleset.rules[0].condition == "purchases == 3"
    (logged,) = [r.getMessage() for r in caplog.records if "rules reloaded" in r.getMessage()]
    assert logged.endswith(f"(version 1, {rules_digest(tmp_path)})")
    assert live.rules.ruleset.digest == rules_digest(tmp_path)
