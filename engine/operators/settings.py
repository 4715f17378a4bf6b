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
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from engine.operators.logs import add_secret, redact_url
from connectors.file import FileSinkConfig
from connectors.kafka.sink import KafkaSinkConfig
from connectors.redis_stream import RedisStreamSinkConfig
from connectors.webhook import WebhookSinkConfig

ENV_PREFIX = "TRIGGERS_"


class KafkaSource(msgspec.Struct, forbid_unknown_fields=True):
    brokers: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:9092"])
    topic: str = "customer-events"          # events, keyed by customer id
    batch_size: int = 1000                  # messages per poll of a partition
    extra: dict[str, str] = {}              # librdkafka consumer settings, e.g. security.protocol
    # Where a partition starts when neither Redis nor Kafka has a committed offset for it
    # (a first deployment): "earliest" replays the topic's history (and fires its triggers),
    # "latest" starts at its end. Logged loudly either way.
    start: Literal["earliest", "latest"] = "earliest"
    # The consumer group the engine records its committed offsets in, after each Redis commit:
    # what a start checks Redis against, so that a Redis that lost data is noticed. Default:
    # "trigger-engine-<redis.prefix>", one group per deployment, as the state it mirrors.
    group_id: str | None = None
    # A raw topic NOT keyed by customer id: re-key it exactly-once into `topic` first
    # (the repartition stage), and evaluate from `topic`.
    repartition_from: str | None = None

    def __post_init__(self) -> None:
        if not self.brokers:
            raise ValueError("kafka.brokers must name at least one host:port")
        if self.batch_size < 1:
            raise ValueError(f"kafka.batch_size must be at least 1, got {self.batch_size}")
        if self.repartition_from is not None:
            if self.repartition_from == self.topic:
                raise ValueError("kafka.repartition_from must be another topic than kafka.topic")
            if self.extra.get("isolation.level") == "read_uncommitted":
                raise ValueError("kafka.extra isolation.level = read_uncommitted would read the repartition "
                                 "stage's aborted transactions: leave it out (read_committed is the default)")


class RedisSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Where customer states, offsets and deadlines live. Credentials may be in the URL
    (`redis://user:password@host:6379/0`) or, better, in `username` / `password` (which
    override the URL's; `TRIGGERS_REDIS__PASSWORD` keeps them out of files). Logs never show
    a password. `tls` (or a `rediss://` URL) encrypts the connection; the `tls_*` files are
    PEM paths for a private CA and for client certificates."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "te"                      # every key of this engine starts with it
    cluster: bool = False
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True                 # false: accept any server certificate (testing only)

    def __post_init__(self) -> None:
        from redis.connection import parse_url

        try:
            parse_url(self.url)
        except ValueError as e:
            raise ValueError(f"redis.url {redact_url(self.url)!r} is not a Redis URL: {e} "
                             "(e.g. redis://127.0.0.1:6379/0)") from None
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"redis.{name}: no such file {path!r}")

    @property
    def tls_on(self) -> bool:
        return self.tls or self.url.startswith("rediss://")

    def client_url(self) -> str:
        """The URL redis-py connects with (`rediss://` when `tls` is set)."""
        if self.tls and self.url.startswith("redis://"):
            return "rediss://" + self.url[len("redis://"):]
        return self.url

    def connection(self) -> dict[str, Any]:
        """redis-py connection options beyond the URL (credentials, TLS)."""
        options: dict[str, Any] = {}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        if self.tls_on:
            options["ssl_cert_reqs"] = "required" if self.tls_verify else "none"
            if self.tls_ca_file:
                options["ssl_ca_certs"] = self.tls_ca_file
            if self.tls_cert_file:
                options["ssl_certfile"] = self.tls_cert_file
            if self.tls_key_file:
                options["ssl_keyfile"] = self.tls_key_file
        return options

    def shown(self) -> str:
        """The Redis location for log lines: no password, whichever way it was given."""
        return redact_url(self.url)


class Sinks(msgspec.Struct, forbid_unknown_fields=True):
    """Where triggers go. Each sink gets only `sent` triggers unless its `statuses` lists more
    (e.g. `statuses = ["sent", "held_out", "suppressed"]` for an analytics sink; SPEC §4).

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


    @property
    def consumer_group(self) -> str:
        """The consumer group offsets are recorded in (`kafka.group_id`, or one per Redis prefix)."""
        return self.kafka.group_id or f"trigger-engine-{self.redis.prefix}"


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
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as e:
        where = f" (from {path} and {ENV_PREFIX}* variables)" if path else f" (from {ENV_PREFIX}* variables)"
        raise SettingsError(f"invalid settings{where}: {e}") from None
    declare_secrets(settings)
    return settings


_SECRET_WORDS = ("password", "secret", "token", "key", "credential")


def declare_secrets(settings: Settings) -> None:
    """Every credential of the settings is masked in the log (engine.logs.add_secret)."""
    r = settings.redis
    add_secret(r.password)
    add_secret(urlsplit(r.url).password)
    extras = [settings.kafka.extra]
    s = settings.sinks
    if s.kafka is not None:
        extras.append(s.kafka.extra)
    if s.redis_stream is not None:
        add_secret(urlsplit(s.redis_stream.url).password)
    if s.webhook is not None:
        add_secret(s.webhook.secret)
        add_secret(urlsplit(s.webhook.url).password)
        for name, value in s.webhook.headers.items():
            if name.lower() in ("authorization", "proxy-authorization") or any(w in name.lower() for w in _SECRET_WORDS):
                add_secret(value)
                add_secret(value.split(" ", 1)[-1])   # "Bearer <token>": the token alone too
    for extra in extras:
        for name, value in extra.items():
            if any(w in name.lower() for w in _SECRET_WORDS):
                add_secret(value)


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
