"""One listing of a rules directory (engine.rules.files): the loader, the content hash and the
reload watch see the same files, so the hash logged and the change watched are of the rules
compiled."""

from __future__ import annotations

from pathlib import Path

from engine.rules.digest import rules_digest
from engine.rules.files import rules_files
from engine.rules.loader import read_rules
from engine.rules.reload import fingerprint

RULE = "rules:\n  - id: {id}\n    type: transactional\n    on: x\n    then: {{action: a, channel: email}}\n"


def rules_dir(path: Path) -> Path:
    path.mkdir()
    (path / "b.yml").write_text(RULE.format(id="b"))
    (path / "a.yaml").write_text(RULE.format(id="a"))
    return path


def test_a_directory_lists_its_yaml_and_yml_files_by_name(tmp_path):
    d = rules_dir(tmp_path / "d")
    (d / "old.yaml").mkdir()                       # a directory, whatever its name
    (d / "page.yhtml").write_text("<html/>")       # not a rules file, though *.y*ml
    (d / "notes.txt").write_text("notes")
    assert [f.name for f in rules_files(d)] == ["a.yaml", "b.yml"]
    assert rules_files(d / "a.yaml") == [d / "a.yaml"]


def test_the_loader_the_hash_and_the_watch_see_the_same_files(tmp_path):
    plain = rules_dir(tmp_path / "plain")
    cluttered = rules_dir(tmp_path / "cluttered")
    (cluttered / "old.yaml").mkdir()
    (cluttered / "page.yhtml").write_text("<html/>")
    listed = [str(cluttered / f.name) for f in rules_files(cluttered)]
    assert list(read_rules(cluttered).ruleset.files) == listed
    assert [name for name, _, _ in fingerprint(cluttered)] == [f.name for f in rules_files(cluttered)]
    assert rules_digest(cluttered) == rules_digest(plain)


def test_what_the_loader_does_not_read_changes_no_fingerprint(tmp_path):
    """A change the loader cannot see would reload the same rules: only its files count."""
    d = rules_dir(tmp_path / "d")
    before = fingerprint(d)
    (d / "page.yhtml").write_text("<html/>")
    (d / "old.yaml").mkdir()
    assert fingerprint(d) == before
    (d / "c.yaml").write_text(RULE.format(id="c"))
    assert fingerprint(d) != before


def test_a_missing_or_unlistable_path_has_no_files(tmp_path):
    assert fingerprint(tmp_path / "nowhere") == ()
    assert rules_digest(tmp_path / "nowhere") == rules_digest(tmp_path)   # nothing hashed, no exception
