"""Both overlays render, validate against the Kubernetes schemas, and follow the policies."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from services.common import metrics
from services.common.config import Settings
from services.launcher import SERVICES
from tests.deploy.conftest import DEPLOY

Manifests = tuple[str, list[dict[str, Any]]]
ROOT = Path(__file__).resolve().parents[2]
SCHEMA_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
GRPC_PORTS = {name: getattr(Settings(), f"{name}_port") for name in SERVICES}


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def engine(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: d for name, d in by_kind(objects, "Deployment").items() if name in SERVICES}


def env_vars_read_by_services() -> set[str]:
    """Every name passed to the config readers (_env, _int, ...) in services/common/config.py."""
    tree = ast.parse((ROOT / "services/common/config.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("_")):
            continue
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.isupper():
            names.add(first.value)
    return names


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_object_validates_against_the_schemas(overlay: Manifests, version: str) -> None:
    _, objects = overlay
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_every_service_has_probes_limits_and_a_locked_down_container(overlay: Manifests) -> None:
    _, objects = overlay
    deployments = engine(objects)
    assert set(deployments) == set(SERVICES)
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["terminationGracePeriodSeconds"] > Settings().shutdown_grace_s + 3, name
        assert pod["serviceAccountName"] == name
        (container,) = pod["containers"]
        assert container["args"] == [f"services.{name}"]
        for probe in ("readinessProbe", "livenessProbe"):
            spec = container[probe]
            if name == "gateway":
                assert spec["httpGet"]["path"] in ("/readyz", "/healthz"), name
            else:
                assert spec["grpc"]["port"] == GRPC_PORTS[name], f"{name} {probe} uses the gRPC health service"
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}, name
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name


def test_ports_are_the_services_defaults(overlay: Manifests) -> None:
    _, objects = overlay
    deployments, services = engine(objects), by_kind(objects, "Service")
    for name, dep in deployments.items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if name == "gateway":
            assert ports == {"http": Settings().gateway_port}
        else:
            assert ports == {"grpc": GRPC_PORTS[name], "metrics": metrics.DEFAULT_PORTS[name]}
            assert env["METRICS_PORT"] == str(metrics.DEFAULT_PORTS[name])
        assert {p["port"] for p in services[name]["spec"]["ports"]} == set(ports.values())


def test_every_setting_a_service_reads_is_provided(overlay: Manifests) -> None:
    name, objects = overlay
    config = by_kind(objects, "ConfigMap")["dexengine-config"]["data"]
    secret_keys = set(by_kind(objects, "Secret").get("dexengine-secrets", {}).get("stringData", {}))
    if name == "prod":  # the Secret is created out of band from secrets.env; its example lists the keys
        example = (DEPLOY / "overlays/prod/secrets.env.example").read_text().splitlines()
        secret_keys = {line.split("=", 1)[0] for line in example if "=" in line and not line.startswith("#")}
    provided = set(config) | secret_keys | {"METRICS_PORT"}
    missing = env_vars_read_by_services() - provided
    assert not missing, f"not provided in {name}: {sorted(missing)}"
    assert not {"DATABASE_URL", "REDIS_URL", "AMQP_URL"} & set(config), "credentials belong in the Secret"


def test_images_are_pinned(overlay: Manifests) -> None:
    _, objects = overlay
    for obj in objects:
        template = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in template.get("containers", []):
            image = container["image"]
            tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
            assert tag and tag != "latest", f"{obj['metadata']['name']}: {image}"


def test_scaling_and_isolation(overlay: Manifests) -> None:
    name, objects = overlay
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {"gateway", "executor"}
    assert set(by_kind(objects, "PodDisruptionBudget")) >= set(SERVICES)
    policies = by_kind(objects, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    allowed = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p
        for p in policies.values()
        if "app.kubernetes.io/name" in p["spec"]["podSelector"].get("matchLabels", {})
    }
    assert "from" not in allowed["gateway"]["spec"]["ingress"][0], "the gateway is the public door"
    callers = {
        svc: {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in p["spec"]["ingress"][0]["from"]}
        for svc, p in allowed.items()
        if svc != "gateway"
    }
    assert callers == {"orders": {"gateway", "executor", "notifier"}, "router": {"executor"}, "notifier": {"gateway"}}
    deployments = engine(objects)
    replicas = {n: d["spec"].get("replicas", 1) for n, d in deployments.items()}
    if name == "prod":
        assert replicas == {"gateway": 2, "orders": 2, "router": 1, "executor": 3, "notifier": 2}
        ingress = by_kind(objects, "Ingress")["gateway"]
        assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
        paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
        assert {"/api/", "/ws/"} <= paths
        assert not by_kind(objects, "StatefulSet"), "prod uses managed servers"
    else:
        assert set(replicas.values()) == {1}
        assert set(by_kind(objects, "StatefulSet")) == {"postgres", "redis", "rabbitmq"}
        assert {"otel-collector", "jaeger", "prometheus", "grafana"} <= set(by_kind(objects, "Deployment"))
        config = by_kind(objects, "ConfigMap")["dexengine-config"]["data"]
        assert config["OTEL_TRACES_EXPORTER"] == "otlp"
