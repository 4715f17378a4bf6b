"""examples/triggers.toml (issue 16) is what the README tells a new user to start from: it must load
as it is, every key in it must be a real setting, and each must say why it is there."""

from __future__ import annotations

import tomllib
from pathlib import Path

from engine.cli.settings_help import settings_keys
from engine.operators.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "triggers.toml"


def _leaves(table: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The file's keys as setting paths; a table that is a setting's value (headers, extra) is one key."""
    known = {k.path for k in settings_keys()}
    out = []
    for name, value in table.items():
        here = path + (name,)
        if isinstance(value, dict) and here not in known:
            out += _leaves(value, here)
        else:
            out.append(here)
    return out


def test_the_example_loads_as_it_is():
    settings = load_settings(EXAMPLE, env={})
    assert isinstance(settings, Settings)
    s = settings.sinks
    assert s.webhook is not None and s.webhook.secret and s.webhook.dead_letter_path
    assert s.file is not None and set(s.file.statuses) == {"sent", "held_out", "suppressed"}
    assert settings.dead_letters.file and settings.kafka.extra["security.protocol"]


def test_every_key_of_the_example_is_a_real_setting():
    known = {k.path for k in settings_keys()}
    leaves = _leaves(tomllib.loads(EXAMPLE.read_text()))
    assert len(leaves) >= 25
    assert [".".join(p) for p in leaves if p not in known] == []
    for section in ("sinks.webhook", "sinks.file", "dead_letters", "kafka", "redis"):
        assert any(".".join(p).startswith(section + ".") for p in leaves), section
    webhook = {p[-1] for p in leaves if p[:2] == ("sinks", "webhook")}
    assert {"timeout_s", "concurrency", "headers", "backoff_base_s", "backoff_max_s", "secret"} <= webhook


def test_every_setting_in_the_example_is_commented():
    """A key line carries a comment, or a comment block stands right above it."""
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith(("#", "[")):
            above = lines[i - 1] if i else ""
            assert "#" in line or above.startswith("#") or (
                "#" in above and "=" in above), f"examples/triggers.toml:{i + 1}: {line!r} has no comment"
