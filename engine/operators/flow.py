"""The live dataflow, built from the settings: source -> evaluate -> sinks.

    events (EngineSource: a batch per poll of each partition, on its worker)
      -> evaluate (flat_map_batch: decode, load, evaluate; no exchange between workers)
      -> branch: triggers -> every configured sink; dead letters -> their output
"""

from __future__ import annotations

import logging
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from connectors.base import retry_forever
from connectors.file import FileSink, FileSinkConfig
from connectors.kafka.sink import KafkaSink, KafkaSinkConfig
from connectors.kafka.source import KafkaPartitionLog
from connectors.redis_stream import RedisStreamSink, RedisStreamSinkConfig
from connectors.webhook import WebhookSink, WebhookSinkConfig
from engine.actions.trigger import Trigger
from engine.errors import EngineError
from engine.events.decode import DeadLetter
from engine.operators import metrics
from engine.operators.logs import kafka_logger
from engine.operators.metrics import serve, track_rules
from engine.operators.partition import Batch
from engine.operators.settings import Settings
from engine.operators.sinks import ConnectorSink, SinkFactory
from engine.operators.source import EngineSource, OpenLog, StoreFactory
from engine.rules.compiler import CompiledRules
from engine.rules.reload import LiveRules
from engine.state.redis import RedisStore

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


def _evaluate(batches: list[Batch]) -> list[Trigger | DeadLetter]:
    if len(batches) == 1:
        return batches[0].worker.process(batches[0])
    return [item for b in batches for item in b.worker.process(b)]


def trigger_sinks(settings: Settings) -> dict[str, tuple[SinkFactory, frozenset[str]]]:
    """The configured sinks, each with the statuses it delivers (only `sent` unless its
    `statuses` says more); with none configured, the Kafka topic `triggers` on the event brokers.

    Live, every sink's deliveries are awaited before the state behind them commits
    (`settle_sinks`), so a Kafka sink does not also wait per batch (`wait_for_delivery` off), and
    a webhook sink without a dead-letter file gets `webhook-dead-letters.jsonl`: one trigger the
    receiver refuses for good must not stop the engine and then stop it again after every restart.
    """
    s = settings.sinks
    sinks: dict[str, tuple[SinkFactory, frozenset[str]]] = {}
    kafka = s.kafka
    if kafka is None and s.webhook is None and s.redis_stream is None and s.file is None:
        kafka = KafkaSinkConfig(brokers=settings.kafka.brokers, topic="triggers", extra=settings.kafka.extra,
                                delivery_timeout_s=0)   # during a Kafka outage: wait, do not stop
    if kafka is not None:
        def kafka_sink(_w: int, c: KafkaSinkConfig = kafka) -> KafkaSink:
            return KafkaSink(msgspec.structs.replace(c, wait_for_delivery=False), logger=kafka_logger())

        sinks["kafka"] = (kafka_sink, frozenset(kafka.statuses))
    if s.webhook is not None:
        webhook = s.webhook
        if webhook.dead_letter_path is None:
            webhook = msgspec.structs.replace(webhook, dead_letter_path="webhook-dead-letters.jsonl")
            log.info("webhook triggers that fail for good go to %s", webhook.dead_letter_path)

        def webhook_sink(_w: int, c: WebhookSinkConfig = webhook) -> WebhookSink:
            return WebhookSink(c)

        sinks["webhook"] = (webhook_sink, frozenset(webhook.statuses))
    if s.redis_stream is not None:
        def redis_stream_sink(_w: int, c: RedisStreamSinkConfig = s.redis_stream) -> RedisStreamSink:
            return RedisStreamSink(c)

        sinks["redis_stream"] = (redis_stream_sink, frozenset(s.redis_stream.statuses))
    if s.file is not None:
        # workers append to one file: each batch is one write() on an O_APPEND file
        def file_sink(_w: int, c: FileSinkConfig = s.file) -> FileSink:
            return FileSink(FileSinkConfig(path=c.path, append=True))

        sinks["file"] = (file_sink, frozenset(s.file.statuses))
    for name, (_, statuses) in sinks.items():
        log.info("sink %s delivers %s triggers", name, ", ".join(sorted(statuses)))
    return sinks


def dead_letter_sink(settings: Settings) -> SinkFactory:
    d = settings.dead_letters
    file, topic = d.file, d.kafka_topic   # locals, so that the lambdas keep the narrowing below
    if file:
        return lambda _w: FileSink(FileSinkConfig(path=file, append=True))
    if topic:
        return lambda _w: KafkaSink(KafkaSinkConfig(brokers=settings.kafka.brokers, topic=topic,
                                                    extra=settings.kafka.extra, delivery_timeout_s=0,
                                                    wait_for_delivery=False), logger=kafka_logger())
    raise FlowError("no dead-letter output: set dead_letters.kafka_topic or dead_letters.file")


def build_flow(settings: Settings, rules: CompiledRules, partitions: list[str] | None = None,
               open_log: OpenLog | None = None, store: StoreFactory | None = None,
               sinks: dict[str, SinkFactory] | None = None,
               dead_letters: SinkFactory | None = None) -> Dataflow:
    """The dataflow for `triggers run`; the keyword arguments replace Kafka/Redis/sinks in benchmarks
    and tests (sinks given that way get every status)."""
    r = settings.redis
    live_rules = LiveRules(settings.rules, rules, interval_s=settings.reload_interval_ms / 1000,
                           watch=settings.reload_rules)
    track_rules(live_rules)
    source = EngineSource(
        partitions if partitions is not None else kafka_partitions(settings),
        open_log or _kafka_log(settings),
        store or (lambda: RedisStore(r.client_url(), r.prefix, r.cluster, r.connection())),
        live_rules,
        batch_size=settings.kafka.batch_size,
        index_poll_ms=settings.timer_poll_ms,
        cache_size=settings.cache_size,
        exit_at_end=settings.exit_at_end,
    )
    flow = Dataflow("trigger-engine")
    batches = op.input("events", flow, source)
    outputs = op.flat_map_batch("evaluate", batches, _evaluate)
    split = op.branch("split", outputs, lambda item: isinstance(item, Trigger))
    configured = trigger_sinks(settings) if sinks is None else {name: (f, None) for name, f in sinks.items()}
    for name, (factory, statuses) in configured.items():
        op.output(f"sink_{name}", split.trues, ConnectorSink(name, factory, statuses))
    op.output("dead_letters", split.falses, ConnectorSink("dead_letters", dead_letters or dead_letter_sink(settings)))
    return flow


def serve_metrics(settings: Settings) -> None:
    """/metrics and /healthz, before anything else starts: a start that waits for Kafka or
    Redis already says so on /healthz."""
    if not settings.metrics_port:
        return
    port = settings.metrics_port + (settings.process_id or 0)
    try:
        serve(settings.metrics_host, port)
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
