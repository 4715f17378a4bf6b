#!/usr/bin/env bash
# The quick start's first command: the main job on its embedded default, no Kafka or Redis.
# Validates the bundled rules and backtests them over the bundled sample events with the
# in-memory state store; triggers go to out/triggers.jsonl, the per-rule summary to the screen.
# Arguments replace the defaults: scripts/demo.sh --events my-events.jsonl
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv

mkdir -p out
step "triggers validate rules/"
.venv/bin/triggers validate rules/
if [[ $# -eq 0 ]]; then
    set -- --events examples/sample-events.jsonl
fi
step "triggers backtest --rules rules/ $* --out out/triggers.jsonl --summary out/summary.json"
.venv/bin/triggers backtest --rules rules/ "$@" --out out/triggers.jsonl --summary out/summary.json
step "triggers report out/summary.json   (contacted vs control group)"
.venv/bin/triggers report out/summary.json
step "first triggers (all of them in out/triggers.jsonl):"
head -n 3 out/triggers.jsonl
