"""Which files a rules directory is: one listing for the loader, the content hash and the
reload watch, so the hash and the watch describe the files the loader compiles."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RULES_SUFFIXES", "rules_files"]

RULES_SUFFIXES = (".yaml", ".yml")


def rules_files(path: Path) -> list[Path]:
    """The rules files of `path` in the order they are read: a directory's *.yaml/*.yml files by
    name, not recursively, or the one file given. Raises OSError when `path` is neither a file
    nor a directory that can be listed."""
    if path.is_file():
        return [path]
    return sorted((f for f in path.iterdir() if f.suffix in RULES_SUFFIXES and f.is_file()), key=lambda f: f.name)
