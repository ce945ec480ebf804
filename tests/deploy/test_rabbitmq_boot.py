"""The dev overlay's RabbitMQ boots: a real broker, its config directory laid out as the pod sees it.

A private ``rabbitmq-server`` (its own node name, ports and directories; the
machine's shared broker is never touched) starts from:

- ``/etc/rabbitmq`` as the image ships it (tests/deploy/images.py), with the
  StatefulSet's volume mounts applied on top, exactly as rendered (an emptyDir
  or a ConfigMap over a directory replaces it; a subPath mount adds one file);
- the container's environment as rendered (credentials from the generated Secret);
- a log directory it cannot write to, as on the pod's read-only root.

Only what cannot be the pod's is the test's own: node name, ports and data
directory, set through environment variables and an advanced.config file,
never by touching conf.d. The broker must come up, log to the console, accept
the dev credentials, and serve the per-queue metrics the alerts use.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common import amqp
from tests.deploy.conftest import Objects, by_kind, free_port, program, rendered
from tests.deploy.images import RABBITMQ_ETC
from tests.deploy.sources import RABBITMQ_DETAILED, RABBITMQ_FAMILIES

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # Debian's, without the wrapper's log redirect
BOOT_TIMEOUT_S = 120


def rabbitmq_container(objects: Objects) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pod = by_kind(objects, "StatefulSet")["rabbitmq"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container, pod["volumes"]


def resolved_env(objects: Objects, container: dict[str, Any]) -> dict[str, str]:
    secrets = by_kind(objects, "Secret")
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
    return env


def lay_out(root: Path, objects: Objects, container: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
    """The image's /etc/rabbitmq under ``root``, then the container's mounts under /etc applied as the kubelet does."""
    etc = root / "etc" / "rabbitmq"
    for name, text in RABBITMQ_ETC.items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(text)
    configmaps = by_kind(objects, "ConfigMap")
    by_name = {v["name"]: v for v in volumes}
    for mount in container["volumeMounts"]:
        if not mount["mountPath"].startswith("/etc/"):
            continue  # data and /tmp: the test's own directories
        volume = by_name[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        if "configMap" in volume:
            files = configmaps[volume["configMap"]["name"]]["data"]
        else:
            assert set(volume) - {"name"} == {"emptyDir"}, f"lay_out does not model {volume}"
            files = {}
        if "subPath" in mount:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(files[mount["subPath"]])
        else:  # a directory mount replaces whatever the image had there
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for key, text in files.items():
                (target / key).write_text(text)


@dataclass
class Broker:
    base: Path
    env: dict[str, str]
    amqp_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.base / "root"

    def start(self) -> None:
        data = self.base / "data"
        data.mkdir(parents=True)
        (self.root / "var/log/rabbitmq").mkdir(parents=True)  # on the image's read-only root: not writable
        (self.base / "rabbitmq-env.conf").write_text("")
        management, dist = free_port(), free_port()
        (self.base / "advanced.config").write_text(
            "[\n"
            f' {{rabbit, [{{tcp_listeners, [{{"127.0.0.1", {self.amqp_port}}}]}}]}},\n'
            f' {{rabbitmq_management, [{{tcp_config, [{{ip, "127.0.0.1"}}, {{port, {management}}}]}}]}},\n'
            f' {{rabbitmq_prometheus, [{{tcp_config, [{{ip, "127.0.0.1"}}, {{port, {self.prometheus_port}}}]}}]}}\n'
            "].\n"
        )
        env = {
            **self.env,
            # The test's own: node, ports, where the pod's paths are here.
            "RABBITMQ_NODENAME": f"deploy{self.amqp_port}@localhost",
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "etc/rabbitmq/rabbitmq"),
            "RABBITMQ_CONFIG_FILES": str(self.root / "etc/rabbitmq/conf.d"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "etc/rabbitmq/enabled_plugins"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_LOG_BASE": str(self.root / "var/log/rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
            "RABBITMQ_PID_FILE": str(data / "rabbit.pid"),
            "HOME": str(data),
        }
        # The broker runs as the rabbitmq user: it may write its data, never the "root filesystem".
        for path in [self.base, *self.base.rglob("*")]:
            shutil.chown(path, "root", "root")
            path.chmod(0o755 if path.is_dir() else 0o644)
        for path in [data, *data.rglob("*")]:
            shutil.chown(path, "rabbitmq", "rabbitmq")
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), str(RABBITMQ_SERVER)]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "rabbitmq", "--", *argv]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(data),
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def wait_booted(self) -> None:
        """Until AMQP accepts connections; fails with the broker's output if it stops first."""
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"RabbitMQ stopped (exit {self.proc.returncode}):\n{self.log()}")
            if any("Server startup complete" in line for line in self.output):
                return
            time.sleep(0.2)
        raise AssertionError(f"RabbitMQ did not boot in {BOOT_TIMEOUT_S} s:\n{self.log()}")

    def wait_stopped(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        return "".join(self.output[-60:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the group this test started
        if self.wait_stopped(30) is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def broker_base() -> Iterator[Path]:
    program("erl", "apt-get install -y rabbitmq-server (the broker and its Erlang runtime)")
    assert RABBITMQ_SERVER.exists(), "apt-get install -y rabbitmq-server (Debian's package)"
    # Not under pytest's root-only temporary directory: the broker runs as the rabbitmq user.
    base = Path(tempfile.mkdtemp(prefix="dexengine-rabbitmq-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def scrape(port: int) -> dict[str, dict[str, float]]:
    query = "&".join(f"family={f}" for f in RABBITMQ_FAMILIES)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/detailed?{query}", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[sample.labels.get("queue", "")] = sample.value
    return found


def test_the_dev_rabbitmq_boots_with_its_manifest_config_and_logs_to_the_console(broker_base: Path) -> None:
    objects = rendered("dev")
    container, volumes = rabbitmq_container(objects)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = resolved_env(objects, container)
    broker = Broker(broker_base, {k: v for k, v in env.items() if k != "RABBITMQ_NODENAME"})
    lay_out(broker.root, objects, container, volumes)
    conf_d = broker.root / "etc/rabbitmq/conf.d"
    assert (conf_d / "10-defaults.conf").read_text() == RABBITMQ_ETC["conf.d/10-defaults.conf"], "image defaults kept"
    broker.start()
    try:
        broker.wait_booted()
        console = "".join(broker.output)
        assert "Server startup complete" in console, "the broker logs to the console"
        assert not any((broker.root / "var/log/rabbitmq").iterdir()), "no log file on the read-only root"
        names = amqp.Names("")

        async def exercise() -> None:
            url = f"amqp://{env['RABBITMQ_DEFAULT_USER']}:{env['RABBITMQ_DEFAULT_PASS']}@127.0.0.1:{broker.amqp_port}/"
            connection = await aio_pika.connect(url)  # the dev credentials from the generated Secret
            async with connection:
                channel = await connection.channel()
                args: dict[str, Any] = {"x-queue-type": "quorum"}
                execute = await channel.declare_queue(names.execute_queue, durable=True, arguments=args)
                await channel.declare_queue(names.parking_queue, durable=True, arguments=args)
                await channel.default_exchange.publish(aio_pika.Message(b"job"), routing_key=execute.name)

        asyncio.run(exercise())
        # Queue metrics are collected every few seconds: poll until the published job shows.
        deadline = time.monotonic() + 30
        while True:
            found = scrape(broker.prometheus_port)
            ready = found.get("rabbitmq_detailed_queue_messages_ready", {})
            if ready.get(names.execute_queue) == 1 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert set(found) >= RABBITMQ_DETAILED, sorted(RABBITMQ_DETAILED - set(found))
        assert ready.get(names.execute_queue) == 1, ready
        assert found["rabbitmq_detailed_queue_messages"][names.parking_queue] == 0
        assert found["rabbitmq_detailed_queue_consumers"][names.execute_queue] == 0
    finally:
        broker.stop()


def test_the_old_layout_an_empty_dir_over_conf_d_does_not_boot(broker_base: Path) -> None:
    """The control: the issue's layout (an emptyDir over conf.d) hides 10-defaults.conf and RabbitMQ stops."""
    objects = rendered("dev")
    container, _ = rabbitmq_container(objects)
    old = {**container, "volumeMounts": [{"name": "etc", "mountPath": "/etc/rabbitmq/conf.d"}]}
    env = resolved_env(objects, container)
    broker = Broker(broker_base, {k: v for k, v in env.items() if k != "RABBITMQ_NODENAME"})
    lay_out(broker.root, objects, old, [{"name": "etc", "emptyDir": {}}])
    assert not any((broker.root / "etc/rabbitmq/conf.d").iterdir())
    broker.start()
    try:
        assert broker.wait_stopped(BOOT_TIMEOUT_S) is not None, f"expected RabbitMQ to stop at boot:\n{broker.log()}"
        output = "".join(broker.output)
        assert "Server startup complete" not in output
        assert "cannot_log_to_file" in output, "it stops because it cannot open a log file on the read-only root"
    finally:
        broker.stop()
