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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("engine.metrics")

EVENTS = Counter("triggers_events", "Events decoded and applied to customer state", ["partition"])
DEAD_LETTERS = Counter("triggers_dead_letters", "Messages that could not be decoded (sent to dead letters)",
                       ["partition"])
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
SINK_ITEMS = Counter("triggers_sink_items", "Items handed to a sink and delivered", ["sink"])
SINK_RETRIES = Counter("triggers_sink_retries", "Retries a sink made (webhook requests, Kafka re-sends)", ["sink"])
RULES_VERSION = Gauge("triggers_rules_version", "Rules reloads applied since start (0: the rules of the start)")
RULES_REJECTED = Gauge("triggers_rules_rejected", "Rules changes rejected since start (invalid: old rules kept)")


def track_rules(live_rules) -> None:
    """Report a run's reloads (read when scraped: nothing to update on the hot path)."""
    RULES_VERSION.set_function(lambda: live_rules.version)
    RULES_REJECTED.set_function(lambda: live_rules.rejected)


def count_triggers(items: list) -> None:
    """One increment per (rule, status, reason) of a batch, not one per trigger."""
    tally: Tally = Tally()
    for t in items:
        rule_id = getattr(t, "rule_id", None)
        if rule_id is not None:
            tally[(rule_id, t.status, t.reason or "")] += 1
    for labels, n in tally.items():
        TRIGGERS.labels(*labels).inc(n)


class Health:
    """What /healthz reports: each partition's last poll and whether it waits on an outage."""

    def __init__(self, unhealthy_after_s: float = 30.0) -> None:
        self.unhealthy_after_s = unhealthy_after_s
        self._partitions: dict[str, dict] = {}
        self._lock = threading.Lock()

    def polled(self, partition: str) -> None:
        with self._lock:
            p = self._partitions.setdefault(partition, {"waiting": None, "since": None})
            p["last_poll"] = time.time()

    def waiting(self, partition: str, what: str | None) -> None:
        """`what` is the outage waited on (e.g. "Redis commit"), None when it is over."""
        with self._lock:
            p = self._partitions.setdefault(partition, {"last_poll": time.time()})
            if what is None:
                p["waiting"], p["since"] = None, None
            elif p.get("waiting") is None:
                p["waiting"], p["since"] = what, time.time()

    def forget(self, partition: str) -> None:
        """A partition that ended (bounded run, shutdown) is no longer reported."""
        with self._lock:
            self._partitions.pop(partition, None)

    def report(self) -> tuple[bool, dict]:
        now = time.time()
        with self._lock:
            parts = {name: dict(p) for name, p in self._partitions.items()}
        ok = bool(parts)
        for p in parts.values():
            stuck = now - p.get("last_poll", 0) > self.unhealthy_after_s
            outage = p.get("waiting") is not None and now - (p.get("since") or now) > self.unhealthy_after_s
            p["ok"] = not stuck and not outage
            ok = ok and p["ok"]
        return ok, {"status": "ok" if ok else ("starting" if not parts else "unhealthy"), "partitions": parts}


HEALTH = Health()


def serve(host: str, port: int) -> ThreadingHTTPServer:
    """Start /metrics and /healthz in a daemon thread; returns the server (port 0: any free port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(REGISTRY), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                ok, report = HEALTH.report()
                body, status, ctype = json.dumps(report).encode(), 200 if ok else 503, "application/json"
            else:
                body, status, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /healthz", host, server.server_address[1])
    return server
