#!/usr/bin/env bash
# A copy of this tree with the evaluation core compiled by mypyc (setup.py's COMPILED_MODULES):
#   scripts/compile.sh DIR        # DIR/tree: the files git tracks (and new ones not ignored), compiled in place
# Run it with PYTHONPATH=DIR/tree; `triggers --version` then says "compiled core". The copy
# leaves this tree alone: an in-place build here would shadow every later edit of those modules.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
dest="${1:?usage: scripts/compile.sh DIR}"
mkdir -p "$dest/tree"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$dest/tree"
cd "$dest/tree"
# build_ext only: the package itself is the tree (on PYTHONPATH), not an install
TRIGGERS_COMPILE=1 "${PYTHON:-$root/.venv/bin/python}" setup.py -q build_ext --inplace -j 2 >"$dest/build.log" 2>&1 \
  || { tail -30 "$dest/build.log" >&2; echo "compile.sh: the build failed (log: $dest/build.log)" >&2; exit 1; }
n=$(find engine -name '*.so' | wc -l)
echo "compile.sh: $n compiled modules in $dest/tree"
