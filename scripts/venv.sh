# Sourced by scripts/demo.sh and scripts/test.sh: makes sure .venv exists with the engine
# installed (editable, at the versions of constraints.txt: what the image ships), using the first Python in the range pyproject accepts (3.11, 3.12).
# usage: ensure_venv [EXTRAS]     e.g. ensure_venv dev

step() { printf '==> %s\n' "$*" >&2; }

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

ensure_venv() {
    local extras="${1:-}" python
    if [[ ! -x .venv/bin/python ]]; then
        python="$(find_python)" || {
            echo "no Python 3.11 or 3.12 found (python3.11, python3.12, python3); install one" >&2
            exit 1
        }
        step "creating .venv with $python ($("$python" --version 2>&1))"
        "$python" -m venv .venv
    fi
    step "installing the engine${extras:+ with [$extras]} into .venv"
    # pip's output goes to a log, shown only when the install fails (setuptools' editable-install
    # notice is noise on every run).
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras:+[$extras]}" \
            >.venv/pip-install.log 2>&1; then
        cat .venv/pip-install.log >&2
        echo "pip install failed (log: .venv/pip-install.log)" >&2
        exit 1
    fi
}
