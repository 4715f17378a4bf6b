"""What the compiled core (setup.py's COMPILED_MODULES) may hold: mypyc erases class
annotations to their runtime classes (`dict[str, int]` becomes `dict`, `str | None` becomes
`type`), which msgspec decodes by. A struct that is ever decoded must live outside those modules
(engine.policy.outcomes); the structs they do define are only built and encoded in process."""

from __future__ import annotations

import importlib
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]
NEVER_DECODED = {
    "engine.policy.contact.Candidate": "the policy's input, built by the evaluator, never serialized",
    "engine.rules.kinds.RulePolicy": "built by the compiler from a rule, never serialized",
}


def test_every_compiled_module_exists(compiled_modules: list[str]) -> None:
    assert len(compiled_modules) >= 10
    for name in compiled_modules:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name


def test_the_compiled_modules_define_no_struct_that_is_decoded(compiled_modules: list[str]) -> None:
    found = set()
    for name in compiled_modules:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, msgspec.Struct) and value.__module__ == name:
                found.add(f"{name}.{attr}")
    assert found <= set(NEVER_DECODED), f"move these structs out of the compiled modules: {found - set(NEVER_DECODED)}"
