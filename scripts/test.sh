#!/usr/bin/env bash
# The one command that takes a bare machine to a full test run:
#   venv -> editable install with dev extras -> Redis + Kafka installed and started -> pytest.
# Arguments go to pytest: scripts/test.sh tests/unit -k memory
# Services are left running afterwards (other runs and developers reuse them);
# `scripts/services.sh stop` stops them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv dev

step "installing the services (redis-server, Kafka jars), if missing"
bash scripts/services.sh install all

step "installing chromium (the HTML report's browser test), if missing"
bash scripts/chromium.sh

step "unpacking promtool (the alert rules' checks), if missing"
bash scripts/promtool.sh >/dev/null

step "starting the services (or reusing running ones)"
bash scripts/services.sh start all

step "ruff (lint, import order) and mypy (engine/, connectors/)"
.venv/bin/ruff check --quiet engine connectors bench tests
.venv/bin/mypy --no-error-summary

step "running pytest $*"
exec .venv/bin/python -m pytest "$@"
