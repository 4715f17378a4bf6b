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
