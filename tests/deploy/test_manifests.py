"""Both overlays render, validate against the schemas, and follow the policies."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from solders.keypair import Keypair

from services.common import amqp, grpc_server
from services.common.config import DEFAULT_METRICS_PORTS, Settings
from services.launcher import SERVICES
from tests.deploy.conftest import DEPLOY, ROOT, Objects, by_kind, program, rendered
from tests.deploy.images import IMAGE_FILES, hidden_by, repository

Manifests = tuple[str, Objects]
SCHEMA_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
GRPC_PORTS = {name: getattr(Settings(), f"{name}_port") for name in SERVICES}
# Custom resources: the Kubernetes schemas do not know them; checked below by hand and by promtool.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor", "PrometheusRule"}
OWN_IMAGE = "ghcr.io/dexengine/dexengine"
# Created out of band in production (deploy/README.md), so absent from the rendered prod overlay.
OUT_OF_BAND_SECRETS = {"dexengine-secrets", "dexengine-wallet", "dexengine-tls"}
# Settings the localnet owns; the engine reaches the cluster by RPC only.
LOCALNET_REQUIRED = {
    "LOCALNET_DATABASE_URL", "LOCALNET_HOST", "LOCALNET_LANDING_MS", "MARKET_SEED", "MARKET_DRIFT", "LOCALNET_FUND",
}  # fmt: skip
LOCALNET_ONLY = {"MARKET_DRIFT", "MARKET_TREND_BPS_PER_S", "EXECUTION_LATENCY_MS", "CHAIN_DATABASE_URL"}


def engine(objects: Objects) -> dict[str, dict[str, Any]]:
    return {name: d for name, d in by_kind(objects, "Deployment").items() if name in SERVICES}


def pod_templates(objects: Objects) -> dict[str, dict[str, Any]]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }


def env_names_read_by(path: Path) -> set[str]:
    """Every upper-case string literal that names a variable passed to an env reader in ``path``."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        # _env("NAME", default) / env.get("NAME", ...) / _port(env, "NAME", default)
        first, rest = node.args[0], node.args[1:]
        arg = rest[0] if isinstance(first, ast.Name) and first.id == "env" and rest else first
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", arg.value):
            names.add(arg.value)
    return names


def container_env(objects: Objects, container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet would build it (envFrom, then env)."""
    configmaps, secrets = by_kind(objects, "ConfigMap"), by_kind(objects, "Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
        else:
            secret = secrets.get(source["secretRef"]["name"], {})
            env.update(secret.get("stringData", {}))
            env.update({k: _b64(v) for k, v in secret.get("data", {}).items()})
    env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    return env


def _b64(value: str) -> str:
    import base64

    return base64.b64decode(value).decode()


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_object_validates_against_the_schemas(overlay: Manifests, version: str) -> None:
    _, objects = overlay
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)


def test_custom_resources_are_well_formed(overlay: Manifests, tmp_path: Path) -> None:
    _, objects = overlay
    assert {o["apiVersion"] for o in objects if o["kind"] in CRD_KINDS} <= {
        "keda.sh/v1alpha1",
        "monitoring.coreos.com/v1",
    }
    auths = by_kind(objects, "TriggerAuthentication")
    for scaled in by_kind(objects, "ScaledObject").values():
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"] in by_kind(objects, "Deployment")
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert trigger["authenticationRef"]["name"] in auths
    for auth in auths.values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert set(ref) == {"parameter", "name", "key"}
    for monitor in by_kind(objects, "PodMonitor").values():
        assert monitor["spec"]["selector"] and monitor["spec"]["podMetricsEndpoints"]
        assert all(e["port"] and e["path"].startswith("/") for e in monitor["spec"]["podMetricsEndpoints"])
    promtool = program("promtool", "apt-get install -y prometheus (Debian's package ships promtool)")
    for rule in by_kind(objects, "PrometheusRule").values():
        path = tmp_path / f"{rule['metadata']['name']}.yml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        subprocess.run([promtool, "check", "rules", str(path)], check=True, capture_output=True)


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
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}, name
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0, name


def test_liveness_and_readiness_ask_different_checks(overlay: Manifests) -> None:
    """Liveness asks whether the process runs; readiness whether its dependencies answer."""
    _, objects = overlay
    for name, dep in engine(objects).items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        live, ready, startup = container["livenessProbe"], container["readinessProbe"], container["startupProbe"]
        if name == "gateway":
            assert live["httpGet"]["path"] == "/healthz" and ready["httpGet"]["path"] == "/readyz"
            assert startup["httpGet"]["path"] == "/healthz"
            continue
        for probe in (live, ready, startup):
            assert probe["grpc"]["port"] == GRPC_PORTS[name], f"{name} probes its own gRPC health service"
        assert live["grpc"].get("service") == grpc_server.LIVENESS, name
        assert startup["grpc"].get("service") == grpc_server.LIVENESS, name
        assert ready["grpc"].get("service", "") == "", f"{name}: readiness is the dependency check"
        # A restart must not be quicker than a readiness flip: liveness fails only when the loop is stuck.
        assert live["periodSeconds"] * live["failureThreshold"] >= 30, name


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
            assert ports == {"grpc": GRPC_PORTS[name], "metrics": DEFAULT_METRICS_PORTS[name]}
            assert env["METRICS_PORT"] == str(DEFAULT_METRICS_PORTS[name])
        assert {p["port"] for p in services[name]["spec"]["ports"]} == set(ports.values())


def test_every_setting_a_service_reads_is_provided_and_nothing_else(overlay: Manifests) -> None:
    name, objects = overlay
    config = by_kind(objects, "ConfigMap")["dexengine-config"]["data"]
    secret_keys = set(by_kind(objects, "Secret").get("dexengine-secrets", {}).get("stringData", {}))
    if name == "prod":  # the Secret is created out of band from secrets.env; its example lists the keys
        example = (DEPLOY / "overlays/prod/secrets.env.example").read_text().splitlines()
        secret_keys = {line.split("=", 1)[0] for line in example if "=" in line and not line.startswith("#")}
    read = env_names_read_by(ROOT / "services/common/config.py") | env_names_read_by(ROOT / "services/common/auth.py")
    provided = set(config) | secret_keys | {"METRICS_PORT"}
    missing = read - provided
    assert not missing, f"not provided in {name}: {sorted(missing)}"
    assert not {"DATABASE_URL", "REDIS_URL", "AMQP_URL", "SOLANA_RPC_URL"} & set(config), "credentials: the Secret"
    stale = {k for k in set(config) | secret_keys if k not in read and not k.startswith("OTEL_")}
    assert not stale, f"{name}: set but read by no engine service: {sorted(stale)}"
    assert not LOCALNET_ONLY & (set(config) | secret_keys), "the localnet's settings are the localnet's"
    assert config["AUTH"] == ("apikey" if name == "prod" else "off"), "API keys: on in prod, off in dev"
    assert "INTERNAL_TOKEN" in secret_keys and "INTERNAL_TOKEN" not in config, "the internal token is a secret"


def test_the_localnet_runs_in_dev_only_and_funds_the_engine_wallet() -> None:
    assert "localnet" not in by_kind(rendered("prod"), "Deployment"), "prod points at a real cluster"
    objects = rendered("dev")
    localnet = by_kind(objects, "Deployment")["localnet"]["spec"]["template"]["spec"]
    (container,) = localnet["containers"]
    assert container["args"] == ["localnet"] and repository(container["image"]) == OWN_IMAGE
    env = container_env(objects, container)
    config_py = ROOT / "localnet" / "config.py"
    assert set(env) >= LOCALNET_REQUIRED, sorted(LOCALNET_REQUIRED - set(env))
    if config_py.exists():  # the localnet's own settings reader: nothing set here that it does not read
        read = env_names_read_by(config_py)
        assert set(env) <= read | {"LOG_LEVEL"}, f"the localnet reads no {sorted(set(env) - read - {'LOG_LEVEL'})}"
    assert env["LOCALNET_HOST"] == "0.0.0.0", "reachable through its Service, not only on loopback"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"rpc": 8899, "pubsub": 8900}
    assert container["readinessProbe"]["exec"]["command"][:2] == ["python", "-c"]
    assert "getHealth" in container["readinessProbe"]["exec"]["command"][2]
    # The engine's wallet: one Secret, mounted read-only in the executor, funded by the localnet.
    wallet = by_kind(objects, "Secret")
    (wallet_secret,) = [s for n, s in wallet.items() if n.startswith("dexengine-wallet")]
    keypair = Keypair.from_bytes(bytes(json.loads(_b64(wallet_secret["data"]["id.json"]))))
    assert env["LOCALNET_FUND"].split(",") == [str(keypair.pubkey())]
    engine_env = container_env(objects, engine(objects)["executor"]["spec"]["template"]["spec"]["containers"][0])
    assert (
        engine_env["SOLANA_RPC_URL"] == "http://localnet:8899" and engine_env["SOLANA_WS_URL"] == "ws://localnet:8900"
    )
    # compose runs the same localnet with the same wallet.
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert compose["localnet"]["command"] == ["localnet"]
    assert compose["localnet"]["environment"]["LOCALNET_FUND"] == env["LOCALNET_FUND"]
    assert compose["executor"]["environment"]["SOLANA_RPC_URL"] == "http://localnet:8899"


def test_the_executor_mounts_its_wallet_read_only(overlay: Manifests) -> None:
    _, objects = overlay
    pod = engine(objects)["executor"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = container_env(objects, container)["SOLANA_KEYPAIR"]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"].startswith("dexengine-wallet")
    assert path.rsplit("/", 1)[-1] in {item["path"] for item in volume["secret"]["items"]}


def test_migrations_run_before_orders_with_their_own_entry_point(overlay: Manifests) -> None:
    _, objects = overlay
    pod = engine(objects)["orders"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (container,) = pod["containers"]
    assert init["args"] == ["services.migrate", "orders"]
    assert init["image"] == container["image"] and init["envFrom"] == container["envFrom"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_images_are_pinned_by_digest(overlay: Manifests) -> None:
    _, objects = overlay
    for where, pod in pod_templates(objects).items():
        for container in pod.get("initContainers", []) + pod["containers"]:
            image = container["image"]
            if repository(image) == OWN_IMAGE:  # built here: a release pins it (README "Build and load")
                assert re.fullmatch(rf"{OWN_IMAGE}:\d+\.\d+\.\d+(@sha256:[0-9a-f]{{64}})?", image), image
            else:
                assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), f"{where}: {image}"


def test_no_mount_hides_an_image_config_directory(overlay: Manifests) -> None:
    _, objects = overlay
    for where, pod in pod_templates(objects).items():
        for container in pod.get("initContainers", []) + pod["containers"]:
            image = container["image"]
            assert repository(image) in IMAGE_FILES, f"{where}: add {repository(image)} to tests/deploy/images.py"
            for mount in container.get("volumeMounts", []):
                if "subPath" in mount:
                    continue
                hidden = hidden_by(mount["mountPath"], image)
                assert not hidden, f"{where}: the mount at {mount['mountPath']} hides {hidden}"


def test_the_mount_check_catches_the_old_rabbitmq_layout() -> None:
    image = "rabbitmq:3.13.7-management@sha256:" + "0" * 64
    assert hidden_by("/etc/rabbitmq/conf.d", image) == ["/etc/rabbitmq/conf.d/10-defaults.conf"]
    assert hidden_by("/etc/rabbitmq/conf.d/20-dexengine.conf", image) == []


def test_every_pod_meets_pod_security_restricted(overlay: Manifests) -> None:
    """The checks of the Pod Security Standards' restricted profile, on every pod template."""
    _, objects = overlay
    (namespace,) = by_kind(objects, "Namespace").values()
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for where, pod in pod_templates(objects).items():
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= allowed_volumes, f"{where}: {volume}"
        pod_sc = pod.get("securityContext", {})
        for container in pod.get("initContainers", []) + pod["containers"]:
            sc = container.get("securityContext", {})
            what = f"{where}/{container['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, what
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, what
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), what
            assert sc.get("allowPrivilegeEscalation") is False and not sc.get("privileged"), what
            assert "ALL" in sc["capabilities"]["drop"], what
            assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}, what
            assert not any("hostPort" in p for p in container.get("ports", [])), what


def test_replicas_spread_over_zones_and_nodes(overlay: Manifests) -> None:
    _, objects = overlay
    for name, dep in engine(objects).items():
        spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        for constraint in spread:
            assert constraint["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}


def test_scaling(overlay: Manifests) -> None:
    name, objects = overlay
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    scaled = by_kind(objects, "ScaledObject")
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
    keda_targets = {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()}
    assert hpa_targets == {"gateway", "router"}, "stateless request/response services scale on CPU"
    assert not hpa_targets & keda_targets
    deployments = by_kind(objects, "Deployment")
    for target in hpa_targets | keda_targets:
        assert "replicas" not in deployments[target]["spec"], f"{target} is autoscaled: apply must not reset it"
    assert set(by_kind(objects, "PodDisruptionBudget")) >= set(SERVICES)
    replicas = {n: d["spec"].get("replicas", 1) for n, d in engine(objects).items()}
    if name == "prod":
        assert keda_targets == {"executor"}
        (executor,) = scaled.values()
        (trigger,) = executor["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["queueName"] == amqp.Names("").execute_queue
        auth = by_kind(objects, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
        assert auth["spec"]["secretTargetRef"] == [
            {"parameter": "host", "name": "dexengine-secrets", "key": "AMQP_URL"}
        ]
        assert (executor["spec"]["minReplicaCount"], executor["spec"]["maxReplicaCount"]) == (2, 4)
        assert {n: r for n, r in replicas.items() if n in ("orders", "notifier")} == {"orders": 2, "notifier": 2}
        assert all(hpas[n]["spec"]["minReplicas"] == 2 for n in ("gateway", "router"))
    else:
        assert not keda_targets, "development has no KEDA: one executor"
        assert set(replicas.values()) == {1}


def test_network_isolation(overlay: Manifests) -> None:
    name, objects = overlay
    policies = by_kind(objects, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    ingress = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p
        for p in policies.values()
        if p["spec"]["policyTypes"] == ["Ingress"]
        and "app.kubernetes.io/name" in p["spec"]["podSelector"].get("matchLabels", {})
    }
    assert "from" not in ingress["gateway"]["spec"]["ingress"][0], "the gateway is the public door"
    callers = {
        svc: {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in p["spec"]["ingress"][0]["from"]}
        for svc, p in ingress.items()
        if svc in SERVICES and svc != "gateway"
    }
    assert callers == {
        "orders": {"gateway", "executor", "notifier", "router"},  # router: its limit/sniper trigger
        "router": {"executor", "gateway"},  # gateway: the pair check at the door (CheckRoute)
        "notifier": {"gateway"},
    }
    # Egress: denied by default for the engine's pods, then opened per service.
    deny = policies["default-deny-egress"]["spec"]
    assert deny["policyTypes"] == ["Egress"] and "egress" not in deny
    assert deny["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "dexengine"}}
    egress = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p["spec"]["egress"]
        for p in policies.values()
        if p["spec"]["policyTypes"] == ["Egress"]
        and "app.kubernetes.io/name" in p["spec"]["podSelector"].get("matchLabels", {})
    }
    assert set(egress) == set(SERVICES)

    def peers(rules: list[dict[str, Any]]) -> set[str]:
        return {t["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for r in rules for t in r.get("to", [])}

    def ports(rules: list[dict[str, Any]]) -> set[int]:
        return {p["port"] for r in rules if "to" not in r for p in r["ports"]}

    assert peers(egress["gateway"]) == {"orders", "notifier", "router"}
    assert peers(egress["executor"]) == {"orders", "router"}
    assert peers(egress["notifier"]) == {"orders"}
    assert peers(egress["router"]) == {"orders"} and 5672 in ports(egress["router"]), "the trigger: orders + events"
    assert {5432, 6379, 5672} <= ports(egress["orders"])
    assert {8899, 8900, 443} <= ports(egress["router"]) and {8899, 443, 5672, 6379} <= ports(egress["executor"])
    assert 5432 not in ports(egress["executor"]) | ports(egress["router"]), (
        "only orders (and its migrations) use PostgreSQL"
    )
    if name == "dev":
        localnet = policies["localnet-from-engine"]["spec"]["ingress"][0]
        assert {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in localnet["from"]} == {
            "router",
            "executor",
        }


def test_every_secret_a_pod_uses_exists_or_is_created_out_of_band(overlay: Manifests) -> None:
    name, objects = overlay
    secrets = set(by_kind(objects, "Secret"))
    for where, pod in pod_templates(objects).items():
        used = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in pod.get("initContainers", []) + pod["containers"]:
            used |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
            used |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
        missing = used - secrets
        if name == "prod":
            missing -= OUT_OF_BAND_SECRETS
        assert not missing, f"{where}: {sorted(missing)}"


def test_prod_ingress_and_managed_servers() -> None:
    objects = rendered("prod")
    ingress = by_kind(objects, "Ingress")["gateway"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert {"/api/", "/ws/"} <= paths
    assert not by_kind(objects, "StatefulSet"), "prod uses managed servers"
    dev = rendered("dev")
    assert set(by_kind(dev, "StatefulSet")) == {"postgres", "redis", "rabbitmq"}
    assert {"otel-collector", "jaeger", "prometheus", "grafana", "localnet"} <= set(by_kind(dev, "Deployment"))
