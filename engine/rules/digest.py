"""The content hash of a rules directory: which rules a run evaluated, for bug reports.

`triggers validate` prints it and `triggers run` logs it at start-up (and on each reload), so a
report can say exactly which rules were in force. It covers what the loader reads (the
*.yaml/*.yml files of the directory, not recursively, or the one file given): their names
relative to the directory and their bytes, in name order. So it does not depend on where the
directory is, on modification times or on the order the OS lists files in; a renamed file, an
added comment or a changed byte changes it.

The loader hashes the bytes it parses, as it reads them (`RuleSet.digest`): the hash shown with
compiled rules is of those rules, even when a file changes just before or after. `rules_digest`
hashes the files as they are now, the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.rules.files import rules_files

__all__ = ["DIGEST_CHARS", "ContentHash", "rules_digest"]

DIGEST_CHARS = 12   # hex digits shown: 48 bits, plenty to tell a deployment's revisions apart


class ContentHash:
    """The hash of rules files added one after another, in the order they are read."""

    __slots__ = ("_sha",)

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, name: str, content: bytes) -> None:
        """One file: its name relative to the directory, and its bytes."""
        encoded = name.encode("utf-8", "surrogateescape")
        # lengths first: no two different sets of files can give the same byte stream
        self._sha.update(b"%d:%s%d:" % (len(encoded), encoded, len(content)))
        self._sha.update(content)

    def shown(self) -> str:
        """`sha256:` and the first `DIGEST_CHARS` hex digits."""
        return f"sha256:{self._sha.hexdigest()[:DIGEST_CHARS]}"


def rules_digest(path: str | Path) -> str:
    """`sha256:` and the first `DIGEST_CHARS` hex digits of the rules' content hash.

    An unreadable file or directory hashes as what could be read (the loader reports the error);
    the hash never raises on a path that exists.
    """
    content = ContentHash()
    try:
        files = rules_files(Path(path))
    except OSError:
        files = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError:
            data = b""
        content.add(f.name, data)
    return content.shown()
