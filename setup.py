"""The optional compiled core (issue 15): with `TRIGGERS_COMPILE=1`, mypyc compiles the
evaluation core's modules to C extensions; without it (the default), or when mypyc or a C
compiler is missing, the same modules install as the pure Python they are. One source, so
there is no second implementation to keep in step: a compiled module is the .py file beside it,
and `triggers --version` says which one runs.

    TRIGGERS_COMPILE=1 pip install --no-build-isolation .     # needs mypy (the dev extra) and gcc
    bash scripts/compile.sh DIR                               # a compiled copy of this tree in DIR

Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import sys

from setuptools import setup

# The hot path of every event, backtest and live alike. Modules that define msgspec structs
# are left out: mypyc rewrites class annotations, which msgspec reads to build its decoders.
COMPILED_MODULES = [
    "engine/core/calendar.py",
    "engine/core/evaluate.py",
    "engine/core/isolation.py",
    "engine/core/schedule.py",
    "engine/core/session.py",
    "engine/core/times.py",
    "engine/operators/partition.py",
    "engine/policy/attribution.py",
    "engine/policy/contact.py",
    "engine/policy/timing.py",
    "engine/rules/aggregates.py",
    "engine/rules/journey.py",
    "engine/rules/kinds.py",
    "engine/rules/plan.py",
    "engine/state/engagement.py",
    "engine/state/redis.py",
]


def _ext_modules() -> list:
    if os.environ.get("TRIGGERS_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("setup.py: TRIGGERS_COMPILE=1 but mypyc is not installed: installing pure Python", file=sys.stderr)
        return []
    if not any(shutil.which(cc) for cc in (os.environ.get("CC", "cc"), "gcc", "clang")):
        print("setup.py: TRIGGERS_COMPILE=1 but no C compiler found: installing pure Python", file=sys.stderr)
        return []
    return mypycify(COMPILED_MODULES, opt_level="3")


if __name__ == "__main__":   # as pip, build and `python setup.py` run it; tests import the list above
    setup(ext_modules=_ext_modules())
