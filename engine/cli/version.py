"""`triggers --version`: what a bug report needs to name the build, in one line.

The engine's version is the installed package's (pyproject.toml); the libraries after it are
the ones whose behaviour the engine's guarantees lean on. Read from the installed metadata, so
it costs no import of Bytewax or librdkafka. The rules' own hash is `triggers validate`'s.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["PACKAGE", "PrintVersion", "core_build", "engine_version", "version_line"]

PACKAGE = "trigger-engine"
_LIBRARIES = ("bytewax", "confluent-kafka", "redis", "msgspec")


def engine_version() -> str:
    """The installed package's version; `unknown` when run from a tree that was never installed."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def core_build() -> str:
    """`compiled core` when the evaluation core runs as mypyc's C extensions (setup.py), else
    `pure-Python core`. Found by where the module would load from, without importing it."""
    spec = importlib.util.find_spec("engine.core.evaluate")
    origin = spec.origin if spec is not None else None
    return "compiled core" if origin and origin.endswith(tuple(EXTENSION_SUFFIXES)) else "pure-Python core"


def version_line() -> str:
    """`triggers 0.1.0 (Python 3.11.7, pure-Python core; bytewax 0.21.1, confluent-kafka 2.6.1, ...)`."""
    libs = []
    for name in _LIBRARIES:
        try:
            libs.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            libs.append(f"{name} missing")
    return f"triggers {engine_version()} (Python {platform.python_version()}, {core_build()}; {', '.join(libs)})"


class PrintVersion(argparse.Action):
    """`--version`: the line is built only when asked (reading package metadata costs milliseconds
    every other command need not pay)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(version_line())
        parser.exit()
