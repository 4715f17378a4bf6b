"""`triggers run --help` lists the settings from the settings struct itself, so it cannot drift."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import msgspec.inspect as mi
import pytest

from engine.cli import main
from engine.cli.settings_help import settings_help, settings_keys
from engine.operators import settings as settings_module
from engine.operators.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def leaf_fields(struct: type, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], mi.Field]]:
    """Every settings key, walked independently of the help's own walk."""
    out = []
    for field in mi.type_info(struct).fields:
        t = field.type
        while isinstance(t, mi.Metadata):
            t = t.type
        inner = [u for u in (t.types if isinstance(t, mi.UnionType) else (t,))
                 if isinstance(u, mi.StructType) or (isinstance(u, mi.Metadata) and isinstance(u.type, mi.StructType))]
        if inner:
            sub = inner[0].type if isinstance(inner[0], mi.Metadata) else inner[0]
            out += leaf_fields(sub.cls, path + (field.name,))
        else:
            out.append((path + (field.name,), field))
    return out


@pytest.fixture(scope="module")
def run_help() -> str:
    res = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_every_settings_field_is_in_run_help(run_help):
    fields = leaf_fields(Settings)
    assert len(fields) > 50
    sections = _sections(run_help)
    for path, _ in fields:
        section, key = ".".join(path[:-1]), path[-1]
        assert key in sections.get(section, {}), f"{'.'.join(path)} missing from `triggers run --help`"
        env = ENV_PREFIX + "__".join(path).upper()
        assert env in sections[section][key], f"{'.'.join(path)}: {env} missing"


def test_the_help_lists_exactly_the_struct(run_help):
    paths = [k.path for k in settings_keys()]
    assert sorted(paths) == sorted(p for p, _ in leaf_fields(Settings)) and len(set(paths)) == len(paths)
    assert settings_help() in run_help


def test_every_field_of_the_settings_module_has_a_doc():
    """The structs of engine.operators.settings document each field with `Doc` (the connectors'
    configs are described by their own modules)."""
    own = {c for c in vars(settings_module).values()
           if isinstance(c, type) and issubclass(c, msgspec.Struct) and c.__module__ == settings_module.__name__}
    assert {Settings, settings_module.KafkaSource, settings_module.RedisSettings} <= own
    for key in settings_keys():
        owner = _owner(key.path)
        if owner in own:
            assert key.doc, f"{'.'.join(key.path)} has no Doc"


def test_every_key_of_the_sinks_has_a_doc_too(run_help):
    """Issue 16: the webhook's timeout_s, concurrency, headers and backoff_* were listed without a
    word on what they do; every sink's key now says it, in the help."""
    undocumented = [".".join(k.path) for k in settings_keys() if not k.doc]
    assert undocumented == []
    sections = _sections(run_help)
    for key in ("timeout_s", "concurrency", "headers", "backoff_base_s", "backoff_max_s", "body", "batch_body"):
        env = f"TRIGGERS_SINKS__WEBHOOK__{key.upper()}"
        assert f"{env}: " in sections["sinks.webhook"][key], key          # the env var, then what it does
    assert "placeholders" in sections["sinks.webhook"]["body"] and "{items}" in sections["sinks.webhook"]["batch_body"]
    assert "{customer_id}" in sections["sinks.webhook"]["url"]


def test_help_defaults_are_the_loaders_defaults(run_help):
    """The TOML the help shows, loaded back, is the default settings (sections without
    required keys, i.e. everything but the optional sinks)."""
    text = []
    for section, keys in _sections(run_help).items():
        values = {k: v for k, v in keys.items()}
        if any(v.startswith("(required)") for v in values.values()):
            continue
        text.append(f"[{section}]" if section else "")
        text += [f"{k} = {v.split('  #')[0].strip()}" for k, v in values.items()
                 if not v.startswith("(unset)")]
    data = tomllib.loads("\n".join(text))
    assert msgspec.convert(data, Settings) == load_settings(env={})


def test_building_the_parser_does_not_load_the_settings():
    code = ("import sys; from engine.cli import main\n"
            "try: main(['validate', '--help'])\n"
            "except SystemExit: pass\n"
            "print('engine.operators.settings' in sys.modules, 'connectors' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.stdout.split()[-2:] == ["False", "False"], res.stdout + res.stderr


def test_run_help_through_main(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--accept-state-loss" in out and "[sinks.webhook]" in out and "TRIGGERS_REDIS__URL" in out


def _sections(text: str) -> dict[str, dict[str, str]]:
    """{section: {key: 'value  # comment'}} from the help's TOML lines."""
    sections: dict[str, dict[str, str]] = {}
    current, key = "", None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("  [") and "]" in stripped:
            current, key = stripped[1:stripped.index("]")], None
            sections.setdefault(current, {})
        elif line.startswith("  ") and not line.startswith("   ") and " = " in stripped:
            key, rest = stripped.split(" = ", 1)
            sections.setdefault(current, {})[key] = rest
        elif stripped.startswith("# ") and key is not None:   # a wrapped comment
            sections[current][key] += " " + stripped[2:]
        else:
            key = None
    return sections


def _owner(path: tuple[str, ...]) -> type:
    cls: type = Settings
    for name in path[:-1]:
        field = next(f for f in mi.type_info(cls).fields if f.name == name)
        t = field.type
        while isinstance(t, mi.Metadata):
            t = t.type
        if isinstance(t, mi.UnionType):
            t = next(u for u in t.types if isinstance(u, (mi.StructType, mi.Metadata)))
            while isinstance(t, mi.Metadata):
                t = t.type
        cls = t.cls
    return cls
