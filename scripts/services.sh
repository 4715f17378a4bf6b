#!/usr/bin/env bash
# The real services the engine and its integration tests talk to (SPEC §7), on 127.0.0.1:
#   Redis  - Debian's redis-server, with AOF persistence (SPEC §6), state under .services/redis/
#   Kafka  - an Apache Kafka broker in KRaft mode (one node, broker + controller), its jars
#            resolved from Maven Central with scripts/kafka/pom.xml and cached per version.
#
# usage: scripts/services.sh {install|start|stop|status} [redis|kafka|all|redis-cluster]   (default: all)
#        (`--redis-cluster` is accepted for `redis-cluster`: a real 3-primary Redis Cluster on
#        127.0.0.1:7000-7002, made with redis-cli --cluster create; not part of `all`)
#
#   install  installs what is missing (apt package, Kafka jars); a no-op when present
#   start    reuses a server that already answers on the port, else starts one and waits until
#            it really answers; installs first when needed
#   stop     stops only servers this script started (found by pidfile); others keep running
#   status   prints up/down for each; exit 0 when all asked-for services are up, else 1
#
# Every action is idempotent and works from any directory. Settings (environment):
#   REDIS_PORT (6379)  REDIS_CLUSTER_PORTS ("7000 7001 7002")  KAFKA_PORT (9092)  KAFKA_CONTROLLER_PORT (9093)  KAFKA_VERSION (4.1.0)
#   TE_SERVICES_DIR (<repo>/.services)   XDG_CACHE_HOME (~/.cache): Kafka jars cache
#   REDIS_START_TIMEOUT (30 s)  KAFKA_START_TIMEOUT (120 s)
# To throw away Kafka's topics and data: stop, then remove $TE_SERVICES_DIR/kafka.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="${TE_SERVICES_DIR:-$REPO_ROOT/.services}"

REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_DIR="$SERVICES_DIR/redis"
REDIS_START_TIMEOUT="${REDIS_START_TIMEOUT:-30}"
read -r -a REDIS_CLUSTER_PORTS <<<"${REDIS_CLUSTER_PORTS:-7000 7001 7002}"
REDIS_CLUSTER_DIR="$SERVICES_DIR/redis-cluster"

# 4.1.0: a 4.x release (no ZooKeeper, KRaft only) whose broker runs on Java 17.
KAFKA_VERSION="${KAFKA_VERSION:-4.1.0}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DIR="$SERVICES_DIR/kafka"
KAFKA_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/trigger-engine/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_CACHE/libs"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# Print the last lines of a log file, so that a failure explains itself in CI output.
tail_log() {
    local file="$1"
    if [[ -s "$file" ]]; then
        printf -- '----- last lines of %s -----\n' "$file" >&2
        tail -n "${2:-40}" "$file" >&2
        printf -- '-----\n' >&2
    fi
}

# The first ERROR lines of a Kafka log: on a failed start the tail shows the shutdown, not its cause.
kafka_errors() {
    local file="$KAFKA_DIR/logs/server.log"
    if grep -qE '^\[[^]]*\] (ERROR|FATAL)' "$file" 2>/dev/null; then
        printf -- '----- first errors in %s -----\n' "$file" >&2
        grep -m 5 -E '^\[[^]]*\] (ERROR|FATAL)' "$file" | cut -c1-400 >&2
    fi
}

# apt-get needs root: run directly as root (CI containers), else through sudo when there is one.
# shellcheck source=scripts/as_root.sh
source "$(dirname "${BASH_SOURCE[0]}")/as_root.sh"

# Serialize start/stop/install of one services dir: tests of several engineers (or pytest
# sessions) may start the services at the same moment, and must not launch two brokers.
take_lock() {
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.lock"
    flock -w 600 9 || die "timed out waiting for $SERVICES_DIR/.lock (another services.sh still running?)"
}

# The pid in a pidfile, when that process is alive and its command line contains $2
# (so that a pid recycled by an unrelated process is never signalled).
live_pid() {
    local pidfile="$1" needle="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$needle" || return 1
    printf '%s\n' "$pid"
}

# TERM, then wait (Kafka does a controlled shutdown), then KILL as a last resort.
stop_pid() {
    local pid="$1" name="$2" wait_s="$3" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    log "$name: pid $pid did not exit within ${wait_s}s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- Redis

# Speak RESP over bash's /dev/tcp, so the check needs neither redis-cli nor Python.
redis_ping() {
    local reply="" port="${1:-$REDIS_PORT}"
    { exec 8<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&8
    IFS= read -r -t 2 reply <&8 || true
    exec 8<&- 8>&-
    [[ "$reply" == "+PONG"* ]]
}

redis_install() {
    if command -v redis-server >/dev/null 2>&1; then
        log "redis: redis-server $(redis-server --version | awk '{print $3}' | sed 's/^v=//') installed"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "redis-server is not installed and there is no apt-get; install redis-server (>= 6) by hand"
    mkdir -p "$REDIS_DIR"
    local apt_log="$REDIS_DIR/apt.log" added_policy=0 rc=0
    log "redis: installing the Debian package redis-server (log: $apt_log)"
    # The package's postinst would start the system-wide service, with persistence on and
    # its own config. We run our own server, so forbid service starts during the install
    # (policy-rc.d exit 101 = "action forbidden"); many container images already do this.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server
    } >"$apt_log" 2>&1 || rc=$?
    if ((added_policy)); then
        as_root rm -f /usr/sbin/policy-rc.d
    fi
    if ((rc != 0)); then
        tail_log "$apt_log"
        die "apt-get install redis-server failed (exit $rc)"
    fi
    # The package enables its service for boot (systemd unit and SysV rc links), which would
    # occupy the port with a persistent server after a reboot. Disable both; both commands only
    # edit links, so they work without a running systemd (containers) and failures don't matter.
    if command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable redis-server.service >/dev/null 2>&1 || true
        if [[ -d /run/systemd/system ]]; then
            as_root systemctl stop redis-server.service >/dev/null 2>&1 || true
        fi
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
        as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
    fi
    log "redis: installed redis-server $(redis-server --version | awk '{print $3}' | sed 's/^v=//')"
}

redis_start() {
    if redis_ping; then
        log "redis: up on 127.0.0.1:$REDIS_PORT (reusing the running server)"
        return 0
    fi
    redis_install
    mkdir -p "$REDIS_DIR"
    local pidfile="$REDIS_DIR/redis.pid" logfile="$REDIS_DIR/redis.log" i pid
    if pid="$(live_pid "$pidfile" redis-server)"; then
        # Ours and alive but silent (still loading, or started for another REDIS_PORT):
        # wait for it rather than overwrite its pidfile with a second server.
        log "redis: redis-server pid $pid from $REDIS_DIR is running but not answering on port $REDIS_PORT; waiting for it"
    else
        rm -f "$pidfile"
        : >"$logfile"
        # Persistence on, as the engine needs it (SPEC §6): the append-only file, fsync'ed every
        # second, so a restart loses at most a second of writes (which the engine then detects).
        # No RDB snapshots: they fork the process and cost CPU on a small machine. Keys are never
        # evicted (noeviction): an evicted customer state would be lost state. 9>&- keeps our
        # lock fd out of the daemon (it would otherwise hold the lock for as long as Redis runs).
        redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
            --dir "$REDIS_DIR" --pidfile "$pidfile" --logfile "$logfile" \
            --save '' --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
            9>&- >>"$logfile" 2>&1 ||
            { tail_log "$logfile"; die "redis-server failed to start"; }
    fi
    for ((i = 0; i < REDIS_START_TIMEOUT * 5; i++)); do
        if redis_ping; then
            log "redis: up on 127.0.0.1:$REDIS_PORT (pid $(cat "$pidfile" 2>/dev/null || echo '?'), log $logfile)"
            return 0
        fi
        # The daemonized server's pid is unknown until it writes its pidfile, so a start-up
        # failure (port taken, bad option) is recognized by its log line, not by waiting.
        if grep -qE 'aborting|Fatal error|FATAL' "$logfile" 2>/dev/null; then
            tail_log "$logfile"
            die "redis-server exited during startup (port $REDIS_PORT taken? see the log above)"
        fi
        sleep 0.2
    done
    tail_log "$logfile"
    die "redis-server did not answer PING on 127.0.0.1:$REDIS_PORT within ${REDIS_START_TIMEOUT}s"
}

redis_stop() {
    local pid
    if pid="$(live_pid "$REDIS_DIR/redis.pid" redis-server)"; then
        log "redis: stopping pid $pid"
        stop_pid "$pid" redis 20
        rm -f "$REDIS_DIR/redis.pid"
        log "redis: stopped"
    elif redis_ping; then
        log "redis: the server on 127.0.0.1:$REDIS_PORT was not started by this script (no live pidfile in $REDIS_DIR); leaving it running"
    else
        rm -f "$REDIS_DIR/redis.pid"
        log "redis: not running"
    fi
}

redis_status() {
    local pid
    if redis_ping; then
        if pid="$(live_pid "$REDIS_DIR/redis.pid" redis-server)"; then
            echo "redis: up   127.0.0.1:$REDIS_PORT (pid $pid, started by this script)"
        else
            echo "redis: up   127.0.0.1:$REDIS_PORT (not started by this script)"
        fi
        return 0
    fi
    echo "redis: down 127.0.0.1:$REDIS_PORT"
    return 1
}

# ---------------------------------------------------------------- Kafka

kafka_install() {
    if [[ -f "$KAFKA_CACHE/.complete" ]]; then
        log "kafka: jars of Kafka $KAFKA_VERSION cached in $KAFKA_LIBS"
        return 0
    fi
    command -v java >/dev/null 2>&1 || die "java not found: Kafka $KAFKA_VERSION needs Java 17+ (apt-get install openjdk-17-jre-headless)"
    command -v mvn >/dev/null 2>&1 || die "mvn not found: the Kafka jars are resolved from Maven Central with Maven (apt-get install maven)"
    mkdir -p "$KAFKA_CACHE"
    # The cache is per user, shared by every clone: one resolution at a time.
    exec 7>"$KAFKA_CACHE/.lock"
    flock -w 600 7 || die "timed out waiting for $KAFKA_CACHE/.lock"
    if [[ -f "$KAFKA_CACHE/.complete" ]]; then
        exec 7>&-
        return 0
    fi
    local tmp="$KAFKA_CACHE/libs.partial" mvn_log="$KAFKA_CACHE/mvn.log" started=$SECONDS
    log "kafka: resolving the jars of Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
    rm -rf "$tmp"
    # Resolved into a scratch dir and renamed, and the marker written last, so that an
    # interrupted download is never taken for a complete one.
    if ! mvn -q -B -f "$REPO_ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        </dev/null >"$mvn_log" 2>&1; then
        tail_log "$mvn_log"
        die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (is Maven Central reachable? is the version published?)"
    fi
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "mvn finished but $tmp holds no kafka_2.13 jar"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    echo "$KAFKA_VERSION" >"$KAFKA_CACHE/.complete"
    exec 7>&-
    log "kafka: $(ls "$KAFKA_LIBS" | wc -l) jars resolved in $((SECONDS - started))s"
}

# The Python of the repo's venv, when it has confluent_kafka: the readiness check then asks
# the broker for metadata, which proves it serves clients (not only that the port is open).
kafka_probe_python() {
    local py="$REPO_ROOT/.venv/bin/python"
    [[ -x "$py" ]] && "$py" -c 'import confluent_kafka' >/dev/null 2>&1 && printf '%s\n' "$py"
}

# Exit 0 when a broker on 127.0.0.1:$KAFKA_PORT answers a metadata request within $1 seconds.
kafka_ready() {
    local timeout_s="$1" py
    # A closed port answers at once; without this check the client would retry until the timeout.
    { exec 8<>"/dev/tcp/127.0.0.1/$KAFKA_PORT"; } 2>/dev/null || return 1
    exec 8<&- 8>&-
    if py="$(kafka_probe_python)"; then
        "$py" - "127.0.0.1:$KAFKA_PORT" "$timeout_s" 2>/dev/null <<'PY'
import sys
from confluent_kafka.admin import AdminClient

admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0, "socket.connection.setup.timeout.ms": 1000})
try:
    metadata = admin.list_topics(timeout=float(sys.argv[2]))
except Exception:
    sys.exit(1)
sys.exit(0 if metadata.brokers else 1)
PY
    else
        # No client library: besides the open port, our broker must have logged its start
        # (the port opens before the broker serves requests).
        grep -q 'Kafka Server started' "$KAFKA_DIR/logs/server.log" 2>/dev/null
    fi
}

kafka_write_config() {
    local data="$KAFKA_DIR/data"
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by scripts/services.sh on every start; edits are lost.
# One KRaft node that is both broker and controller: a development broker, not a cluster.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data

# A single node can hold one replica only: every internal topic gets replication factor 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer than the default 50 partitions for consumer offsets: the first consumer group of a
# test run then comes up in well under a second on a small machine.
offsets.topic.num.partitions=8

# Tests and examples create topics by producing to them; 4 partitions so that keying by
# customer really spreads customers over partitions.
auto.create.topics.enable=true
num.partitions=4
# Consumer groups start at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
EOF
    # Log to files under .services/kafka/logs (Kafka's own layout of server.log and friends).
    cat >"$KAFKA_DIR/log4j2.properties" <<EOF
# Written by scripts/services.sh on every start.
appender.server.type=RollingFile
appender.server.name=server
appender.server.fileName=$KAFKA_DIR/logs/server.log
appender.server.filePattern=$KAFKA_DIR/logs/server.log.%i
appender.server.layout.type=PatternLayout
appender.server.layout.pattern=[%d] %p %m (%c)%n
appender.server.policies.type=Policies
appender.server.policies.size.type=SizeBasedTriggeringPolicy
appender.server.policies.size.size=20MB
appender.server.strategy.type=DefaultRolloverStrategy
appender.server.strategy.max=3
rootLogger.level=INFO
rootLogger.appenderRef.server.ref=server
# The per-request and log-cleaner chatter is noise for a development broker.
logger.request.name=kafka.request.logger
logger.request.level=WARN
logger.cleaner.name=kafka.log.LogCleaner
logger.cleaner.level=WARN
EOF
}

kafka_start() {
    if kafka_ready 3; then
        log "kafka: up on 127.0.0.1:$KAFKA_PORT (reusing the running broker)"
        return 0
    fi
    kafka_install
    mkdir -p "$KAFKA_DIR/logs"
    local pidfile="$KAFKA_DIR/kafka.pid" out="$KAFKA_DIR/kafka.out" started=$SECONDS pid
    local classpath="$KAFKA_LIBS/*"
    if pid="$(live_pid "$pidfile" kafka.Kafka)"; then
        # Ours, alive, but not answering yet (still starting, or another services.sh started
        # it a moment ago): wait for it instead of launching a second broker on the same dir.
        log "kafka: broker pid $pid is running but not answering yet; waiting for it"
    else
        kafka_write_config
        if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
            local cluster_id
            cluster_id="$(java -cp "$classpath" kafka.tools.StorageTool random-uuid 2>>"$out")" ||
                { tail_log "$out"; die "kafka: StorageTool random-uuid failed"; }
            log "kafka: formatting $KAFKA_DIR/data (cluster id $cluster_id, standalone controller)"
            java -cp "$classpath" -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
                kafka.tools.StorageTool format --standalone -t "$cluster_id" \
                -c "$KAFKA_DIR/server.properties" >>"$out" 2>&1 ||
                { tail_log "$out"; die "kafka: formatting the storage failed"; }
        fi
        # setsid + nohup: the broker outlives this script, its terminal and the test session
        # that started it; stdio goes to files so that no caller waits on an inherited pipe,
        # and 9>&- keeps our lock fd out of the broker.
        setsid nohup java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
            -Dkafka.logs.dir="$KAFKA_DIR/logs" \
            -cp "$classpath" kafka.Kafka "$KAFKA_DIR/server.properties" \
            </dev/null >>"$out" 2>&1 9>&- &
        pid=$!
        echo "$pid" >"$pidfile"
        log "kafka: started broker pid $pid (Kafka $KAFKA_VERSION), waiting for 127.0.0.1:$KAFKA_PORT"
    fi
    while ((SECONDS - started < KAFKA_START_TIMEOUT)); do
        if kafka_ready 2; then
            log "kafka: up on 127.0.0.1:$KAFKA_PORT after $((SECONDS - started))s (pid $pid, log $KAFKA_DIR/logs/server.log)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            tail_log "$out" 20
            tail_log "$KAFKA_DIR/logs/server.log" 15
            kafka_errors
            die "kafka: the broker exited during startup (port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT taken? see the log above)"
        fi
        sleep 1
    done
    tail_log "$out" 20
    tail_log "$KAFKA_DIR/logs/server.log" 15
    kafka_errors
    die "kafka: no metadata answer from 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s (broker pid $pid left running; 'scripts/services.sh stop kafka' stops it)"
}

kafka_stop() {
    local pid
    if pid="$(live_pid "$KAFKA_DIR/kafka.pid" kafka.Kafka)"; then
        log "kafka: stopping pid $pid"
        stop_pid "$pid" kafka 60
        rm -f "$KAFKA_DIR/kafka.pid"
        log "kafka: stopped"
    elif kafka_ready 2; then
        log "kafka: the broker on 127.0.0.1:$KAFKA_PORT was not started by this script (no live pidfile in $KAFKA_DIR); leaving it running"
    else
        rm -f "$KAFKA_DIR/kafka.pid"
        log "kafka: not running"
    fi
}

kafka_status() {
    local pid
    if kafka_ready 3; then
        if pid="$(live_pid "$KAFKA_DIR/kafka.pid" kafka.Kafka)"; then
            echo "kafka: up   127.0.0.1:$KAFKA_PORT (pid $pid, started by this script, Kafka $KAFKA_VERSION)"
        else
            echo "kafka: up   127.0.0.1:$KAFKA_PORT (not started by this script)"
        fi
        return 0
    fi
    if pid="$(live_pid "$KAFKA_DIR/kafka.pid" kafka.Kafka)"; then
        echo "kafka: down 127.0.0.1:$KAFKA_PORT (pid $pid is running but does not answer yet)"
    else
        echo "kafka: down 127.0.0.1:$KAFKA_PORT"
    fi
    return 1
}

# ---------------------------------------------------------------- Redis Cluster

cluster_ok() {
    redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

redis-cluster_install() { redis_install; }

redis-cluster_start() {
    redis_install
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli is missing (it comes with redis-server's package: redis-tools)"
    local port dir i
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        dir="$REDIS_CLUSTER_DIR/$port"
        if redis_ping "$port"; then
            continue
        fi
        mkdir -p "$dir"
        rm -f "$dir/redis.pid"
        : >"$dir/redis.log"
        # The same persistence and eviction settings as the single node (see redis_start).
        redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
            --save '' --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
            9>&- >>"$dir/redis.log" 2>&1 || { tail_log "$dir/redis.log"; die "redis-server on port $port failed to start"; }
    done
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        for ((i = 0; i < REDIS_START_TIMEOUT * 5; i++)); do
            redis_ping "$port" && break
            sleep 0.2
        done
        redis_ping "$port" || { tail_log "$REDIS_CLUSTER_DIR/$port/redis.log"; die "redis-server did not answer on port $port"; }
    done
    if ! cluster_ok; then
        local nodes=()
        for port in "${REDIS_CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
        # Nodes that were a cluster before (their nodes.conf) find each other again by themselves;
        # a node that knows only itself is new: the cluster is created.
        if redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" cluster info 2>/dev/null | grep -q '^cluster_known_nodes:1'; then
            log "redis-cluster: creating the cluster of ${nodes[*]}"
            redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
                >"$REDIS_CLUSTER_DIR/create.log" 2>&1 || true
        fi
        for ((i = 0; i < REDIS_START_TIMEOUT * 5; i++)); do
            cluster_ok && break
            sleep 0.2
        done
        cluster_ok || { cat "$REDIS_CLUSTER_DIR/create.log" >&2 2>/dev/null; die "the Redis Cluster on ${nodes[*]} is not ok"; }
    fi
    log "redis-cluster: up on 127.0.0.1:${REDIS_CLUSTER_PORTS[*]} (state under $REDIS_CLUSTER_DIR)"
}

redis-cluster_stop() {
    local port pid
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        if pid="$(live_pid "$REDIS_CLUSTER_DIR/$port/redis.pid" redis-server)"; then
            stop_pid "$pid" "redis $port" 20
            rm -f "$REDIS_CLUSTER_DIR/$port/redis.pid"
        fi
    done
    log "redis-cluster: stopped"
}

redis-cluster_status() {
    if cluster_ok; then
        echo "redis-cluster: up   127.0.0.1:${REDIS_CLUSTER_PORTS[*]}"
        return 0
    fi
    echo "redis-cluster: down 127.0.0.1:${REDIS_CLUSTER_PORTS[*]}"
    return 1
}

# ---------------------------------------------------------------- main

usage() {
    sed -n '7,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

action="${1:-}"
target="${2:-all}"
case "$target" in
    redis) services=(redis) ;;
    kafka) services=(kafka) ;;
    all) services=(redis kafka) ;;
    redis-cluster | --redis-cluster) services=(redis-cluster) ;;
    *) usage ;;
esac

case "$action" in
    install | start | stop)
        take_lock
        for service in "${services[@]}"; do
            "${service}_${action}"
        done
        ;;
    status)
        rc=0
        for service in "${services[@]}"; do
            "${service}_status" || rc=1
        done
        exit "$rc"
        ;;
    *) usage ;;
esac
