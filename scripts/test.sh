#!/usr/bin/env bash
# The one command that takes a bare machine to a full test run:
#   venv -> editable install with dev extras -> Redis + Kafka installed and started -> pytest.
# Arguments go to pytest: scripts/test.sh tests/unit -k memory
# Services are left running afterwards (other runs and developers reuse them);
# `scripts/services.sh stop` stops them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }

# pyproject says requires-python >=3.11,<3.13: take the first interpreter in that range.
find_python() {
    local candidate
    for candidate in python3.11 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [[ ! -x .venv/bin/python ]]; then
    python="$(find_python)" || {
        echo "scripts/test.sh: no Python 3.11 or 3.12 found (python3.11, python3.12, python3); install one" >&2
        exit 1
    }
    step "creating .venv with $python ($("$python" --version 2>&1))"
    "$python" -m venv .venv
fi

step "installing the engine and its dev dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

step "installing the services (redis-server, Kafka jars), if missing"
bash scripts/services.sh install all

step "starting the services (or reusing running ones)"
bash scripts/services.sh start all

step "running pytest $*"
exec .venv/bin/python -m pytest "$@"
