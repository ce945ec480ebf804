"""Where every metric that a dashboard panel or an alert rule names comes from.

- the services: ``services.common.metrics.REGISTRY`` (what they really emit);
- the collector's span-metrics connector: names derived from its config;
- RabbitMQ's own rabbitmq_prometheus plugin: the names below, which
  ``test_rabbitmq_boot`` scrapes off a real broker (so they are not guessed);
- kube-state-metrics (a cluster prerequisite, deploy/README.md).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from services.common import metrics

# /metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count, per queue (labels vhost, queue).
RABBITMQ_DETAILED = {
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_consumers",
}
RABBITMQ_FAMILIES = ("queue_coarse_metrics", "queue_consumer_count")
KUBE_STATE_METRICS = {"kube_pod_container_status_restarts_total"}


def service_metrics() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def service_exemplar_histograms() -> set[str]:
    """``*_bucket`` series of the services' histograms that carry trace-id exemplars."""
    return {
        f"{collector._name}_bucket"
        for collector in metrics.REGISTRY._names_to_collectors.values()
        if isinstance(collector, metrics.TracedHistogram)
    }


def collector_config(directory: Path) -> dict:
    return yaml.safe_load((directory / "tracing" / "otel-collector.yaml").read_text())


def span_metrics(config: dict) -> tuple[set[str], set[str]]:
    """(every span-metric name, the bucket series that carry exemplars) as Prometheus sees them."""
    connector = config["connectors"]["spanmetrics"]
    exporter = config["exporters"]["prometheus"]
    parts = (exporter.get("namespace", ""), connector.get("namespace", "traces.span.metrics"))
    prefix = "_".join(p for p in parts if p).replace(".", "_")
    unit = {"ms": "milliseconds", "s": "seconds"}[connector.get("histogram", {}).get("unit", "ms")]
    duration = f"{prefix}_duration_{unit}"
    names = {f"{prefix}_calls_total", *(duration + s for s in ("_bucket", "_sum", "_count"))}
    exemplars = {duration + "_bucket"} if connector.get("exemplars", {}).get("enabled") else set()
    if not exporter.get("enable_open_metrics"):
        exemplars = set()  # the classic text exposition has no exemplars
    return names, exemplars
