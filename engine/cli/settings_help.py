"""The settings reference of `triggers run --help`, generated from the settings struct.

Every key of `engine.operators.settings.Settings` (and of the sink configs it holds) is listed
as TOML with its default, its type, its `TRIGGERS_*` environment variable and the one-line
`Doc` of its field, in declaration order: a field added to the struct shows up here without
anyone writing prose, so the help cannot drift from what the loader accepts.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any, cast

import msgspec
import msgspec.inspect as mi

__all__ = ["Key", "settings_help", "settings_keys"]

WIDTH = 112        # characters of a help line
KEY_COLUMN = 38    # where the comments start


class Key(msgspec.Struct, frozen=True):
    """One settings key: where it is, what it takes, what it does."""

    path: tuple[str, ...]        # ("kafka", "brokers")
    type: str                    # "list[str]"
    default: str                 # as TOML, "(unset)" or "(required)"
    env: str                     # TRIGGERS_KAFKA__BROKERS
    doc: str                     # the field's Doc, "" when it has none


class _Section(msgspec.Struct):
    path: tuple[str, ...]
    doc: str
    optional: bool               # a struct that is None unless configured (a sink)
    keys: list[Key]


def settings_help(cls: type | None = None, env_prefix: str | None = None) -> str:
    """The reference, as the indented lines of a help text."""
    cls, env_prefix = _defaults(cls, env_prefix)
    lines = [
        f"Settings come from --config FILE (TOML), then {env_prefix}* environment variables, then flags. A",
        f"variable is {env_prefix}<SECTION>__<KEY> (double underscore between levels; its value is parsed as",
        "TOML where it parses, else taken as a string), e.g. TRIGGERS_KAFKA__BROKERS='[\"10.0.0.5:9092\"]'.",
    ]
    for section in _sections(_struct_info(cls), (), "", False, env_prefix):
        lines.append("")
        if section.path:
            title = "optional: " + section.doc if section.optional else section.doc
            lines += _row(f"[{'.'.join(section.path)}]", title)
        lines += [row for key in section.keys for row in _row(f"{key.path[-1]} = {key.default}", _comment(key))]
    return "\n".join(lines) + "\n"


def settings_keys(cls: type | None = None, env_prefix: str | None = None) -> list[Key]:
    """Every key of the settings, sections first to last (what the help lists)."""
    cls, env_prefix = _defaults(cls, env_prefix)
    return [key for section in _sections(_struct_info(cls), (), "", False, env_prefix) for key in section.keys]


def _defaults(cls: type | None, env_prefix: str | None) -> tuple[type, str]:
    from engine.operators.settings import ENV_PREFIX, Settings  # imports the connectors' configs

    return (cls if cls is not None else Settings), (env_prefix if env_prefix is not None else ENV_PREFIX)


def _struct_info(cls: type) -> mi.StructType:
    """`msgspec.inspect.type_info` of a settings struct class, which is a `StructType`."""
    return cast(mi.StructType, mi.type_info(cls))


def _sections(struct: mi.StructType, path: tuple[str, ...], doc: str, optional: bool,
              env_prefix: str) -> list[_Section]:
    """The struct's scalar keys as one section, then a section per struct field (TOML order)."""
    here = _Section(path, doc, optional, [])
    nested: list[_Section] = []
    for field in struct.fields:
        inner, field_doc = _unwrap(field.type)
        sub, sub_optional = _struct_of(inner)
        if sub is not None:
            nested += _sections(sub, path + (field.name,), field_doc, sub_optional, env_prefix)
            continue
        here.keys.append(Key(
            path=path + (field.name,), type=_type(inner), default=_default(field),
            env=env_prefix + "__".join(path + (field.name,)).upper(), doc=field_doc,
        ))
    return ([here] if here.keys or here.doc or not nested else []) + nested


def _unwrap(t: Any) -> tuple[Any, str]:
    """The type without its metadata, and the field's Doc."""
    doc = ""
    while isinstance(t, mi.Metadata):
        doc = (t.extra_json_schema or {}).get("description", doc)
        t = t.type
    return t, doc


def _struct_of(t: Any) -> tuple[mi.StructType | None, bool]:
    """The struct a field holds (and whether it is optional), or None for a plain value."""
    if isinstance(t, mi.StructType):
        return t, False
    if isinstance(t, mi.UnionType):
        structs = [u for u in (_unwrap(u)[0] for u in t.types) if isinstance(u, mi.StructType)]
        if len(structs) == 1 and len(t.types) == 2 and t.includes_none:
            return structs[0], True
    return None, False


def _type(t: Any) -> str:
    t, _ = _unwrap(t)
    simple: dict[type, str] = {mi.StrType: "str", mi.IntType: "int", mi.FloatType: "float", mi.BoolType: "bool",
              mi.NoneType: "None"}
    if type(t) in simple:
        return simple[type(t)]
    if isinstance(t, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        return f"list[{_type(t.item_type)}]"
    if isinstance(t, mi.DictType):
        return f"table of {_type(t.value_type)}"
    if isinstance(t, mi.LiteralType):
        return " | ".join(json.dumps(v) for v in t.values)
    if isinstance(t, mi.EnumType):
        return " | ".join(json.dumps(m.value) for m in t.cls)
    if isinstance(t, mi.UnionType):
        return " | ".join(_type(u) for u in t.types)
    return type(t).__name__.removesuffix("Type").lower()


def _default(field: mi.Field) -> str:
    if field.required:
        return "(required)"
    value = field.default_factory() if field.default is mi.NODEFAULT else field.default
    return _toml(value)


def _toml(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(msgspec.to_builtins(value))


def _comment(key: Key) -> str:
    return f"{key.type}, {key.env}" + (f": {key.doc}" if key.doc else "")


def _row(left: str, comment: str) -> list[str]:
    """`  left   # comment`, the comment wrapped under itself."""
    left = f"  {left}"
    if not comment:
        return [left]
    pad = max(KEY_COLUMN, len(left) + 2)
    body = textwrap.wrap(comment, width=max(WIDTH - pad - 2, 40), break_on_hyphens=False)
    rows = [f"{left:<{pad}}# {body[0]}"]
    rows += [f"{'':<{pad}}# {line}" for line in body[1:]]
    return rows
