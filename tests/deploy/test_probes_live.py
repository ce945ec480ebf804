"""The prod overlay's probes against real processes: a PostgreSQL outage flips readiness, never liveness.

orders, notifier and the gateway run as the pods would: the rendered prod
ConfigMap and container environment, the migration init step first, the
probes' own health service names and paths read from the rendered manifests.
Only addresses are the test's: a private PostgreSQL (which the test stops and
starts; the machine's shared one is never touched), the shared Redis and
RabbitMQ under a prefix of its own, free ports, and an OTLP endpoint nobody
listens on (there is no collector here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy.conftest import DEPLOY, ROOT, by_kind, free_port, rendered
from tests.support.infra import TestInfra, delete_topology
from tests.support.servers import PG_BIN, PrivatePostgres

SERVING = health_pb2.HealthCheckResponse.SERVING
RUN = ("orders", "notifier", "gateway")
OUTAGE_S = 12.0


def prod_env(name: str) -> tuple[dict[str, str], dict[str, Any]]:
    """A prod container's environment: ConfigMap, Secret keys (from secrets.env.example), its own env."""
    objects = rendered("prod")
    (container,) = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
    env = dict(by_kind(objects, "ConfigMap")["dexengine-config"]["data"])
    example = (DEPLOY / "overlays/prod/secrets.env.example").read_text().splitlines()
    env.update(dict(line.split("=", 1) for line in example if "=" in line and not line.startswith("#")))
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env, container


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    assert (PG_BIN / "pg_ctl").exists(), (
        f"PostgreSQL server binaries are needed in {PG_BIN} (apt-get install postgresql-15)"
    )
    base = Path(tempfile.mkdtemp(prefix="dexengine-probes-pg-"))
    base.chmod(0o755)
    pg = PrivatePostgres(base, free_port())
    await pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(Exception):
            await pg.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


async def grpc_status(port: int, service: str, timeout: float) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError as err:
            return err.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def http_status(session: aiohttp.ClientSession, url: str, timeout: float) -> int:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def test_a_postgres_outage_flips_readiness_and_never_liveness() -> None:
    prefix = f"probes{uuid.uuid4().hex[:8]}."
    ports = {name: free_port() for name in RUN}
    local = {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "AMQP_PREFIX": prefix,
        "ORDERS_GRPC_PORT": str(ports["orders"]),
        "NOTIFIER_GRPC_PORT": str(ports["notifier"]),
        "GATEWAY_PORT": str(ports["gateway"]),
        "GATEWAY_HOST": "127.0.0.1",
        "ORDERS_TARGET": f"127.0.0.1:{ports['orders']}",
        "NOTIFIER_TARGET": f"127.0.0.1:{ports['notifier']}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        # The Secret's value (prod runs AUTH=apikey: the services present it to each other).
        "INTERNAL_TOKEN": uuid.uuid4().hex,
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = Path(tempfile.mkdtemp(prefix="dexengine-probes-logs-"))
    async with private_postgres() as pg:
        local["DATABASE_URL"] = pg.url
        probes: dict[str, dict[str, Any]] = {}
        try:
            for name in RUN:
                env, container = prod_env(name)
                env = {**os.environ, **env, **local}
                if "METRICS_PORT" in env and name != "gateway":
                    env["METRICS_PORT"] = str(free_port())
                probes[name] = {k: container[k] for k in ("livenessProbe", "readinessProbe")}
                for init in by_kind(rendered("prod"), "Deployment")[name]["spec"]["template"]["spec"].get(
                    "initContainers", []
                ):
                    done = await asyncio.to_thread(
                        subprocess.run,
                        [sys.executable, "-m", *init["args"]],
                        env=env,
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    assert done.returncode == 0, f"init container {init['name']}: {done.stdout}{done.stderr}"
                with (logs / f"{name}.log").open("wb") as out:
                    procs[name] = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once
                        [sys.executable, "-m", *container["args"]], env=env, cwd=ROOT, stdout=out, stderr=out
                    )

            async with aiohttp.ClientSession() as session:

                async def check(name: str, probe: str) -> bool:
                    spec = probes[name][probe]
                    timeout = float(spec.get("timeoutSeconds", 1))
                    if "grpc" in spec:
                        return await grpc_status(ports[name], spec["grpc"].get("service", ""), timeout) == "SERVING"
                    url = f"http://127.0.0.1:{ports[name]}{spec['httpGet']['path']}"
                    return 200 <= await http_status(session, url, timeout) < 400

                async def until(condition: str, predicate: Any, timeout: float = 60) -> None:
                    deadline = time.monotonic() + timeout
                    while not await predicate():
                        for name, proc in procs.items():
                            assert proc.poll() is None, f"{name} exited:\n{(logs / f'{name}.log').read_text()[-3000:]}"
                        assert time.monotonic() < deadline, f"not {condition} after {timeout} s"
                        await asyncio.sleep(0.25)

                async def all_ready() -> bool:
                    return all([await check(n, p) for n in RUN for p in ("livenessProbe", "readinessProbe")])

                await until("all live and ready", all_ready)
                pids = {name: proc.pid for name, proc in procs.items()}

                await pg.stop("fast")  # the database goes away
                started = time.monotonic()
                readiness_flipped = gateway_unready = False
                while time.monotonic() - started < OUTAGE_S:
                    for name in RUN:  # liveness holds for every service, the whole outage long
                        assert await check(name, "livenessProbe"), f"{name} liveness failed during the outage"
                        assert procs[name].poll() is None, f"{name} exited during the outage"
                    readiness_flipped |= not await check("orders", "readinessProbe")
                    gateway_unready |= not await check("gateway", "readinessProbe")
                    await asyncio.sleep(0.5)
                assert readiness_flipped, "orders' readiness stayed SERVING without its database"
                assert gateway_unready, "the gateway's /readyz stayed OK while orders was not ready"
                assert not await check("orders", "readinessProbe"), "still NOT_SERVING at the end of the outage"
                assert await check("notifier", "readinessProbe"), "notifier does not depend on PostgreSQL"

                await pg.start()  # back: readiness returns by itself, no process restarted
                await until("ready again", all_ready)
                assert {name: proc.pid for name, proc in procs.items()} == pids
                assert all(proc.poll() is None for proc in procs.values())
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            with contextlib.suppress(Exception):
                await delete_topology(TestInfra(pg.url, "postgres", local["REDIS_URL"], local["AMQP_URL"], prefix))
            shutil.rmtree(logs, ignore_errors=True)


@pytest.mark.parametrize("name", ["orders", "notifier"])
def test_the_liveness_probe_names_the_bootstrap_liveness_service(name: str) -> None:
    from services.common import grpc_server

    _, container = prod_env(name)
    assert container["livenessProbe"]["grpc"]["service"] == grpc_server.LIVENESS
