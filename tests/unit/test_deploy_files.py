"""The container files say what the code accepts: compose's engine settings load, the image
installs what CI tested. (No Docker engine runs here, so the image itself is not built.)"""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.operators.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_engine_environment_is_valid_settings():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    env = compose["services"]["engine"]["environment"]
    settings = load_settings(env={k: str(v) for k, v in env.items()})
    assert settings.kafka.brokers == ["kafka:9092"]
    assert settings.redis.url == "redis://redis:6379/0"
    assert settings.sinks.kafka is not None and settings.sinks.kafka.topic == "triggers"
    assert settings.log_format == "json"
    topics = compose["services"]["topics"]["command"][0]
    assert settings.kafka.topic in topics and settings.sinks.kafka.topic in topics


def test_dockerfile_installs_pinned_versions_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile and "USER triggers" in dockerfile
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["bytewax"] == "0.21.1"
    from importlib.metadata import version
    assert version("msgspec") == pins["msgspec"]


def test_the_scale_out_compose_file_is_one_cluster_of_valid_settings_on_enough_partitions():
    """deploy/compose-scale.yaml: every engine replica loads as valid settings, the replicas are
    process 0..N-1 of one address list naming them in order, share one Redis Cluster and prefix,
    publish their own metrics port, and the topic has at least a partition per process."""
    compose = yaml.safe_load((ROOT / "deploy" / "compose-scale.yaml").read_text())
    services = compose["services"]
    engines = sorted(name for name in services if name.startswith("engine-"))
    assert len(engines) >= 2
    loaded = [load_settings(env={k: str(v) for k, v in services[name]["environment"].items()}) for name in engines]
    assert [s.process_id for s in loaded] == list(range(len(engines)))
    for name, settings in zip(engines, loaded):
        assert [a.split(":")[0] for a in settings.addresses] == [services[e]["hostname"] for e in engines]
        assert settings.redis.cluster and settings.redis.prefix == loaded[0].redis.prefix
        assert settings.redis.url.split("//")[1].split(":")[0] in services   # a node of the cluster
        port = settings.metrics_port + settings.process_id
        assert services[name]["ports"] == [f"{port}:{port}"] and settings.metrics_host == "0.0.0.0"
    topics = services["topics"]["command"][0]
    assert loaded[0].kafka.topic in topics
    assert int(topics.split("--partitions")[1].split(";")[0]) >= len(engines)
    create = services["redis-cluster"]["command"][0]
    nodes = [n for n in services if n.startswith("redis-") and n != "redis-cluster"]
    assert len(nodes) >= 3 and all(f"getent hosts {n}" in create for n in nodes)
