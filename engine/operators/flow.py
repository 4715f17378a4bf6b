"""The live dataflow, built from the settings: source -> evaluate -> outbox -> relays -> sinks.

    events (EngineSource: a batch per poll of each partition, on its worker)
      -> evaluate (flat_map_batch: decode, load, evaluate; no exchange between workers): the
         triggers and dead letters wait in the partition's outbox list
      -> commit at each epoch's end (in the source): states, offset, deadlines, outbox entries
      -> one relay per sink in this process (threads, engine.operators.outbox) -> connectors
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from connectors.base import retry_forever
from connectors.kafka.source import KafkaPartitionLog
from engine.errors import EngineError
from engine.operators import metrics
from engine.operators.logs import kafka_logger
from engine.operators.metrics import serve, track_rules
from engine.operators.outbox import RelayGroup
from engine.operators.partition import Batch
from engine.operators.profile_api import CUSTOMERS, PATH
from engine.operators.settings import Settings
from engine.operators.sinks import NoOutput, SinkFactory, dead_letter_spec, given_specs, trigger_specs
from engine.operators.source import EngineSource, OpenLog, StoreFactory
from engine.rules.compiler import CompiledRules
from engine.rules.reload import LiveRules
from engine.state.redis import RedisStore
from engine.state.store import OutboxStore

log = logging.getLogger("engine")

# Errors of the Kafka client that waiting cannot fix.
_KAFKA_FATAL = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                          KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                          KafkaError._SSL, KafkaError._INVALID_ARG})


class FlowError(EngineError):
    pass


def kafka_partitions(settings: Settings, topic_name: str | None = None) -> list[str]:
    """The topic's partitions as source partition names (`<topic>-<n>`). A broker that is down
    is waited for (one log line every few seconds); a missing topic or refused credentials are
    a `FlowError` at once."""
    k = settings.kafka
    name = topic_name or k.topic
    brokers = ",".join(k.brokers)
    # ignore: confluent_kafka's stub types AdminClient's config values as str/int/float/bool, but
    # librdkafka's Python client takes a logging.Logger for "logger" (as Consumer and Producer do)
    admin = AdminClient({"bootstrap.servers": brokers, "logger": kafka_logger(), **k.extra})  # type: ignore[dict-item]

    def fetch() -> list[str]:
        try:
            meta = admin.list_topics(name, timeout=5)
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if err is not None and (err.fatal() or err.code() in _KAFKA_FATAL):
                raise FlowError(f"Kafka at {brokers} refused the engine: {err.str()} (check kafka.extra: "
                                "security.protocol, sasl.*, ssl.*)") from None
            admin.poll(0)   # librdkafka's log lines about it, through the engine's (de-duplicated) log
            raise
        topic = meta.topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            why = topic.error.str() if topic is not None and topic.error is not None else "no partitions"
            raise FlowError(f"Kafka topic {name!r} on {brokers} is not usable: {why} "
                            "(create it, keyed by customer id, or set kafka.topic)")
        return [f"{name}-{p}" for p in sorted(topic.partitions)]

    def waiting() -> None:
        metrics.HEALTH.waiting("kafka", "engine", f"broker {brokers} unreachable at start-up")

    partitions = retry_forever(fetch, f"waiting for Kafka at {brokers} (topic {name!r})", (KafkaException,), log,
                               on_retry=waiting)
    metrics.HEALTH.waiting("kafka", "engine", None)
    return partitions


def _kafka_log(settings: Settings) -> OpenLog:
    k = settings.kafka

    def open_log(name: str, start: int | None) -> KafkaPartitionLog:
        errors = metrics.KAFKA_ERRORS.labels(name)

        def waiting(what: str | None) -> None:   # librdkafka retries by itself: count, report, go on
            if what is not None:
                errors.inc()
            metrics.HEALTH.waiting("kafka", name, what)

        return KafkaPartitionLog(k.brokers, k.topic, int(name.rsplit("-", 1)[1]), start, k.extra,
                                 settings.consumer_group, logger=kafka_logger(), waiting=waiting)

    return open_log


def _evaluate(batches: list[Batch]) -> list:
    """Every batch into its partition's outbox (committed with its states); nothing flows on."""
    if len(batches) > 1:
        prefetch(batches)
    for b in batches:
        b.worker.process(b)
    return []


def prefetch(batches: list[Batch]) -> None:
    """One MGET for the states the batches here need and no cache holds, instead of one per
    partition: the batches of several partitions often arrive together, and at 20,000 events/s
    these round trips were most of the dataflow thread's time. The log is keyed by customer and a
    state key is the customer's, so one store reads for all partitions whose stores read the same
    place (`PartitionStore.reads`; a store without it only for its own partitions). Only a
    partition's first batch here is read ahead: a later one follows states the first changes.
    Any failure is left to each partition's own load, which retries or stops as it does for
    every read."""
    groups: dict[object, list[tuple[Batch, list[str]]]] = {}
    seen: set[int] = set()
    for b in batches:
        worker = b.worker
        if id(worker) in seen:
            continue
        seen.add(id(worker))
        if ids := worker.wanted(b):
            groups.setdefault(getattr(worker.store, "reads", None) or id(worker.store), []).append((b, ids))
    for wanted in groups.values():
        if len(wanted) < 2:
            continue   # one partition's load is as cheap in its own pass
        try:
            images = wanted[0][0].worker.store.load_many_encoded([cid for _, ids in wanted for cid in ids])
        except Exception:   # met again, and handled, by the partition's own load
            continue
        for b, ids in wanted:
            b.worker.preloaded(ids, images)


def build_flow(settings: Settings, rules: CompiledRules, partitions: list[str] | None = None,
               open_log: OpenLog | None = None, store: StoreFactory | None = None,
               sinks: dict[str, SinkFactory] | None = None,
               dead_letters: SinkFactory | None = None) -> Dataflow:
    """The dataflow for `triggers run`, with the relays of this process's sinks (started when
    the first partition is built); the keyword arguments replace Kafka/Redis/sinks in benchmarks
    and tests (sinks given that way get every status)."""
    r = settings.redis
    live_rules = LiveRules(settings.rules, rules, interval_s=settings.reload_interval_ms / 1000,
                           watch=settings.reload_rules)
    track_rules(live_rules)
    open_store = store or (lambda: RedisStore.from_settings(r))
    if sinks is None:
        dead = dead_letter_spec(settings)
        if dead is None:
            raise FlowError("no dead-letter output: set dead_letters.kafka_topic or dead_letters.file")
        specs = [*trigger_specs(settings), dead]
    else:
        specs = given_specs(sinks, dead_letters)
    CUSTOMERS.configure(live_rules, open_store, settings.profile_api_token)
    relay = settings.relay
    relays = RelayGroup(specs, cast(Callable[[], OutboxStore], open_store), relay.batch_size, relay.backoff_base_s,
                        relay.backoff_max_s, relay.idle_check_ms / 1000)
    relays.on_relay = metrics.watch_relay
    source = EngineSource(
        partitions if partitions is not None else kafka_partitions(settings),
        open_log or _kafka_log(settings),
        open_store,
        live_rules,
        batch_size=settings.kafka.batch_size,
        index_poll_ms=settings.timer_poll_ms,
        cache_size=settings.cache_size,
        exit_at_end=settings.exit_at_end,
        relays=relays,
        outbox_max_entries=relay.outbox_max_entries,
    )
    flow = Dataflow("trigger-engine")
    batches = op.input("events", flow, source)
    done = op.flat_map_batch("evaluate", batches, _evaluate)
    op.output("outbox", done, NoOutput())
    return flow


def serve_metrics(settings: Settings) -> None:
    """/metrics and /healthz, before anything else starts: a start that waits for Kafka or
    Redis already says so on /healthz."""
    if not settings.metrics_port:
        return
    port = settings.metrics_port + (settings.process_id or 0)
    try:
        serve(settings.metrics_host, port, {PATH: CUSTOMERS.answer})
    except OSError as e:   # the engine matters more than its metrics: run on, say so loudly
        logging.getLogger("engine.metrics").error("cannot serve metrics on %s:%d: %s", settings.metrics_host, port, e)


def run(flow: Dataflow, settings: Settings) -> None:
    """Run in this process: `workers` threads, part of a cluster when `addresses` is set."""
    from datetime import timedelta

    from bytewax._bytewax import cli_main

    kwargs: dict[str, Any] = {
        "workers_per_process": settings.workers,
        "epoch_interval": timedelta(milliseconds=settings.commit_interval_ms),
    }
    if settings.addresses:
        kwargs["process_id"] = settings.process_id or 0
        kwargs["addresses"] = settings.addresses
    cli_main(flow, **kwargs)
