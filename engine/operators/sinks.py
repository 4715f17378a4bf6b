"""The configured sinks as their relays need them (`SinkSpec`s), and the dataflow's one output.

Triggers no longer leave through Bytewax outputs: the evaluate step puts them in the partition's
outbox, committed with the states (`engine.operators.partition`), and each sink's relay delivers
from there (`engine.operators.outbox`). A Bytewax dataflow still needs an output step to run, so
the evaluate step ends in `NoOutput`, which the evaluate step never gives anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.base import Sink
from connectors.file import FileSink, FileSinkConfig
from connectors.kafka.sink import KafkaSink, KafkaSinkConfig
from connectors.redis_stream import RedisStreamSink, RedisStreamSinkConfig
from connectors.webhook import WebhookSink, WebhookSinkConfig
from engine.operators.logs import kafka_logger
from engine.operators.outbox import SinkSpec, default_dead_letter_path
from engine.operators.settings import Settings
from engine.state.outbox import ItemKind

__all__ = ["DEAD_LETTERS", "NoOutput", "SinkFactory", "dead_letter_spec", "given_specs", "trigger_specs"]

log = logging.getLogger("engine")

SinkFactory = Callable[[int], Sink]   # worker index -> a connector (the tests' and benchmarks' hook)

DEAD_LETTERS = "dead_letters"
"""The relay of the events' dead letters (`dead_letters` in the settings)."""


def trigger_specs(settings: Settings, quiet: bool = False) -> list[SinkSpec]:
    """The configured trigger sinks, each with the statuses it delivers (only `sent` unless its
    `statuses` says more) and its dead-letter file; with none configured, the Kafka topic
    `triggers` on the event brokers. Each is logged unless `quiet`."""
    s = settings.sinks
    specs: list[SinkSpec] = []
    kafka = s.kafka
    if kafka is None and s.webhook is None and s.redis_stream is None and s.file is None:
        kafka = KafkaSinkConfig(brokers=settings.kafka.brokers, topic="triggers", extra=settings.kafka.extra)
    if kafka is not None:
        def kafka_sink(c: KafkaSinkConfig = kafka) -> KafkaSink:
            return KafkaSink(c, logger=kafka_logger())

        specs.append(SinkSpec("kafka", kafka_sink, ItemKind.TRIGGER, frozenset(kafka.statuses), kafka.dead_letter_path))
    if s.webhook is not None:
        def webhook_sink(c: WebhookSinkConfig = s.webhook) -> WebhookSink:
            return WebhookSink(msgspec.structs.replace(c, dead_letter_path=None))   # the relay writes that file

        specs.append(SinkSpec("webhook", webhook_sink, ItemKind.TRIGGER, frozenset(s.webhook.statuses),
                              s.webhook.dead_letter_path, (s.webhook.backoff_base_s, s.webhook.backoff_max_s)))
    if s.redis_stream is not None:
        def redis_stream_sink(c: RedisStreamSinkConfig = s.redis_stream) -> RedisStreamSink:
            return RedisStreamSink(c)

        specs.append(SinkSpec("redis_stream", redis_stream_sink, ItemKind.TRIGGER, frozenset(s.redis_stream.statuses),
                              s.redis_stream.dead_letter_path))
    if s.file is not None:
        # processes append to one file: each batch is one write() on an O_APPEND file
        def file_sink(c: FileSinkConfig = s.file) -> FileSink:
            return FileSink(FileSinkConfig(path=c.path, append=True))

        specs.append(SinkSpec("file", file_sink, ItemKind.TRIGGER, frozenset(s.file.statuses)))
    for spec in specs if not quiet else ():
        log.info("sink %s delivers %s triggers; refused ones go to %s", spec.name,
                 ", ".join(sorted(spec.statuses or ())), spec.dead_letter_path or default_dead_letter_path(spec.name))
    return specs


def dead_letter_spec(settings: Settings) -> SinkSpec | None:
    """The relay of the events' dead letters: a JSONL file, or a Kafka topic on the event
    brokers; None when the settings name neither."""
    d = settings.dead_letters
    file, topic = d.file, d.kafka_topic   # locals, so that the closures keep the narrowing below
    if file:
        def open_file() -> FileSink:
            return FileSink(FileSinkConfig(path=file, append=True))

        return SinkSpec(DEAD_LETTERS, open_file, ItemKind.DEAD_LETTER, None, d.dead_letter_path)
    if topic:
        def open_topic() -> KafkaSink:
            return KafkaSink(KafkaSinkConfig(brokers=settings.kafka.brokers, topic=topic, extra=settings.kafka.extra),
                             logger=kafka_logger())

        return SinkSpec(DEAD_LETTERS, open_topic, ItemKind.DEAD_LETTER, None, d.dead_letter_path)
    return None


def given_specs(sinks: dict[str, SinkFactory], dead_letters: SinkFactory | None) -> list[SinkSpec]:
    """Sinks given to `build_flow` directly (tests, benchmarks): every trigger status each."""
    specs = [SinkSpec(name, partial(factory, 0), ItemKind.TRIGGER, None) for name, factory in sinks.items()]
    if dead_letters is not None:
        specs.append(SinkSpec(DEAD_LETTERS, partial(dead_letters, 0), ItemKind.DEAD_LETTER, None))
    return specs


class NoOutput(DynamicSink):
    """The dataflow's output step, which nothing reaches (see the module docstring)."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Nothing:
        return _Nothing()


class _Nothing(StatelessSinkPartition):
    def write_batch(self, items: list[Any]) -> None:
        if items:   # the evaluate step emits nothing: an item here is a bug in the wiring
            raise AssertionError(f"{len(items)} item(s) reached the dataflow's output; they belong in the outbox")
