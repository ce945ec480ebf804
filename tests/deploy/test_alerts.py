"""Alert rules: unit-tested with promtool, shipped to both Prometheus setups, reading metrics that exist.

``python -m tests.deploy.test_alerts`` rewrites rules/prometheusrule.yaml from rules/alerts.yml.
"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.conftest import OBS, by_kind, program, rendered
from tests.deploy.promql import metric_names
from tests.deploy.sources import KUBE_STATE_METRICS, RABBITMQ_DETAILED, service_metrics

RULES = OBS / "rules"
REQUIRED = {
    "ExecuteQueueBacklogGrowing",
    "ParkingQueueNotEmpty",
    "OutboxLagHigh",
    "OrderFailureRatioHigh",
    "PodRestarting",
    "NoExecutor",
    "SentOrdersKeepBeingTakenBack",
}


def groups() -> list[dict[str, Any]]:
    return yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]


def rules() -> list[dict[str, Any]]:
    return [rule for group in groups() for rule in group["rules"]]


class _Literal(str):
    """Multi-line strings as YAML block literals, so the PrometheusRule reads like alerts.yml."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def _blocks(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _blocks(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_blocks(v) for v in node]
    return _Literal(node) if isinstance(node, str) and "\n" in node else node


def prometheusrule_text() -> str:
    dumper: type[yaml.SafeDumper] = type("Dumper", (yaml.SafeDumper,), {})
    dumper.add_representer(_Literal, _literal)
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "dexengine-alerts", "labels": {"dexengine.io/monitoring": "true"}},
        "spec": {"groups": _blocks(groups())},
    }
    header = (
        "# The alert rules of alerts.yml for the Prometheus operator. Do not edit by hand: regenerate with\n"
        "#   .venv/bin/python -m tests.deploy.test_alerts\n"
        "# (tests/deploy/test_alerts.py fails while the two differ).\n"
    )
    return header + yaml.dump(obj, Dumper=dumper, sort_keys=False, width=110)


def test_promtool_unit_tests_pass() -> None:
    promtool = program("promtool", "apt-get install -y prometheus (Debian's package ships promtool)")
    result = subprocess.run(
        [promtool, "test", "rules", "alerts-test.yml"], cwd=RULES, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_required_alert_exists_and_is_tested_firing_and_quiet() -> None:
    names = {rule["alert"] for rule in rules()}
    assert names >= REQUIRED, sorted(REQUIRED - names)
    cases = [
        case
        for test in yaml.safe_load((RULES / "alerts-test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for name in names:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no series that fire it"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no series that must not fire it"


def test_every_alert_reads_metrics_that_are_emitted_somewhere() -> None:
    known = service_metrics() | RABBITMQ_DETAILED | KUBE_STATE_METRICS
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']}: {sorted(names - known)} is emitted by nothing we run"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_both_prometheus_setups_get_the_same_rules() -> None:
    assert (RULES / "prometheusrule.yaml").read_text() == prometheusrule_text(), (
        "rules/prometheusrule.yaml is stale: run .venv/bin/python -m tests.deploy.test_alerts"
    )
    (rule,) = by_kind(rendered("prod"), "PrometheusRule").values()
    assert rule["spec"]["groups"] == groups()
    dev_rules = {n: c for n, c in by_kind(rendered("dev"), "ConfigMap").items() if n.startswith("prometheus-rules")}
    (configmap,) = dev_rules.values()
    assert yaml.safe_load(configmap["data"]["alerts.yml"])["groups"] == groups()


if __name__ == "__main__":
    (RULES / "prometheusrule.yaml").write_text(prometheusrule_text())
