#!/usr/bin/env bash
# Builds the project's image from the Dockerfile as it is and checks that the engine runs in it
# against the local Kafka and Redis: /healthz answers, events produced into a new topic (with
# `triggers produce` from the image) come out as triggers, SIGTERM stops it with exit code 0.
#
# No container registry is reachable here, so the Dockerfile's base (FROM python:…-slim-bookworm)
# is a STAND-IN made locally: Debian bookworm (debootstrap --variant=minbase) with Debian's python3
# (3.11.2, not the official image's 3.11.x build) and its headers (python3-dev: the official image
# has Python's, and the build stage compiles the core against them) in a venv at /usr/local, so
# that `python`, `pip` and installed scripts are where the official image has them. It is
# imported under the name the FROM line expects and cached in podman's image store (labelled;
# made once, reused after).
# Runtime recipe (shared/docs/containers.md): podman with runc, explicit ulimits, host network.
#
# usage: scripts/container_check.sh        exit 0: verified; 1: a step failed (the reason is
#                                          printed); 77: containers cannot run on this machine
# settings (environment): TE_KAFKA (127.0.0.1:9092), TE_REDIS_URL (redis://127.0.0.1:6379/8),
#   TE_METRICS_PORT (19464), TE_IMAGE (localhost/trigger-engine:check), TE_REBUILD_BASE=1 (make
#   the stand-in anew), TE_DEBIAN_MIRROR (debootstrap's mirror; unset: its default),
#   TE_BUILD_CA_BUNDLE (the trust store pip uses during the build; default the host's),
#   TE_KEEP_OUT=1 (keep the engine's triggers file and the backtest's for a look).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KAFKA="${TE_KAFKA:-127.0.0.1:9092}"
REDIS_URL="${TE_REDIS_URL:-redis://127.0.0.1:6379/8}"
PORT="${TE_METRICS_PORT:-19464}"
IMAGE="${TE_IMAGE:-localhost/trigger-engine:check}"
CA_BUNDLE="${TE_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
BASE="$(awk 'toupper($1) == "FROM" {print $2; exit}' Dockerfile)"
STANDIN_LABEL="org.trigger-engine.stand-in"
RUN_ID="techeck-$(date +%s)-$$"
TOPIC="$RUN_ID"
PREFIX="$RUN_ID"
CONTAINER="$RUN_ID-engine"
T0=$SECONDS

say() { printf '==> [%4ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
fail() { printf 'container check FAILED: %s\n' "$*" >&2; exit 1; }
skip() { printf 'container check SKIPPED (exit 77): %s\n' "$*" >&2; exit 77; }
heavy() { nice -n 10 "$@"; }    # the machine is shared: builds and installs yield to others

# -- tools ------------------------------------------------------------------------------------
missing=()
command -v podman >/dev/null || missing+=(podman)
[[ -x /usr/sbin/runc ]] || command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null ||
        skip "${missing[*]} missing, and apt-get as root is not available to install them"
    say "installing ${missing[*]} (apt-get)"
    { heavy apt-get update -qq && DEBIAN_FRONTEND=noninteractive heavy apt-get install -y -qq "${missing[@]}"; } \
        >/tmp/container_check-apt.log 2>&1 ||
        skip "apt-get install ${missing[*]} failed (log: /tmp/container_check-apt.log): $(tail -n 2 /tmp/container_check-apt.log)"
fi
RUNC="$(command -v runc || echo /usr/sbin/runc)"
podman --version >&2
podman --runtime "$RUNC" info >/dev/null 2>/tmp/container_check-info.log ||
    skip "podman cannot start here: $(tail -n 3 /tmp/container_check-info.log)"

# ulimits no higher than the machine's own (runc cannot raise them; crun fails on setrlimit here)
lim() { local have; have="$1"; [[ $have == unlimited || $have -gt 4096 ]] && echo 4096 || echo "$have"; }
NOFILE="$(lim "$(ulimit -n)")"
NPROC="$(lim "$(ulimit -u)")"
PODMAN=(podman --runtime "$RUNC")
RUNOPTS=(--network host --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC")

# -- the stand-in base image ------------------------------------------------------------------
standin_of() { podman image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$1" 2>/dev/null; }
# Made anew when asked, or when it is a stand-in from before the build stage compiled the core
# (without Python's headers).
kind="$(standin_of "$BASE" || true)"
if podman image exists "$BASE" &&
    [[ ${TE_REBUILD_BASE:-} == 1 || (-n $kind && $kind != "<no value>" && $kind != *-headers) ]]; then
    podman rmi -f "$BASE" "docker.io/library/$BASE" >/dev/null 2>&1 || true
fi
if podman image exists "$BASE"; then
    kind="$(standin_of "$BASE")"
    if [[ -n $kind && $kind != "<no value>" ]]; then
        say "base $BASE: reusing the cached STAND-IN ($kind), not the official image"
    else
        say "base $BASE: an image of that name is already here, not made by this script; using it"
    fi
else
    say "base $BASE: not here and no registry to pull it from: making a STAND-IN with debootstrap (takes minutes)"
    work="$(mktemp -d /var/tmp/container_check-base.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    heavy debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,ca-certificates \
        bookworm "$work/rootfs" ${TE_DEBIAN_MIRROR:+"$TE_DEBIAN_MIRROR"} >"$work/debootstrap.log" 2>&1 ||
        fail "debootstrap of the stand-in base failed: $(tail -n 3 "$work/debootstrap.log")"
    # python, pip and installed scripts in /usr/local/bin, as in the official image (a venv, so
    # that pip installs there and not into Debian's externally managed system Python)
    chroot "$work/rootfs" python3 -m venv /usr/local || fail "python3 -m venv /usr/local in the stand-in failed"
    rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/*
    py="$(chroot "$work/rootfs" /usr/local/bin/python -c 'import platform; print(platform.python_version())')"
    heavy tar -C "$work/rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $STANDIN_LABEL=debootstrap-bookworm-python-$py-headers" \
        --change 'CMD ["python3"]' - "$BASE" >"$work/import.log" 2>&1 ||
        fail "podman import of the stand-in base failed: $(tail -n 3 "$work/import.log")"
    podman tag "$BASE" "docker.io/library/$BASE"      # found locally however the short name resolves
    rm -rf "$work"
    trap - EXIT
    say "base $BASE: STAND-IN made (Debian bookworm, Python $py)"
fi
"${PODMAN[@]}" run --rm "${RUNOPTS[@]}" "$BASE" python -c 'import sys; print("stand-in python", sys.version.split()[0])' \
    >/tmp/container_check-smoke.log 2>&1 ||
    skip "podman (runc, host network) cannot run a container here: $(tail -n 3 /tmp/container_check-smoke.log)"

# -- the image, from the Dockerfile as it is ------------------------------------------------------
# The build's pip must trust what the host trusts to reach the package index (here a TLS-inspecting
# proxy's CA is in the host's store): the host's store is mounted over the stand-in's for the
# build's RUN steps only; nothing of it ends up in the image.
build_args=(--pull=never --layers "${RUNOPTS[@]}" -t "$IMAGE" -f Dockerfile)
[[ -f $CA_BUNDLE ]] && build_args+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
say "building $IMAGE from Dockerfile on the STAND-IN base $BASE (podman build, runc)"
build_start=$SECONDS
heavy "${PODMAN[@]}" build "${build_args[@]}" . >/tmp/container_check-build.log 2>&1 ||
    fail "podman build failed (log: /tmp/container_check-build.log): $(grep -v '^\s*$' /tmp/container_check-build.log | tail -n 5)"
say "built $IMAGE in $((SECONDS - build_start)) s ($(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
version="$("${PODMAN[@]}" run --rm "${RUNOPTS[@]}" "$IMAGE" --version 2>&1)" || fail "triggers --version in the image: $version"
say "in the image: $version; runs as $("${PODMAN[@]}" run --rm "${RUNOPTS[@]}" --entrypoint id "$IMAGE" -un)"
[[ $version == *"compiled core"* ]] ||
    fail "the image runs the pure-Python core, not the compiled one the Dockerfile's build stage makes: $version"

# -- the engine against the local Kafka and Redis ---------------------------------------------
out="$(mktemp -d /tmp/container_check-out.XXXXXX)"
chmod 777 "$out"                        # the image runs as uid 10001
python_in_image() { "${PODMAN[@]}" run --rm "${RUNOPTS[@]}" --entrypoint python "$IMAGE" -c "$1"; }
cleanup() {
    local rc=$?
    podman rm -f "$CONTAINER" >/dev/null 2>&1 || true
    python_in_image "
from confluent_kafka.admin import AdminClient
admin = AdminClient({'bootstrap.servers': '$KAFKA'})
admin.delete_topics(['$TOPIC'])['$TOPIC'].result(30)
import redis
r = redis.Redis.from_url('$REDIS_URL')
keys = list(r.scan_iter('$PREFIX*', count=1000))
keys and r.delete(*keys)
" >/dev/null 2>&1 || echo "(cleanup: topic $TOPIC or Redis keys $PREFIX* may be left)" >&2
    if [[ -n ${TE_KEEP_OUT:-} ]]; then echo "(triggers and the backtest's kept in $out)" >&2; else rm -rf "$out"; fi
    exit "$rc"
}
trap cleanup EXIT

say "topic $TOPIC (4 partitions) on $KAFKA; Redis $REDIS_URL, prefix $PREFIX"
python_in_image "
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({'bootstrap.servers': '$KAFKA'})     # kept: the futures need the handle alive
for f in admin.create_topics([NewTopic('$TOPIC', 4, 1)]).values():
    f.result(30)
" >/tmp/container_check-topic.log 2>&1 || fail "cannot create topic $TOPIC on $KAFKA: $(tail -n 2 /tmp/container_check-topic.log)"

say "backtest in the image up to now (what the sample events give offline, for comparison)"
"${PODMAN[@]}" run --rm "${RUNOPTS[@]}" -v "$out:/out" "$IMAGE" backtest --rules rules \
    --events examples/sample-events.jsonl --until "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --out /out/backtest.jsonl >/dev/null 2>&1 ||
    fail "triggers backtest in the image failed"
expected="$(grep -c '"status":"sent"' "$out/backtest.jsonl" || true)"

say "starting the engine: triggers run (metrics and /healthz on 127.0.0.1:$PORT, host network)"
"${PODMAN[@]}" run -d --name "$CONTAINER" "${RUNOPTS[@]}" -v "$out:/out" \
    -e TRIGGERS_KAFKA__BROKERS="[\"$KAFKA\"]" -e TRIGGERS_KAFKA__TOPIC="$TOPIC" \
    -e TRIGGERS_REDIS__URL="$REDIS_URL" -e TRIGGERS_REDIS__PREFIX="$PREFIX" \
    -e TRIGGERS_METRICS_HOST=127.0.0.1 -e TRIGGERS_METRICS_PORT="$PORT" \
    -e TRIGGERS_SINKS__FILE__PATH=/out/triggers.jsonl -e TRIGGERS_SINKS__FILE__APPEND=true \
    -e TRIGGERS_DEAD_LETTERS__FILE=/out/dead-letters.jsonl \
    -e TRIGGERS_DEAD_LETTERS__DEAD_LETTER_PATH=/out/dead-letters-refused.jsonl \
    "$IMAGE" run >/dev/null || fail "podman run of the engine failed"
logs() { podman logs "$CONTAINER" 2>&1 | tail -n "${1:-15}" | sed 's/^/    engine: /' >&2; }
start=$SECONDS
until health="$(curl -fsS --max-time 2 "http://127.0.0.1:$PORT/healthz" 2>/dev/null)"; do
    running="$(podman inspect --format '{{.State.Running}}' "$CONTAINER" 2>/dev/null || echo false)"
    if [[ $running != true ]]; then logs 25; fail "the engine exited before /healthz answered"; fi
    if ((SECONDS - start > 120)); then logs 25; fail "/healthz did not answer within 120 s"; fi
    sleep 1
done
say "/healthz answered after $((SECONDS - start)) s: $health"

say "triggers produce (in the image) of examples/sample-events.jsonl into $TOPIC"
"${PODMAN[@]}" run --rm "${RUNOPTS[@]}" "$IMAGE" produce --events examples/sample-events.jsonl \
    --topic "$TOPIC" --brokers "$KAFKA" >/tmp/container_check-produce.log 2>&1 ||
    fail "triggers produce failed: $(tail -n 3 /tmp/container_check-produce.log)"
tail -n 1 /tmp/container_check-produce.log | sed 's/^/    produce: /' >&2

start=$SECONDS last=-1 stable=0
while :; do
    n="$( (cat "$out/triggers.jsonl" 2>/dev/null || true) | wc -l)"
    if ((n > 0 && n == last)); then stable=$((stable + 1)); else stable=0; fi
    last=$n
    ((n > 0 && stable >= 5)) && break        # triggers came, and none for 5 s
    if [[ $(podman inspect --format '{{.State.Running}}' "$CONTAINER") != true ]]; then
        logs 25; fail "the engine exited while processing"; fi
    if ((SECONDS - start > 180)); then
        logs 25; ((n > 0)) && break; fail "no trigger came out within 180 s"; fi
    sleep 1
done
events="$(curl -fsS --max-time 5 "http://127.0.0.1:$PORT/metrics" | awk '/^triggers_events_total/ {s += $2} END {print s + 0}')"
say "$n triggers written by the engine in the container ($events events counted in /metrics; for comparison, a backtest of them up to now sends $expected)"
head -n 2 "$out/triggers.jsonl" | cut -c 1-160 | sed 's/^/    trigger: /' >&2

say "SIGTERM (podman stop)"
podman stop -t 30 "$CONTAINER" >/dev/null
code="$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")"
((code == 0)) || { logs 15; fail "the engine exited with $code on SIGTERM"; }
if podman logs "$CONTAINER" 2>&1 | grep -q Traceback; then logs 25; fail "a traceback in the engine's log"; fi

printf 'container check OK in %s s: image %s built from the Dockerfile on a STAND-IN base (%s, not the official image); the engine answered /healthz, wrote %s triggers from %s events, exited 0 on SIGTERM\n' \
    "$((SECONDS - T0))" "$IMAGE" "$BASE: $(standin_of "$BASE" || true)" "$n" "$events" >&2
