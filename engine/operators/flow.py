"""The live dataflow, built from the settings: source -> evaluate -> sinks.

    events (EngineSource: a batch per poll of each partition, on its worker)
      -> evaluate (flat_map_batch: decode, load, evaluate; no exchange between workers)
      -> branch: triggers -> every configured sink; dead letters -> their output
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from confluent_kafka.admin import AdminClient

from connectors.file import FileSink, FileSinkConfig
from connectors.kafka import KafkaSink, KafkaSinkConfig
from connectors.redis_stream import RedisStreamSink
from connectors.webhook import WebhookSink
from engine.decode import DeadLetter
from engine.operators.log import KafkaPartitionLog
from engine.operators.metrics import serve, track_rules
from engine.operators.partition import Batch
from engine.operators.sinks import Connector, ConnectorSink
from engine.operators.source import EngineSource, OpenLog, StoreFactory
from engine.rules.compiler import CompiledRules
from engine.rules.reload import LiveRules
from engine.settings import Settings
from engine.state.redis import RedisStore
from engine.triggers import Trigger


class FlowError(Exception):
    pass


def kafka_partitions(settings: Settings) -> list[str]:
    """The event topic's partitions as source partition names (`<topic>-<n>`)."""
    k = settings.kafka
    admin = AdminClient({"bootstrap.servers": ",".join(k.brokers), **k.extra})
    meta = admin.list_topics(k.topic, timeout=30)
    topic = meta.topics.get(k.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        why = topic.error if topic is not None and topic.error is not None else "no partitions"
        raise FlowError(f"Kafka topic {k.topic!r} on {','.join(k.brokers)} is not usable: {why} "
                        "(create it, keyed by customer id, or set kafka.topic)")
    return [f"{k.topic}-{p}" for p in sorted(topic.partitions)]


def _kafka_log(settings: Settings) -> OpenLog:
    k = settings.kafka

    def open_log(name: str, start: int | None) -> KafkaPartitionLog:
        return KafkaPartitionLog(k.brokers, k.topic, int(name.rsplit("-", 1)[1]), start, k.extra)

    return open_log


def _evaluate(batches: list[Batch]) -> list[Trigger | DeadLetter]:
    if len(batches) == 1:
        return batches[0].worker.process(batches[0])
    return [item for b in batches for item in b.worker.process(b)]


def trigger_sinks(settings: Settings) -> dict[str, Callable[[int], Connector]]:
    """The configured sinks; with none configured, the Kafka topic `triggers` on the event brokers.

    Live, every sink's deliveries are awaited before the state behind them commits
    (`settle_sinks`), so a Kafka sink does not also wait per batch (`wait_for_delivery` off), and
    a webhook sink without a dead-letter file gets `webhook-dead-letters.jsonl`: one trigger the
    receiver refuses for good must not stop the engine and then stop it again after every restart.
    """
    s = settings.sinks
    sinks: dict[str, Callable[[int], Connector]] = {}
    kafka = s.kafka
    if kafka is None and s.webhook is None and s.redis_stream is None and s.file is None:
        kafka = KafkaSinkConfig(brokers=settings.kafka.brokers, topic="triggers", extra=settings.kafka.extra,
                                delivery_timeout_s=0)   # during a Kafka outage: wait, do not stop
    if kafka is not None:
        sinks["kafka"] = lambda _w, c=kafka: KafkaSink(msgspec.structs.replace(c, wait_for_delivery=False))
    if s.webhook is not None:
        webhook = s.webhook
        if webhook.dead_letter_path is None:
            webhook = msgspec.structs.replace(webhook, dead_letter_path="webhook-dead-letters.jsonl")
            logging.getLogger("engine").info("webhook triggers that fail for good go to %s", webhook.dead_letter_path)
        sinks["webhook"] = lambda _w, c=webhook: WebhookSink(c)
    if s.redis_stream is not None:
        sinks["redis_stream"] = lambda _w, c=s.redis_stream: RedisStreamSink(c)
    if s.file is not None:
        # workers append to one file: each batch is one write() on an O_APPEND file
        sinks["file"] = lambda _w, c=s.file: FileSink(FileSinkConfig(path=c.path, append=True))
    return sinks


def dead_letter_sink(settings: Settings) -> Callable[[int], Connector]:
    d = settings.dead_letters
    if d.file:
        return lambda _w: FileSink(FileSinkConfig(path=d.file, append=True))
    if d.kafka_topic:
        return lambda _w: KafkaSink(KafkaSinkConfig(brokers=settings.kafka.brokers, topic=d.kafka_topic,
                                                    extra=settings.kafka.extra, delivery_timeout_s=0,
                                                    wait_for_delivery=False))
    raise FlowError("no dead-letter output: set dead_letters.kafka_topic or dead_letters.file")


def build_flow(settings: Settings, rules: CompiledRules, partitions: list[str] | None = None,
               open_log: OpenLog | None = None, store: StoreFactory | None = None,
               sinks: dict[str, Callable[[int], Connector]] | None = None,
               dead_letters: Callable[[int], Connector] | None = None) -> Dataflow:
    """The dataflow for `triggers run`; the keyword arguments replace Kafka/Redis/sinks in benchmarks."""
    r = settings.redis
    live_rules = LiveRules(settings.rules, rules, interval_s=settings.reload_interval_ms / 1000,
                           watch=settings.reload_rules)
    track_rules(live_rules)
    source = EngineSource(
        partitions if partitions is not None else kafka_partitions(settings),
        open_log or _kafka_log(settings),
        store or (lambda: RedisStore(r.url, r.prefix, r.cluster)),
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
    for name, factory in (sinks if sinks is not None else trigger_sinks(settings)).items():
        op.output(f"sink_{name}", split.trues, ConnectorSink(name, factory))
    op.output("dead_letters", split.falses, ConnectorSink("dead_letters", dead_letters or dead_letter_sink(settings)))
    return flow


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
    if settings.metrics_port:
        port = settings.metrics_port + (settings.process_id or 0)
        try:
            serve(settings.metrics_host, port)
        except OSError as e:   # the engine matters more than its metrics: run on, say so loudly
            logging.getLogger("engine.metrics").error("cannot serve metrics on %s:%d: %s", settings.metrics_host,
                                                      port, e)
    cli_main(flow, **kwargs)
