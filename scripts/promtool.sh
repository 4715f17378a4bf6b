#!/usr/bin/env bash
# Prometheus' promtool, for the alert rules' checks (tests/unit/test_deploy_files.py runs
# `promtool check rules`, `check config` and `test rules` on deploy/prometheus/).
# Uses a promtool on the PATH; otherwise unpacks the one in Debian's `prometheus` package into
# $TE_SERVICES_DIR/promtool (<repo>/.services/promtool) without installing the package (whose
# server, web assets and service are not needed). Prints the binary's path on stdout (the only
# stdout line). A failure to fetch it is a warning, not an error: the test then skips.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="${TE_SERVICES_DIR:-$REPO_ROOT/.services}"
TARGET="$SERVICES_DIR/promtool"
BINARY="$TARGET/usr/bin/promtool"

log() { printf 'promtool: %s\n' "$*" >&2; }

if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
if [[ -x "$BINARY" ]]; then
    printf '%s\n' "$BINARY"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "warning: no promtool and no apt-get: the promtool checks will be skipped"
    exit 0
fi
mkdir -p "$SERVICES_DIR"
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
chmod 777 "$download"   # apt-get download runs as _apt where it can
log "unpacking promtool from Debian's prometheus package into $TARGET"
if ! (cd "$download" && apt-get download -qq prometheus) >"$download/apt.log" 2>&1; then
    if ! { apt-get update -qq && (cd "$download" && apt-get download -qq prometheus); } >"$download/apt.log" 2>&1; then
        tail -n 20 "$download/apt.log" >&2
        log "warning: could not download the prometheus package: the promtool checks will be skipped"
        exit 0
    fi
fi
rm -rf "$TARGET.tmp"
if ! { dpkg-deb -x "$download"/prometheus_*.deb "$TARGET.tmp" && mkdir -p "$TARGET/usr/bin" &&
        mv "$TARGET.tmp/usr/bin/promtool" "$BINARY"; }; then
    rm -rf "$TARGET.tmp"
    log "warning: the prometheus package holds no usr/bin/promtool: the promtool checks will be skipped"
    exit 0
fi
rm -rf "$TARGET.tmp"
log "$("$BINARY" --version 2>&1 | head -n 1)"
printf '%s\n' "$BINARY"
