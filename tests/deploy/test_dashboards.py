"""The observability configs load, and every dashboard query names a metric the services emit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from services.common import metrics

OBS = Path(__file__).resolve().parents[2] / "deploy" / "observability"
PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "max", "min", "avg", "by", "without", "histogram_quantile",
    "clamp_min", "clamp_max", "ignoring", "group_left", "group_right", "on", "le", "count",
}  # fmt: skip


def emitted() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|ignoring|on|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"e\d*", w)}


def test_every_panel_queries_metrics_the_services_emit() -> None:
    dashboards = sorted((OBS / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    known = emitted()
    for path in dashboards:
        board = json.loads(path.read_text())
        assert board["panels"]
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                names = metric_names(target["expr"])
                assert names, target["expr"]
                unknown = names - known
                assert not unknown, f"{path.name} / {panel['title']}: {sorted(unknown)}"


def test_collector_prometheus_and_grafana_configs_load() -> None:
    collector = yaml.safe_load((OBS / "otel-collector.yaml").read_text())
    traces = collector["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"] and "spanmetrics" in traces["exporters"]
    assert traces["processors"][0] == "memory_limiter" and "batch" in traces["processors"]
    for name in ("prometheus-k8s.yml", "prometheus-compose.yml"):
        assert yaml.safe_load((OBS / name).read_text())["scrape_configs"]
    datasources = yaml.safe_load((OBS / "grafana/provisioning/datasources/datasources.yaml").read_text())
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    destination = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"]
    assert by_uid[destination]["type"] == "jaeger"
