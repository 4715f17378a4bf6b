"""`triggers export` and `triggers backfill` read the engine's settings as `triggers run` does
(`--config`, then TRIGGERS_* variables, then their flags), so they connect to Redis with its
TLS, credentials and prefix, and to Kafka with its security settings. Over fake clients: what
is checked is how they connect, not Redis or Kafka."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl"


class _FakeRedis:
    """What RedisStore asks of a client, with every round trip refused or empty."""

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.scanned: list[str] = []

    def register_script(self, _text: str):
        def call(**_kwargs):
            raise redis.ConnectionError("connection refused")
        return call

    def scan_iter(self, match: str, count: int):
        if self.refuse:
            raise redis.ConnectionError("connection refused")
        self.scanned.append(match)
        return iter(())

    def close(self) -> None:
        pass


@pytest.fixture
def connects(monkeypatch) -> list[dict]:
    """Every Redis client made, as {cluster, url, options, client}; no connection is opened."""
    made: list[dict] = []

    def factory(cluster: bool):
        def from_url(url: str, **options):
            client = _FakeRedis(refuse=False)
            made.append({"cluster": cluster, "url": url, "options": options, "client": client})
            return client
        return from_url

    monkeypatch.setattr(redis.Redis, "from_url", staticmethod(factory(False)))
    monkeypatch.setattr(RedisCluster, "from_url", staticmethod(factory(True)))
    for name in [n for n in os.environ if n.startswith("TRIGGERS_")]:
        monkeypatch.delenv(name)
    return made


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "triggers.toml"
    path.write_text(f"""
rules = "{ROOT / 'rules'}"
[kafka]
brokers = ["kafka-1.example:9093", "kafka-2.example:9093"]
topic = "shop-events"
extra = {{"security.protocol" = "SASL_SSL", "sasl.mechanism" = "PLAIN", "sasl.username" = "engine"}}
[redis]
url = "redis://cache.example:6380/3"
prefix = "shop"
username = "engine"
tls = true
tls_verify = false
""")
    return path


def test_export_connects_with_the_settings_files_tls_credentials_and_prefix(connects, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRIGGERS_REDIS__PASSWORD", "from-the-environment")
    assert main(["export", "--config", str(_config(tmp_path))]) == 0
    [made] = connects
    assert made["cluster"] is False and made["url"] == "rediss://cache.example:6380/3"
    assert made["options"] == {"username": "engine", "password": "from-the-environment", "ssl_cert_reqs": "none",
                               "decode_responses": False}
    assert made["client"].scanned == ["shop:s:{*"]
    assert "triggers export: 0 customer(s)" in capsys.readouterr().err


def test_export_flags_override_the_settings_file(connects, tmp_path, capsys, monkeypatch):
    argv = ["export", "--config", str(_config(tmp_path)), "--redis-url", "redis://other.example:7000",
            "--prefix", "te2", "--cluster", "--rules", str(ROOT / "rules"), "--customer", "c-31"]
    original = RedisCluster.from_url

    def refusing(url: str, **options):   # --customer reads with MGET: refused, as an unreachable Redis
        client = original(url, **options)
        client.mget_nonatomic = lambda _keys: (_ for _ in ()).throw(redis.ConnectionError("connection refused"))
        return client

    monkeypatch.setattr(RedisCluster, "from_url", staticmethod(refusing))
    assert main(argv) == 2
    [made] = connects
    assert made["cluster"] is True and made["url"] == "rediss://other.example:7000"   # tls = true still holds
    assert made["options"]["username"] == "engine"
    err = capsys.readouterr().err
    assert "triggers export: Redis at redis://other.example:7000: ConnectionError: connection refused" in err


def test_export_without_config_keeps_its_flags(connects, capsys):
    assert main(["export", "--rules", str(ROOT / "rules"), "--redis-url", "redis://127.0.0.1:6390/2",
                 "--prefix", "te-x"]) == 0
    [made] = connects
    assert made["url"] == "redis://127.0.0.1:6390/2" and made["options"] == {"decode_responses": False}
    assert made["client"].scanned == ["te-x:s:{*"]


def test_export_refuses_invalid_settings(connects, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[redis]\nurl = "http://nowhere"\n')
    assert main(["export", "--config", str(bad), "--rules", str(ROOT / "rules")]) == 2
    assert "is not a Redis URL" in capsys.readouterr().err and connects == []


def test_backfill_connects_to_redis_and_kafka_as_the_settings_file_says(connects, tmp_path, capsys, monkeypatch):
    import confluent_kafka

    consumers: list[dict] = []

    class FakeConsumer:
        def __init__(self, config: dict) -> None:
            consumers.append(config)

        def list_topics(self, topic: str, timeout: float):
            consumers[-1]["listed"] = topic

            class Meta:
                topics: dict = {}
            return Meta()

        def close(self) -> None:
            pass

    monkeypatch.setattr(confluent_kafka, "Consumer", FakeConsumer)
    monkeypatch.setenv("TRIGGERS_REDIS__PASSWORD", "s3cr3t-pw")
    argv = ["backfill", "--config", str(_config(tmp_path)), "--events", str(SAMPLE), "--partitions", "4"]
    assert main(argv) == 2   # the fake Redis refuses the first read
    [made] = connects
    assert made["url"] == "rediss://cache.example:6380/3"
    assert made["options"] == {"username": "engine", "password": "s3cr3t-pw", "ssl_cert_reqs": "none", "decode_responses": False}
    [consumer] = consumers
    assert consumer["bootstrap.servers"] == "kafka-1.example:9093,kafka-2.example:9093"
    assert consumer["listed"] == "shop-events"
    assert consumer["security.protocol"] == "SASL_SSL" and consumer["sasl.username"] == "engine"
    err = capsys.readouterr().err
    assert "triggers backfill: Redis at redis://cache.example:6380/3: ConnectionError: connection refused" in err
    assert "s3cr3t-pw" not in err


def test_backfill_flags_override_the_settings_file(connects, tmp_path, monkeypatch):
    seen: list = []
    monkeypatch.setattr("engine.cli.backfill._topic_ends", lambda kafka, n: seen.append(kafka) or [0] * n)
    argv = ["backfill", "--config", str(_config(tmp_path)), "--events", str(SAMPLE), "--partitions", "2",
            "--topic", "t2", "--brokers", "127.0.0.1:9092", "--redis-url", "redis://127.0.0.1:6390/1", "--prefix", "p2"]
    assert main(argv) == 2
    assert seen[0].topic == "t2" and seen[0].brokers == ["127.0.0.1:9092"]
    assert connects[0]["url"] == "rediss://127.0.0.1:6390/1"
