"""Start the localnet and the five services as real processes for end-to-end tests.

Every mesh has its own ports (gRPC, HTTP, metrics, the localnet's RPC and
PubSub), its own engine wallet (a keypair file the localnet funds at genesis)
and keeps the localnet's accounts and ledger in schema ``localnet`` of the
mesh's own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import config
from services.launcher import LOCALNET, MODULES, SERVICES, ensure_wallet, localnet_env

ROOT = Path(__file__).resolve().parents[2]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process (a mesh takes a dozen at once)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


# A peer nothing listens on. An in-process component whose peer is not part of its test is refused at once; with
# the defaults it would reach the services of another engine on this machine (`make run` listens on them).
UNREACHABLE = f"127.0.0.1:{free_port()}"


def detached(settings: config.Settings) -> config.Settings:
    """``settings`` with every peer service unreachable and no limit trigger: a test names what it runs itself.

    The router's trigger would otherwise follow the default AMQP prefix's events, another engine's."""
    return replace(
        settings,
        orders_target=UNREACHABLE,
        router_target=UNREACHABLE,
        notifier_target=UNREACHABLE,
        trigger_enabled=False,
    )


@dataclass
class Mesh:
    env: dict[str, str]
    log_dir: Path
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)  # wall clock: when each service was last found ready

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.env['GATEWAY_PORT']}"

    def grpc_target(self, service: str) -> str:
        return f"127.0.0.1:{self.env[f'{service.upper()}_GRPC_PORT']}"

    @property
    def rpc_url(self) -> str:
        return self.env["SOLANA_RPC_URL"]

    @property
    def ws_url(self) -> str:
        return self.env["SOLANA_WS_URL"]

    @property
    def wallet(self) -> str:
        return self.env["LOCALNET_FUND"].split(",")[-1]

    async def start(self, *services: str) -> None:
        names = services or (LOCALNET, *SERVICES)
        if LOCALNET in names:
            await self.start_one(LOCALNET)
            await self.wait_ready(LOCALNET)
        for name in names:
            if name != LOCALNET:
                await self.start_one(name)
        await self.wait_ready(*(n for n in names if n != LOCALNET))

    async def start_one(self, name: str, extra_env: Mapping[str, str] | None = None) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            MODULES[name],
            env={**self.env, "METRICS_PORT": self.env.get(f"{name.upper()}_METRICS_PORT", "0"), **(extra_env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )

    async def wait_ready(self, *services: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for name in services:
            while True:
                proc = self.procs[name]
                if proc.returncode is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.tail(name)}")
                if await self._ready(name):
                    self.ready_at[name] = time.time()
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s: {self.tail(name)}")
                await asyncio.sleep(0.1)

    async def _ready(self, name: str) -> bool:
        if name == LOCALNET:
            body = {"jsonrpc": "2.0", "id": 1, "method": "getHealth"}
            try:
                async with aiohttp.ClientSession() as session, session.post(self.rpc_url, json=body) as resp:
                    return (await resp.json()).get("result") == "ok"
            except (aiohttp.ClientError, ValueError):
                return False
        if name == "gateway":
            try:
                async with aiohttp.ClientSession() as session, session.get(f"{self.http}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False
        async with grpc.aio.insecure_channel(self.grpc_target(name)) as channel:
            try:
                resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    async def stop_one(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        proc = self.procs[name]
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode

    async def stop(self) -> None:
        for name in reversed(list(self.procs)):
            await self.stop_one(name)


def mesh_env(base: Mapping[str, str], wallet_dir: Path) -> dict[str, str]:
    """Ports, targets, the localnet and a funded wallet of the mesh's own; ``base`` has DATABASE_URL etc."""
    ports = {f"{s.upper()}_GRPC_PORT": str(free_port()) for s in SERVICES if s != "gateway"}
    env = dict(base)
    env.update(ports)
    rpc_port, ws_port = free_port(), free_port()
    env.update(
        {
            "LOCALNET_HOST": "127.0.0.1",
            "LOCALNET_RPC_PORT": str(rpc_port),
            "LOCALNET_WS_PORT": str(ws_port),
            "SOLANA_RPC_URL": f"http://127.0.0.1:{rpc_port}",
            "SOLANA_WS_URL": f"ws://127.0.0.1:{ws_port}",
            "SOLANA_KEYPAIR": str(wallet_dir / "engine-wallet.json"),
        }
    )
    env.update({f"{s.upper()}_METRICS_PORT": str(free_port()) for s in SERVICES if s != "gateway"})
    env.setdefault("LOCALNET_DATABASE_URL", env.get("DATABASE_URL", ""))
    env.update(localnet_env(env, ensure_wallet(env["SOLANA_KEYPAIR"])))
    env["GATEWAY_PORT"] = str(free_port())
    env["GATEWAY_HOST"] = "127.0.0.1"
    for service in ("orders", "router", "executor", "notifier"):
        env[f"{service.upper()}_TARGET"] = f"127.0.0.1:{ports[f'{service.upper()}_GRPC_PORT']}"
    env.setdefault("PYTHONPATH", str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env
