"""Hot reload of a live run's rules: watch the rules directory, recompile on change, swap
atomically; a change that does not validate (or fails to load in any way) is rejected and the
running rules stay.

What a reload means for customers already mid-way (README "Hot reload"):
- aggregates are kept by name, so existing values carry over; a new aggregate starts empty
  (it is not back-filled from past events); a removed one is no longer updated;
- rules are matched by id: a pending deadline keeps its due time and fires with the new
  definition (action, payload, policy); the deadlines of a removed rule lapse; a series
  continues at its next step number in the new list of steps, and ends if there is none;
- a journey keeps each customer's position by step id: a customer whose step is gone leaves it
  (`step_removed`) when the walk next moves; a kept step runs with its new definition;
- a threshold already true stays true (no re-fire); cooldowns and caps keep their history.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from engine.rules.check import check_rules
from engine.rules.compiler import CompiledRules
from engine.rules.errors import RulesInvalid, exception_text
from engine.rules.files import rules_files

log = logging.getLogger("engine.rules")

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(path: str | Path) -> Fingerprint:
    """Names, sizes and modification times of the rules files, those the loader reads: cheap to
    take every half second. An unreadable directory has no files (and the reload it causes is
    rejected, saying why)."""
    try:
        files = rules_files(Path(path))
    except OSError:
        files = []
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((f.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


class LiveRules:
    """The rules a live run evaluates now; `version` changes when a reload is applied.

    `valid` says whether the files on disk are the rules applied: False from a rejected
    change until a change that validates (an operator's fix, or the old files put back).

    `poll()` is called by the workers (cheap: it only looks at the files every `interval_s`);
    the first caller after a change recompiles, under a lock, and publishes the result.
    """

    def __init__(self, path: str | Path, rules: CompiledRules, interval_s: float = 0.5, watch: bool = True) -> None:
        self.path = str(path)
        self.rules = rules
        self.version = 0
        self.interval_s = interval_s
        self.watch = watch
        self.reloads = 0
        self.rejected = 0
        self.valid = True
        self._fingerprint = fingerprint(path)
        self._next_check = time.monotonic() + interval_s
        self._lock = threading.Lock()

    def poll(self) -> None:
        if not self.watch or time.monotonic() < self._next_check:
            return
        if not self._lock.acquire(blocking=False):
            return   # another worker is checking
        try:
            self._next_check = time.monotonic() + self.interval_s
            current = fingerprint(self.path)
            if current == self._fingerprint:
                return
            self._fingerprint = current
            try:
                rules = check_rules(self.path)   # every error in the log, structural and expression
            except Exception as e:
                # check_rules raises RulesInvalid whatever the files hold; anything else would
                # be a bug, and is rejected all the same: nothing in a rules file may stop the dataflow
                errors = ([str(err) for err in e.errors] if isinstance(e, RulesInvalid)
                          else [f"{self.path}: cannot load the rules ({exception_text(e)})"])
                self.rejected += 1
                self.valid = False
                log.error("rules reload rejected, the running rules stay (%d error(s)):\n%s", len(errors),
                          "\n".join(errors), exc_info=not isinstance(e, RulesInvalid))
                return
            self.rules = rules
            self.valid = True
            self.version += 1
            self.reloads += 1
            log.info("rules reloaded from %s: %d rules, %d aggregates (version %d, %s)", self.path,
                     len(rules.rules), len(rules.ruleset.aggregates), self.version, rules.ruleset.digest)
        finally:
            self._lock.release()
