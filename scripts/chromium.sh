#!/usr/bin/env bash
# Headless Chromium for the HTML report's browser test (tests/integration/test_report_browser.py):
# installs Debian's `chromium` package when no chromium binary is on the machine; a no-op otherwise.
# Prints the binary's path on stdout (the only stdout line), so callers can use it:
#   CHROMIUM="$(bash scripts/chromium.sh)"
# Settings (environment): CHROMIUM (a binary to use instead of searching), TE_SERVICES_DIR
# (<repo>/.services: where the apt log goes).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="${TE_SERVICES_DIR:-$REPO_ROOT/.services}"

log() { printf 'chromium: %s\n' "$*" >&2; }
die() { printf 'chromium: ERROR: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/as_root.sh
source "$(dirname "${BASH_SOURCE[0]}")/as_root.sh"

find_chromium() {
    local candidate
    if [[ -n "${CHROMIUM:-}" ]]; then
        [[ -x "$CHROMIUM" ]] || die "CHROMIUM=$CHROMIUM is not an executable file"
        printf '%s\n' "$CHROMIUM"
        return 0
    fi
    for candidate in /usr/bin/chromium chromium chromium-browser; do
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if path="$(find_chromium)"; then
    log "$("$path" --version 2>/dev/null || echo "$path") installed"
    printf '%s\n' "$path"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "chromium is not installed and there is no apt-get; install Chromium by hand (or set CHROMIUM=/path/to/chrome)"
mkdir -p "$SERVICES_DIR"
# Two sessions installing at once would fight over dpkg's lock: serialize on a file of our own.
exec 9>"$SERVICES_DIR/.chromium.lock"
flock -w 900 9 || die "timed out waiting for $SERVICES_DIR/.chromium.lock (another install still running?)"
if path="$(find_chromium)"; then   # installed by the session we waited for
    printf '%s\n' "$path"
    exit 0
fi
apt_log="$SERVICES_DIR/chromium-apt.log"
log "installing the Debian package chromium (log: $apt_log)"
rc=0
{
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
} >"$apt_log" 2>&1 || rc=$?
if ((rc != 0)); then
    tail -n 40 "$apt_log" >&2
    die "apt-get install chromium failed (exit $rc)"
fi
path="$(find_chromium)" || die "apt-get installed chromium but no chromium binary is on the PATH"
log "installed $("$path" --version 2>/dev/null || echo "$path")"
printf '%s\n' "$path"
