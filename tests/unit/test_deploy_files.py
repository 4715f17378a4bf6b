"""The container files say what the code accepts: compose's engine settings load, the image
installs what CI tested. (The image itself is built and run by scripts/container_check.sh, opt-in:
tests/integration/test_container.py.)
The Grafana dashboard and the Prometheus alert rules under deploy/ are valid for their tools and
read only metrics the engine exports."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
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


def test_the_image_is_built_with_the_compiled_core_from_what_setup_py_compiles():
    """The build stage compiles by default and copies setup.py and every module it compiles; the
    image installs the wheel it made (whether that wheel holds the C extensions is checked by
    the build itself and by scripts/container_check.sh, which fails on a pure-Python image)."""
    # setup.py runs setup() only as a script; read as conftest's `compiled_modules` does, so the
    # test does not depend on the repository root being on sys.path (plain `pytest` does not add it)
    COMPILED_MODULES = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_modules")["COMPILED_MODULES"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    _, build, image = re.split(r"^FROM ", dockerfile, flags=re.M)
    assert " AS build" in build and "ARG TRIGGERS_COMPILE=1" in build and "--no-build-isolation" in build
    copied = re.findall(r"^COPY (\S+)/ ", build, re.M) + re.findall(r"^COPY ([^\n]*) \./$", build, re.M)[0].split()
    assert "setup.py" in copied
    assert all(module.split("/")[0] in copied for module in COMPILED_MODULES), (COMPILED_MODULES, copied)
    assert "COPY --from=build /wheels/" in image and "COPY engine/" not in image   # no pure source beside it


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


# -- deploy/: the Grafana dashboard and the Prometheus alert rules --------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "trigger-engine.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"


class GridPos(msgspec.Struct):
    h: int
    w: int
    x: int
    y: int


class Datasource(msgspec.Struct):
    type: str
    uid: str


class Target(msgspec.Struct):
    refId: str          # noqa: N815 (Grafana's names)
    expr: str
    datasource: Datasource
    legendFormat: str = ""   # noqa: N815


class Panel(msgspec.Struct):
    id: int
    type: str
    title: str
    gridPos: GridPos    # noqa: N815
    datasource: Datasource
    targets: list[Target]
    description: str = ""


class Variable(msgspec.Struct):
    name: str
    type: str
    query: Any = None


class Listing(msgspec.Struct):
    items: list[Any] = msgspec.field(name="list")


class TimeRange(msgspec.Struct):
    from_: str = msgspec.field(name="from")
    to: str = "now"


class Dashboard(msgspec.Struct):
    """Grafana's classic dashboard JSON model (the fields its documentation lists for a new
    dashboard; `id` null until saved, `uid` 8-40 characters), with the panels' parts we use."""

    id: int | None
    uid: str
    title: str
    tags: list[str]
    timezone: str
    editable: bool
    graphTooltip: int       # noqa: N815
    panels: list[Panel]
    time: TimeRange
    timepicker: dict[str, Any]
    templating: Listing
    annotations: Listing
    refresh: str
    schemaVersion: int      # noqa: N815
    version: int
    links: list[Any]


PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row", "heatmap"}


def test_the_dashboard_is_valid_grafana_dashboard_json():
    raw = json.loads(DASHBOARD.read_text())
    board = msgspec.convert(raw, Dashboard)      # required keys and their types, or a ValidationError
    assert 8 <= len(board.uid) <= 40 and board.title and board.schemaVersion >= 36
    variables = {v.name: v for v in msgspec.convert(board.templating.items, list[Variable])}
    assert variables["datasource"].type == "datasource" and variables["datasource"].query == "prometheus"
    assert board.panels and len({p.id for p in board.panels}) == len(board.panels), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for panel in board.panels:
        assert panel.type in PANEL_TYPES, (panel.title, panel.type)
        assert panel.targets, f"panel {panel.title!r} has no query"
        assert len({t.refId for t in panel.targets}) == len(panel.targets), f"{panel.title}: refIds must be unique"
        for ds in [panel.datasource] + [t.datasource for t in panel.targets]:
            assert ds.type == "prometheus" and ds.uid == "${datasource}", panel.title   # the variable, not a uid of ours
        g = panel.gridPos
        assert g.w > 0 and g.h > 0 and 0 <= g.x and g.x + g.w <= 24 and g.y >= 0, panel.title   # a 24-column grid
        for cell in ((x, y) for x in range(g.x, g.x + g.w) for y in range(g.y, g.y + g.h)):
            assert cell not in cells, f"panels {cells.get(cell)} and {panel.id} overlap"
            cells[cell] = panel.id


def test_the_dashboard_model_check_catches_what_grafana_would_refuse():
    raw = json.loads(DASHBOARD.read_text())
    for broken in ({k: v for k, v in raw.items() if k != "panels"},
                   {**raw, "panels": [{k: v for k, v in raw["panels"][0].items() if k != "targets"}]},
                   {**raw, "schemaVersion": "39"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(broken, Dashboard)


# The PromQL functions, aggregations and keywords the expressions may use; anything else in an
# expression is a metric name, and must be one the engine exports.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "rate", "irate", "increase",
    "delta", "deriv", "histogram_quantile", "max_over_time", "min_over_time", "avg_over_time", "absent",
    "clamp_min", "clamp_max", "time", "vector", "and", "or", "unless", "bool", "offset", "label_values",
}
# Prometheus records it per scraped target: the only metric not the engine's that an alert may use.
PROMETHEUS_OWN = {"up"}


def exported_metrics() -> set[str]:
    """Every sample name the engine's registry exposes, from its exposition text (the `# TYPE`
    lines are there even for a labelled metric that has no sample yet)."""
    from prometheus_client import REGISTRY
    from prometheus_client.exposition import generate_latest

    import engine.operators.metrics  # noqa: F401 (registers the engine's metrics)

    names: set[str] = set()
    suffixes = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("", "_sum", "_count")}
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name + s for s in suffixes.get(kind, ("",))}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana `label_values(metric, label)`) reads."""
    text = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)                     # strings
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)                  # label matchers, ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+|\b\d+(\.\d+)?([eE][+-]?\d+)?\b", "", text)   # Grafana variables, numbers
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)) - PROMQL_WORDS


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    return exprs + [v["definition"] for v in board["templating"]["list"] if v.get("definition")]


def alert_expressions() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_the_metric_name_check_finds_a_misspelt_name():
    assert metric_names('sum by (sink) (rate(triggers_relay_delivered_total{job=~"$job"}[$__rate_interval]))') == {
        "triggers_relay_delivered_total"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(triggers_batch_seconds_bucket[5m]))) > 1e3") == {
        "triggers_batch_seconds_bucket"}
    assert metric_names("triggers_event_total > 0 unless up == 0") - exported_metrics() == {"triggers_event_total", "up"}


def test_the_dashboard_and_the_alerts_use_only_metrics_the_engine_exports():
    exported = exported_metrics()
    for source, exprs, allowed in (("dashboard", dashboard_expressions(), exported),
                                   ("alerts", alert_expressions(), exported | PROMETHEUS_OWN)):
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{source}: no metric in {expr!r}"
            assert names <= allowed, f"{source}: {sorted(names - allowed)} not exported by the engine, in {expr!r}"
    used = set().union(*map(metric_names, dashboard_expressions() + alert_expressions()))
    # what operators watch (issue 16): lag, dead letters per sink, rules, Redis and Kafka errors, late events
    assert {"triggers_consumer_lag", "triggers_relay_lag", "triggers_relay_dead_letters_total",
            "triggers_dead_letters_total", "triggers_rules_valid", "triggers_rules_rejected_total",
            "triggers_redis_errors_total", "triggers_kafka_errors_total", "triggers_late_events_total",
            "triggers_duplicate_events_total"} <= used


DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def test_the_alert_rules_have_prometheus_rule_file_shape():
    """The rule file format (Prometheus' rulefmt): groups with a unique name and rules; an
    alerting rule has `alert` and `expr`, optionally `for` (a duration), `labels` and
    `annotations` (string maps); no other keys. Ours also carry a severity and both texts."""
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"} and doc["groups"]
    group_names, alert_names = set(), set()
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"] not in group_names
        group_names.add(group["name"])
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]) and rule["alert"] not in alert_names
            alert_names.add(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert "for" not in rule or DURATION.match(rule["for"]), rule["alert"]
            assert all(isinstance(k, str) and isinstance(v, str) for part in ("labels", "annotations")
                       for k, v in rule[part].items()), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def promtool() -> str | None:
    services = Path(os.environ.get("TE_SERVICES_DIR", ROOT / ".services"))
    unpacked = services / "promtool" / "usr" / "bin" / "promtool"   # scripts/promtool.sh
    return os.environ.get("PROMTOOL") or shutil.which("promtool") or (str(unpacked) if unpacked.exists() else None)


@pytest.mark.parametrize("check", [["check", "rules", ALERTS.name], ["check", "config", PROMETHEUS_CONFIG.name],
                                   ["test", "rules", ALERT_TESTS.name]], ids=" ".join)
def test_promtool_accepts_the_rules_and_their_unit_tests_pass(check):
    binary = promtool()
    if binary is None:
        pytest.skip("promtool is not installed (scripts/promtool.sh unpacks it from Debian's prometheus package)")
    res = subprocess.run([binary, *check], cwd=ALERTS.parent, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_compose_produces_with_the_engines_own_producer():
    """`docker compose run --rm produce` sends the sample through `triggers produce` (keyed by
    customer_id as the engine reads it), not a console producer with a key cut out by sed."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    produce = compose["services"]["produce"]
    assert produce["build"] == compose["services"]["engine"]["build"]
    command = produce["command"]
    assert command[0] == "produce" and command[command.index("--topic") + 1] == "customer-events"
    events = command[command.index("--events") + 1]
    assert (ROOT / "examples" / Path(events).name).is_file() and "./examples:/examples:ro" in produce["volumes"]
