"""The one typed settings object of a live run: a TOML file, then environment variables.

Defaults work on a laptop with the project's services (`scripts/services.sh start`):
Kafka on 127.0.0.1:9092, Redis on 127.0.0.1:6379, the bundled `rules/`, triggers to the
Kafka topic `triggers` and dead letters to `dead-letters`, both on `kafka.brokers`.

Environment variables override the file: `TRIGGERS_<SECTION>__<KEY>` (double underscore
between levels, values parsed as TOML where they parse, else taken as strings), e.g.
`TRIGGERS_KAFKA__BROKERS='["10.0.0.5:9092"]'`, `TRIGGERS_REDIS__URL=redis://cache:6379/0`,
`TRIGGERS_WORKERS=2`, `TRIGGERS_SINKS__WEBHOOK__URL=https://ma.example.com/hooks/triggers`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from connectors.file import FileSinkConfig
from connectors.kafka import KafkaSinkConfig
from connectors.redis_stream import RedisStreamSinkConfig
from connectors.webhook import WebhookSinkConfig

ENV_PREFIX = "TRIGGERS_"


class KafkaSource(msgspec.Struct, forbid_unknown_fields=True):
    brokers: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:9092"])
    topic: str = "customer-events"          # events, keyed by customer id
    batch_size: int = 1000                  # messages per poll of a partition
    extra: dict[str, str] = {}              # librdkafka consumer settings, e.g. security.protocol


class RedisSettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "te"                      # every key of this engine starts with it
    cluster: bool = False


class Sinks(msgspec.Struct, forbid_unknown_fields=True):
    """Where triggers go; every configured sink gets every trigger (sent, held out, suppressed).

    With none configured, triggers go to the Kafka topic `triggers` on `kafka.brokers` (with
    `kafka.extra`); configuring any sink replaces that default.
    """

    kafka: KafkaSinkConfig | None = None
    webhook: WebhookSinkConfig | None = None
    redis_stream: RedisStreamSinkConfig | None = None
    file: FileSinkConfig | None = None


class DeadLetters(msgspec.Struct, forbid_unknown_fields=True):
    """Where undecodable events go: a Kafka topic, or a JSONL file (appended)."""

    kafka_topic: str | None = "dead-letters"
    file: str | None = None


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    rules: str = "rules"                    # rules directory
    kafka: KafkaSource = msgspec.field(default_factory=KafkaSource)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    sinks: Sinks = msgspec.field(default_factory=Sinks)   # none: the Kafka topic "triggers" on kafka.brokers
    dead_letters: DeadLetters = msgspec.field(default_factory=DeadLetters)
    workers: int = 1                        # worker threads in this process
    process_id: int | None = None           # with `addresses`: this process's index in the cluster
    addresses: list[str] = []               # host:port of every process of a multi-process cluster
    commit_interval_ms: int = 200           # how often state + offsets are committed (Bytewax epoch)
    timer_poll_ms: int = 100                # how often due deadlines are looked up while idle
    cache_size: int = 200_000               # customer states kept in memory per partition
    exit_at_end: bool = False               # stop once the input read at start-up is processed
    reload_rules: bool = True               # watch the rules directory and apply valid changes live
    reload_interval_ms: int = 500
    metrics_host: str = "127.0.0.1"         # /metrics and /healthz (0.0.0.0 in a container)
    metrics_port: int = 9464                # + process_id in a multi-process cluster; 0 turns it off
    log_level: str = "INFO"
    log_format: str = "text"                # or "json": one JSON object per line


class SettingsError(Exception):
    pass


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """File (optional) < environment < explicit overrides (command-line flags)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise SettingsError(f"cannot read settings file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{path}: {e}") from None
    for key, value in (env if env is not None else os.environ).items():
        if key.startswith(ENV_PREFIX):
            _set(data, key[len(ENV_PREFIX):].lower().split("__"), _env_value(value))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(data, dotted.split("."), value)
    try:
        return msgspec.convert(data, Settings)
    except msgspec.ValidationError as e:
        where = f" (from {path} and {ENV_PREFIX}* variables)" if path else f" (from {ENV_PREFIX}* variables)"
        raise SettingsError(f"invalid settings{where}: {e}") from None


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
