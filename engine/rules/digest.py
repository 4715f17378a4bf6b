"""The content hash of a rules directory: which rules a run evaluated, for bug reports.

`triggers validate` prints it and `triggers run` logs it at start-up (and on each reload), so a
report can say exactly which rules were in force. It covers what the loader reads (the
*.yaml/*.yml files of the directory, not recursively, or the one file given): their names
relative to the directory and their bytes, in name order. So it does not depend on where the
directory is, on modification times or on the order the OS lists files in; a renamed file, an
added comment or a changed byte changes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.rules.files import rules_files

__all__ = ["DIGEST_CHARS", "rules_digest"]

DIGEST_CHARS = 12   # hex digits shown: 48 bits, plenty to tell a deployment's revisions apart


def rules_digest(path: str | Path) -> str:
    """`sha256:` and the first `DIGEST_CHARS` hex digits of the rules' content hash.

    An unreadable file or directory hashes as what could be read (the loader reports the error);
    the hash never raises on a path that exists.
    """
    p = Path(path)
    h = hashlib.sha256()
    try:
        files = rules_files(p)
    except OSError:
        files = []
    for f in files:
        try:
            content = f.read_bytes()
        except OSError:
            content = b""
        name = f.name.encode("utf-8", "surrogateescape")
        # lengths first: no two different sets of files can give the same byte stream
        h.update(b"%d:%s%d:" % (len(name), name, len(content)))
        h.update(content)
    return f"sha256:{h.hexdigest()[:DIGEST_CHARS]}"
