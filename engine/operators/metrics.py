"""Metrics (Prometheus text format on /metrics) and health (/healthz) of a live run.

Counters are process-wide (prometheus_client's default registry, which also carries Bytewax's
own metrics); a cluster runs one endpoint per process (port + process id).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from engine.operators.outbox import Relay, RelayState
from engine.rules.reload import LiveRules

log = logging.getLogger("engine.metrics")

EVENTS = Counter("triggers_events", "Events decoded and applied to customer state", ["partition"])
LATE_EVENTS = Counter("triggers_late_events", "Events that arrived more than the rules' time.lateness behind the "
                      "newest event before them (applied at once, out of event-time order)", ["partition"])
DUPLICATE_EVENTS = Counter("triggers_duplicate_events", "Events whose event_id was among the customer's last 4 "
                           "(re-deliveries): counted in triggers_events too, their effects applied once", ["partition"])
DEAD_LETTERS = Counter("triggers_dead_letters", "Messages sent to dead letters, by partition and by the stage that "
                       "refused them (decode, key, evaluate, store)", ["partition", "stage"])

TRIGGERS = Counter("triggers_fired", "Triggers by rule, status and suppression reason", ["rule", "status", "reason"])
BATCH_SECONDS = Histogram("triggers_batch_seconds", "Time to decode, load and evaluate one source batch",
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
COMMIT_SECONDS = Histogram("triggers_commit_seconds", "Time to commit a partition's states, offset and deadlines",
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
COMMITS = Counter("triggers_commits", "Commits of state + offset to Redis", ["partition"])
REDIS_ERRORS = Counter("triggers_redis_errors", "Redis calls that failed and were retried", ["operation"])
KAFKA_ERRORS = Counter("triggers_kafka_errors", "Kafka consumer errors (transient ones are retried by librdkafka)",
                       ["partition"])
CONSUMER_LAG = Gauge("triggers_consumer_lag", "Messages in the partition not read yet", ["partition"])


class _Rules(Collector):
    """`triggers_rules_*`, read from the run's `LiveRules` when scraped: a reload updates plain
    fields under its own lock, nothing on the hot path. A process that ran several dataflows
    (tests) reports the latest one's rules."""

    def __init__(self) -> None:
        self.live_rules: LiveRules | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        version = GaugeMetricFamily("triggers_rules_version", "Rules reloads applied since start (0: the rules "
                                    "of the start)")
        valid = GaugeMetricFamily("triggers_rules_valid", "1 when the rules files on disk are the rules applied, "
                                  "0 after a rejected change (the old rules still run): fix the files")
        rejected = CounterMetricFamily("triggers_rules_rejected", "Rules changes rejected since start (invalid: "
                                       "the old rules kept)")
        live = self.live_rules
        if live is not None:   # before a run: the families without samples, so /metrics always names them
            version.add_metric([], live.version)
            valid.add_metric([], 1 if live.valid else 0)
            rejected.add_metric([], live.rejected)
        yield from (version, valid, rejected)


RULES = _Rules()
REGISTRY.register(RULES)


def track_rules(live_rules: LiveRules) -> None:
    """Report a run's rules and reloads on /metrics."""
    RULES.live_rules = live_rules


def count_triggers(items: list) -> None:
    """One increment per (rule, status, reason) of a batch, not one per trigger."""
    tally: Tally = Tally()
    for t in items:
        rule_id = getattr(t, "rule_id", None)
        if rule_id is not None:
            tally[(rule_id, t.status, t.reason or "")] += 1
    for labels, n in tally.items():
        TRIGGERS.labels(*labels).inc(n)


class _Relays(Collector):
    """`triggers_relay_*`, read from each relay's own counters when scraped: a relay updates
    plain ints in its thread, and the lag moves with every commit, so nothing is pushed."""

    def __init__(self) -> None:
        self._relays: list[Relay] = []
        self._lock = threading.Lock()

    def watch(self, relay: Relay) -> None:
        with self._lock:
            self._relays.append(relay)

    def relays(self) -> list[Relay]:
        with self._lock:
            return list(self._relays)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        lag = GaugeMetricFamily("triggers_relay_lag", "Outbox entries committed but not yet passed by the sink's "
                                "relay", labels=["sink", "partition"])
        delivered = CounterMetricFamily("triggers_relay_delivered", "Items a relay delivered to its sink",
                                        labels=["sink"])
        retries = CounterMetricFamily("triggers_relay_retries", "Items a relay sent again after a transient "
                                      "failure", labels=["sink"])
        dead = CounterMetricFamily("triggers_relay_dead_letters", "Items a sink refused for good, written to its "
                                   "dead-letter file: alert on it", labels=["sink"])
        lags: Tally = Tally()
        counts: dict[str, Tally] = {"delivered": Tally(), "retries": Tally(), "dead_lettered": Tally()}
        for relay in self.relays():   # a process that ran several dataflows (tests) had a relay per sink each
            for partition, n in relay.lag().items():
                lags[(relay.name, partition)] += n
            for field, tally in counts.items():
                tally[relay.name] += getattr(relay.stats, field)
        for labels, n in sorted(lags.items()):
            lag.add_metric(list(labels), n)
        for family, field in ((delivered, "delivered"), (retries, "retries"), (dead, "dead_lettered")):
            for name, n in sorted(counts[field].items()):
                family.add_metric([name], n)
        yield from (lag, delivered, retries, dead)


RELAYS = _Relays()
REGISTRY.register(RELAYS)


def watch_relay(relay: Relay) -> None:
    """Metrics and /healthz follow this relay."""
    RELAYS.watch(relay)
    HEALTH.watch_relay(relay)


def count_dead_letters(partition: str, items: list) -> None:
    """One increment per stage of a batch's dead letters."""
    tally: Tally = Tally(d.stage.value for d in items)
    for stage, n in tally.items():
        DEAD_LETTERS.labels(partition, stage).inc(n)


class _Waits(Protocol):
    waiting_since: float | None
    last_error: str | None


class Health:
    """What /healthz reports: each partition's last poll, and what the engine waits for.

    A wait is keyed by a component (`redis`, `kafka`, `sink:<name>`) and a waiter (a partition,
    a sink's worker): the report lists, per component, what it waits on and for how long.
    Sinks are watched live (`watch`): a sink blocked in its retries cannot report itself.
    """

    def __init__(self, unhealthy_after_s: float = 30.0) -> None:
        self.unhealthy_after_s = unhealthy_after_s
        self._partitions: dict[str, dict] = {}
        self._waits: dict[tuple[str, str], tuple[str, float]] = {}   # (component, waiter) -> (what, since)
        self._sinks: list[tuple[str, _Waits]] = []
        self._relays: list[Relay] = []
        self._lock = threading.Lock()

    def polled(self, partition: str) -> None:
        with self._lock:
            p = self._partitions.setdefault(partition, {})
            p["last_poll"] = time.time()

    def waiting(self, component: str, waiter: str, what: str | None) -> None:
        """`what` is the outage waited on (e.g. "commit"), None when it is over."""
        with self._lock:
            if what is None:
                self._waits.pop((component, waiter), None)
            elif (component, waiter) not in self._waits:
                self._waits[(component, waiter)] = (what, time.time())

    def watch(self, sink: str, stats: _Waits) -> None:
        """Report `sink:<name>` while `stats.waiting_since` (epoch s) is set (a connector's
        `SinkStats`, a relay's `RelayStats`)."""
        with self._lock:
            self._sinks.append((sink, stats))

    def watch_relay(self, relay: Relay) -> None:
        """Report the relay's state and lag under `relays`, and `sink:<name>` while it retries."""
        self.watch(relay.name, relay.stats)
        with self._lock:
            self._relays.append(relay)

    def forget(self, partition: str) -> None:
        """A partition that ended (bounded run, shutdown) is no longer reported."""
        with self._lock:
            self._partitions.pop(partition, None)
            for key in [k for k in self._waits if k[1] == partition]:
                del self._waits[key]

    def report(self) -> tuple[bool, dict]:
        now = time.time()
        with self._lock:
            parts = {name: dict(p) for name, p in self._partitions.items()}
            waits = dict(self._waits)
            sinks = list(self._sinks)
            watched = list(self._relays)
        for name, stats in sinks:
            since = stats.waiting_since
            if since is not None:
                error = stats.last_error
                waits[(f"sink:{name}", str(id(stats)))] = (error or "delivery failing, retrying", since)
        waiting: dict[str, dict] = {}
        ok = bool(parts)
        for (component, _waiter), (what, since) in sorted(waits.items()):
            entry = waiting.setdefault(component, {"for_s": 0.0, "what": []})
            entry["for_s"] = round(max(entry["for_s"], now - since), 1)
            if what not in entry["what"]:
                entry["what"].append(what)
            if now - since > self.unhealthy_after_s:
                ok = False
        for p in parts.values():
            p["ok"] = now - p.get("last_poll", 0) <= self.unhealthy_after_s
            ok = ok and p["ok"]
        status = "ok" if ok else ("starting" if not parts else "unhealthy")
        relays: dict[str, dict[str, Any]] = {}
        for relay in watched:
            st = relay.stats
            paused = [p for (c, p) in waits if c == "outbox" and p in relay.lag()]
            relays[relay.name] = {"state": "outbox full" if paused and st.state is RelayState.OK else st.state.value,
                                  "last_error": st.last_error, "lag": relay.lag(), "delivered": st.delivered,
                                  "dead_lettered": st.dead_lettered}
            if paused:
                relays[relay.name]["outbox_full"] = sorted(paused)
        return ok, {"status": status, "waiting_for": waiting, "partitions": parts, "relays": relays}


HEALTH = Health()


Route = Callable[[str, Mapping[str, str]], tuple[int, bytes, dict[str, str]]]
"""(path, request headers) -> (status, JSON body, extra headers): another JSON endpoint on this server."""


def serve(host: str, port: int, routes: Mapping[str, Route] | None = None) -> ThreadingHTTPServer:
    """Start /metrics, /healthz and `routes` (path prefix -> its handler, e.g. the profile API's
    /customers/) in a daemon thread; returns the server (port 0: any free port)."""
    table: dict[str, Route] = dict(routes or {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            extra: dict[str, str] = {}
            route = next((r for prefix, r in table.items() if self.path.startswith(prefix)), None)
            if route is not None:
                (status, body, extra), ctype = route(self.path, dict(self.headers.items())), "application/json"
            elif self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(REGISTRY), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                ok, report = HEALTH.report()
                body, status, ctype = json.dumps(report).encode(), 200 if ok else 503, "application/json"
            else:
                paths = ", ".join(["/metrics", "/healthz", *(f"{p}..." for p in table)])
                body, status, ctype = f"not found: try {paths}\n".encode(), 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /healthz", host, server.server_address[1])
    return server
