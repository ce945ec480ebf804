"""Observability: dashboards read metrics that exist, exemplars lead to traces, the configs load."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import start_http_server
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from services.common import metrics
from services.launcher import SERVICES
from tests.deploy.conftest import DEPLOY, OBS, by_kind, free_port, program, rendered
from tests.deploy.promql import metric_names
from tests.deploy.sources import (
    RABBITMQ_DETAILED,
    RABBITMQ_FAMILIES,
    collector_config,
    service_exemplar_histograms,
    service_metrics,
    span_metrics,
)

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TEST_STAGE = "deploy-test-exemplar"


def dashboards() -> list[tuple[str, dict[str, Any]]]:
    paths = sorted((OBS / "grafana" / "dashboards").glob("*.json"))
    assert paths
    return [(p.name, json.loads(p.read_text())) for p in paths]


def datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((OBS / "grafana/provisioning/datasources/datasources.yaml").read_text())
    return {d["uid"]: d for d in doc["datasources"]}


def test_every_panel_queries_metrics_that_exist() -> None:
    spans, _ = span_metrics(collector_config(OBS))
    known = service_metrics() | spans | RABBITMQ_DETAILED
    for name, board in dashboards():
        assert board["panels"]
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] in datasources(), panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                names = metric_names(target["expr"])
                assert names, target["expr"]
                assert names <= known, f"{name} / {panel['title']}: {sorted(names - known)}"


def test_red_panels_come_from_span_metrics() -> None:
    spans, _ = span_metrics(collector_config(OBS))
    used = {
        n for _, board in dashboards() for p in board["panels"] for t in p["targets"] for n in metric_names(t["expr"])
    }
    calls = {n for n in spans if n.endswith("_calls_total")}
    buckets = {n for n in spans if n.endswith("_bucket")}
    assert calls <= used and buckets <= used, "rate, errors and duration per service from the spans"


def test_every_exemplar_link_resolves() -> None:
    """A panel shows exemplars only where the series carry them, and their trace id opens Jaeger."""
    _, span_exemplars = span_metrics(collector_config(OBS))
    carriers = service_exemplar_histograms() | span_exemplars
    assert {"dexengine_stage_seconds_bucket", "dexengine_outbox_lag_seconds_bucket"} <= carriers
    sources = datasources()
    with_exemplars = 0
    for name, board in dashboards():
        for panel in board["panels"]:
            for target in panel["targets"]:
                if not target.get("exemplar"):
                    continue
                with_exemplars += 1
                names = metric_names(target["expr"])
                assert names <= carriers, f"{name} / {panel['title']}: {sorted(names - carriers)} carry no exemplars"
                links = sources[panel["datasource"]["uid"]]["jsonData"]["exemplarTraceIdDestinations"]
                assert [link["name"] for link in links] == [metrics.EXEMPLAR_LABEL]
                assert all(sources[link["datasourceUid"]]["type"] == "jaeger" for link in links)
    assert with_exemplars >= 3
    # The collector's span metrics name their exemplar label trace_id too (spanmetrics + prometheus exporter).
    assert metrics.EXEMPLAR_LABEL == "trace_id"


def test_services_serve_trace_id_exemplars_over_openmetrics() -> None:
    """A real /metrics endpoint of the services' registry, scraped as Prometheus does."""
    provider = TracerProvider()  # sampled by default; not installed globally
    with provider.get_tracer("deploy-test").start_as_current_span("stage") as span:
        metrics.STAGE_SECONDS.labels(TEST_STAGE).observe(0.042)
        trace_id = format(span.get_span_context().trace_id, "032x")
    unsampled = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False, trace_flags=TraceFlags(0))
    with trace.use_span(NonRecordingSpan(unsampled)):
        metrics.STAGE_SECONDS.labels(TEST_STAGE).observe(7)  # an unsampled trace is never stored: no exemplar
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.REGISTRY)
    try:

        def scrape(accept: str | None) -> tuple[str, str]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
            if accept:
                request.add_header("Accept", accept)
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.headers["Content-Type"], response.read().decode()

        content_type, text = scrape(OPENMETRICS)
        assert content_type.startswith("application/openmetrics-text")
        exemplars = {
            sample.labels["le"]: sample.exemplar
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "dexengine_stage_seconds_bucket" and sample.labels.get("stage") == TEST_STAGE
        }
        assert exemplars["0.05"].labels == {metrics.EXEMPLAR_LABEL: trace_id}
        assert exemplars["0.05"].value == 0.042
        assert exemplars["10.0"] is None, "the unsampled observation left no exemplar"
        content_type, classic = scrape(None)
        assert content_type.startswith("text/plain") and "# {" not in classic, "classic text has no exemplars"
        body, negotiated = metrics.exposition_for(OPENMETRICS)
        assert negotiated.startswith("application/openmetrics-text") and trace_id in body.decode()
    finally:
        server.shutdown()
        thread.join(5)


def test_collector_configs() -> None:
    base = collector_config(OBS)
    assert "namespace" not in base["exporters"]["prometheus"], "one namespace only: the connector's"
    assert base["exporters"]["prometheus"]["enable_open_metrics"] is True
    traces = base["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"] and "spanmetrics" in traces["exporters"]
    assert traces["processors"][0] == "memory_limiter" and "batch" in traces["processors"]
    k8s = yaml.safe_load((OBS / "tracing" / "otel-collector-k8s.yaml").read_text())
    merged = k8s["service"]["pipelines"]["traces"]
    assert merged["processors"] == ["memory_limiter", "k8sattributes", "batch"]
    processors = set(base["processors"]) | set(k8s["processors"])
    assert set(merged["processors"]) <= processors and set(merged["exporters"]) <= set(base["exporters"]) | {
        "spanmetrics"
    }
    assert k8s["processors"]["k8sattributes"]["filter"]["namespace"] == "${env:K8S_NAMESPACE}"
    for name in ("dev", "prod"):
        objects = rendered(name)
        pod = by_kind(objects, "Deployment")["otel-collector"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (mount,) = container["volumeMounts"]
        assert container["args"] == [
            f"--config={mount['mountPath']}/config.yaml",
            f"--config={mount['mountPath']}/k8s.yaml",
        ]
        assert pod["serviceAccountName"] == "otel-collector"
        role = by_kind(objects, "Role")["otel-collector-k8sattributes"]
        granted = {r for rule in role["rules"] for r in rule["resources"]}
        assert granted == {"pods", "replicasets"}
        config = by_kind(objects, "ConfigMap")["dexengine-config"]["data"]
        assert config["OTEL_TRACES_EXPORTER"] == "otlp", f"{name}: tracing on"
        assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"


def test_jaeger_memory_is_capped_everywhere() -> None:
    for name in ("dev", "prod"):
        (container,) = by_kind(rendered(name), "Deployment")["jaeger"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["SPAN_STORAGE_TYPE"] == "memory" and int(env["MEMORY_MAX_TRACES"]) > 0, name
        assert container["resources"]["limits"]["memory"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["jaeger"]["environment"]
    assert int(compose["MEMORY_MAX_TRACES"]) > 0


def _promtool_check_config(path: Path) -> None:
    promtool = program("promtool", "apt-get install -y prometheus (Debian's package ships promtool)")
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_configs_load_and_scrape_rabbitmq_queues(tmp_path: Path) -> None:
    for name in ("prometheus-compose.yml", "prometheus-k8s.yml"):
        config = yaml.safe_load((OBS / name).read_text())
        (queues,) = [job for job in config["scrape_configs"] if job["job_name"] == "rabbitmq-queues"]
        assert queues["metrics_path"] == "/metrics/detailed" and queues["params"]["family"] == list(RABBITMQ_FAMILIES)
        assert config["rule_files"] == ["/etc/prometheus-dexengine/rules/*.yml"]
        # Debian's promtool is built without Kubernetes discovery: check the rest with a static target in its place.
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["127.0.0.1:9461"]}]
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        _promtool_check_config(path)
    # The dev Prometheus mounts its config and rules where the config says.
    pod = by_kind(rendered("dev"), "Deployment")["prometheus"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert f"--config.file={mounts['config']}/prometheus.yml" in container["args"]
    assert "--enable-feature=exemplar-storage" in container["args"]
    assert mounts["rules"] == "/etc/prometheus-dexengine/rules"


def test_prod_is_observed() -> None:
    objects = rendered("prod")
    monitors = by_kind(objects, "PodMonitor")
    assert set(monitors) == {"dexengine", "otel-collector", "rabbitmq"}
    deployments = by_kind(objects, "Deployment")
    services = monitors["dexengine"]["spec"]["selector"]["matchExpressions"][0]["values"]
    assert sorted(services) == sorted(SERVICES)
    ports = {e["port"] for e in monitors["dexengine"]["spec"]["podMetricsEndpoints"]}
    for name in SERVICES:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        named = {p["name"] for p in container["ports"]}
        assert named & ports, f"{name}: no port a PodMonitor endpoint scrapes"
    rabbit = monitors["rabbitmq"]["spec"]["podMetricsEndpoints"]
    assert {e["path"] for e in rabbit} == {"/metrics", "/metrics/detailed"}
    (detailed,) = [e for e in rabbit if e["path"] == "/metrics/detailed"]
    assert detailed["params"]["family"] == list(RABBITMQ_FAMILIES)
    assert all(m["metadata"]["labels"]["dexengine.io/monitoring"] == "true" for m in monitors.values())
    assert by_kind(objects, "PrometheusRule")
    dashboards_cm = [c for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("grafana-dashboards")]
    (cm,) = dashboards_cm
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == {name for name, _ in dashboards()}


@pytest.mark.parametrize("name", ["prometheus-compose.yml", "prometheus-k8s.yml"])
def test_prometheus_scrapes_the_collector_span_metrics(name: str) -> None:
    config = yaml.safe_load((OBS / name).read_text())
    (collector,) = [job for job in config["scrape_configs"] if job["job_name"] == "otel-collector"]
    port = collector_config(OBS)["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert collector["static_configs"][0]["targets"] == [f"otel-collector:{port}"]
