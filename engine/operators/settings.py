"""The one typed settings object of a live run: a TOML file, then environment variables.

Defaults work on a laptop with the project's services (`scripts/services.sh start`):
Kafka on 127.0.0.1:9092, Redis on 127.0.0.1:6379, the bundled `rules/`, triggers to the
Kafka topic `triggers` and dead letters to `dead-letters`, both on `kafka.brokers`.

Environment variables override the file: `TRIGGERS_<SECTION>__<KEY>` (double underscore
between levels, values parsed as TOML where they parse, else taken as strings), e.g.
`TRIGGERS_KAFKA__BROKERS='["10.0.0.5:9092"]'`, `TRIGGERS_REDIS__URL=redis://cache:6379/0`,
`TRIGGERS_WORKERS=2`, `TRIGGERS_SINKS__WEBHOOK__URL=https://ma.example.com/hooks/triggers`.

Every field carries a one-line `Doc`; `triggers run --help` lists the keys from these structs
(engine.cli.settings_help), so a new field is documented where it is declared.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from connectors.file import FileSinkConfig
from connectors.kafka.sink import KafkaSinkConfig
from connectors.redis_stream import RedisStreamSinkConfig
from connectors.webhook import WebhookSinkConfig
from engine.errors import EngineError
from engine.operators.logs import add_secret, redact_url

ENV_PREFIX = "TRIGGERS_"


def Doc(text: str) -> msgspec.Meta:
    """A field's one-line documentation (as PEP 727's `Doc`), kept on the type where msgspec's
    inspection finds it: `triggers run --help` prints it (engine.cli.settings_help)."""
    return msgspec.Meta(description=text)


class KafkaSource(msgspec.Struct, forbid_unknown_fields=True):
    """Where events come from: a topic keyed by customer id."""

    brokers: Annotated[list[str], Doc("Kafka bootstrap servers, host:port")] = msgspec.field(
        default_factory=lambda: ["127.0.0.1:9092"])
    topic: Annotated[str, Doc("the events, keyed by customer id (mis-keyed messages are dead letters)")] = (
        "customer-events")
    batch_size: Annotated[int, Doc("messages per poll of a partition")] = 1000
    extra: Annotated[dict[str, str], Doc("librdkafka consumer settings: security.protocol, sasl.*, ssl.*")] = {}
    start: Annotated[Literal["earliest", "latest"], Doc(
        "where a partition starts when neither Redis nor Kafka has its offset (a first deployment): "
        "earliest replays the topic's history (and fires its triggers), latest starts at its end")] = "earliest"
    group_id: Annotated[str | None, Doc(
        "the consumer group the committed offsets are recorded in, after each Redis commit (the state-loss "
        "check); unset: trigger-engine-<redis.prefix>, one group per deployment")] = None
    repartition_from: Annotated[str | None, Doc(
        "a raw topic NOT keyed by customer id: re-keyed exactly once into `topic` first (the repartition "
        "stage), evaluated from `topic`")] = None

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

    url: Annotated[str, Doc("customer states, offsets and deadlines; the server must persist "
                            "(appendonly yes) and not evict keys")] = "redis://127.0.0.1:6379/0"
    prefix: Annotated[str, Doc("every key of this engine starts with it")] = "te"
    cluster: Annotated[bool, Doc("url names a node of a Redis Cluster")] = False
    username: Annotated[str | None, Doc("overrides the URL's user")] = None
    password: Annotated[str | None, Doc("overrides the URL's; best set by its variable (never logged)")] = None
    tls: Annotated[bool, Doc("encrypt the connection (as a rediss:// URL does)")] = False
    tls_ca_file: Annotated[str | None, Doc("PEM file of a private CA")] = None
    tls_cert_file: Annotated[str | None, Doc("PEM file of a client certificate")] = None
    tls_key_file: Annotated[str | None, Doc("PEM file of the client certificate's key")] = None
    tls_verify: Annotated[bool, Doc("false: accept any server certificate (testing only)")] = True

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

    kafka: Annotated[KafkaSinkConfig | None, Doc(
        "a Kafka topic; delivery_timeout_s bounds one delivery attempt (the relay tries again for as long "
        "as the broker is down); triggers refused for good go to dead_letter_path")] = None
    webhook: Annotated[WebhookSinkConfig | None, Doc(
        "HTTP POSTs, signed (HMAC-SHA256 header) with `secret`; triggers refused for good go to "
        "dead_letter_path (default webhook-dead-letters.jsonl)")] = None
    redis_stream: Annotated[RedisStreamSinkConfig | None, Doc("a Redis stream")] = None
    file: Annotated[FileSinkConfig | None, Doc("a JSONL file, appended")] = None


class DeadLetters(msgspec.Struct, forbid_unknown_fields=True):
    """Where undecodable events go: a Kafka topic, or a JSONL file (appended)."""

    kafka_topic: Annotated[str | None, Doc("a topic on kafka.brokers")] = "dead-letters"
    file: Annotated[str | None, Doc("a JSONL file, appended; when set, used instead of kafka_topic")] = None
    dead_letter_path: Annotated[str | None, Doc(
        "where dead letters that output refuses for good go (unset: dead_letters-dead-letters.jsonl)")] = None


class RelaySettings(msgspec.Struct, forbid_unknown_fields=True):
    """How each sink's relay delivers from the partitions' outboxes (SPEC §6): small batches, a
    cursor saved after each; transient failures retried with capped backoff for as long as they
    last, permanent refusals to the sink's dead-letter file (`triggers resend` sends them again)."""

    batch_size: Annotated[int, msgspec.Meta(ge=1), Doc(
        "items a relay has in flight at once: what a crash can send twice, per sink")] = 20
    backoff_base_s: Annotated[float, msgspec.Meta(gt=0), Doc(
        "first wait before a failed delivery is tried again (doubling, with jitter)")] = 0.1
    backoff_max_s: Annotated[float, msgspec.Meta(gt=0), Doc(
        "longest wait between two tries of a failing delivery (it is retried for ever); a webhook's own "
        "backoff_base_s / backoff_max_s pace its relay instead")] = 10.0
    idle_check_ms: Annotated[int, msgspec.Meta(ge=1), Doc(
        "how often an idle relay looks at its outboxes unasked (commits wake it at once)")] = 1000
    outbox_max_entries: Annotated[int, msgspec.Meta(ge=1), Doc(
        "entries a partition's outbox may hold before the partition pauses (reads nothing) until its "
        "relays bring it down to half; bounds Redis's memory while a sink is down")] = 100_000


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    """Everything a live run is told; `triggers run --help` lists it from these fields."""

    rules: Annotated[str, Doc("rules directory (or one file)")] = "rules"
    kafka: Annotated[KafkaSource, Doc("where events come from")] = msgspec.field(default_factory=KafkaSource)
    redis: Annotated[RedisSettings, Doc("where customer states, offsets and deadlines live")] = msgspec.field(
        default_factory=RedisSettings)
    sinks: Annotated[Sinks, Doc(
        "where triggers go; each sink gets only `sent` triggers unless its `statuses` lists more "
        "(held_out, suppressed: an analytics sink); none configured: the Kafka topic triggers on "
        "kafka.brokers, configuring any replaces that default")] = msgspec.field(default_factory=Sinks)
    dead_letters: Annotated[DeadLetters, Doc("where undecodable events go")] = msgspec.field(
        default_factory=DeadLetters)
    relay: Annotated[RelaySettings, Doc(
        "how triggers go from the outbox to each sink: batches, retries, the outbox's bound")] = msgspec.field(
        default_factory=RelaySettings)
    processes: Annotated[int, msgspec.Meta(ge=1), Doc(
        "engine processes `triggers run` starts on this machine as one cluster (each on part of the "
        "partitions); processes add speed, worker threads do not (they share one interpreter)")] = 1
    workers: Annotated[int, Doc("worker threads in each process")] = 1
    process_id: Annotated[int | None, Doc("with `addresses`: this process's index in the cluster")] = None
    addresses: Annotated[list[str], Doc("host:port of every process of a multi-process cluster")] = []
    commit_interval_ms: Annotated[int, Doc(
        "how often state + offsets are committed (a Bytewax epoch; the replay window after a crash)")] = 200
    timer_poll_ms: Annotated[int, Doc("how often due deadlines are looked up in Redis while idle")] = 100
    cache_size: Annotated[int, Doc("customer states kept in memory per partition")] = 200_000
    exit_at_end: Annotated[bool, Doc("stop once the input present at start-up is processed")] = False
    reload_rules: Annotated[bool, Doc(
        "watch the rules directory and apply valid changes live (invalid ones are rejected)")] = True
    reload_interval_ms: Annotated[int, Doc("how often the rules directory is checked")] = 500
    metrics_host: Annotated[str, Doc("/metrics (Prometheus) and /healthz (0.0.0.0 in a container)")] = "127.0.0.1"
    metrics_port: Annotated[int, Doc("+ process_id in a multi-process cluster; 0 turns them off")] = 9464
    profile_api_token: Annotated[str | None, Doc(
        "GET /customers/{id} on the metrics port (the profile API) asks `Authorization: Bearer <it>`; "
        "unset: no token asked (set it whenever metrics_host is reachable from outside)")] = None
    log_level: Annotated[str, Doc("DEBUG, INFO, WARNING or ERROR")] = "INFO"
    log_format: Annotated[str, Doc("text, or json: one JSON object per line")] = "text"

    @property
    def consumer_group(self) -> str:
        """The consumer group offsets are recorded in (`kafka.group_id`, or one per Redis prefix)."""
        return self.kafka.group_id or f"trigger-engine-{self.redis.prefix}"


class SettingsError(EngineError):
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
    add_secret(settings.profile_api_token)
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
