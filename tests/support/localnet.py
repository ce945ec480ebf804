"""A real localnet process for tests: ``python -m localnet`` on free ports, its own database.

Usage::

    async with running_localnet({"LOCALNET_LANDING_MS": "0"}) as net:
        async with AsyncClient(net.rpc_url) as client: ...
        await net.call("localnet_fund", [{"pubkey": str(kp.pubkey())}])
        await net.restart()          # SIGTERM, then start again on the same ports and database
        await net.kill()             # SIGKILL (then ``await net.start()``)

``running_localnet`` creates a fresh PostgreSQL database (dropped on exit)
unless ``database_url`` is given (then the caller owns it, and the localnet
keeps its tables in schema ``localnet`` there). The process's stderr (JSON log
lines) goes to ``net.log_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from tests.support.infra import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalnetRpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


@dataclass
class Localnet:
    """One localnet process; ``env`` is its whole environment (ports and database included)."""

    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.env['LOCALNET_RPC_PORT']}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.env['LOCALNET_WS_PORT']}"

    @property
    def database_url(self) -> str:
        return self.env["LOCALNET_DATABASE_URL"]

    async def start(self, timeout: float = 30) -> None:
        """Start the process and wait until getHealth answers ``ok``."""
        if self.proc is not None and self.proc.returncode is None:
            raise RuntimeError("localnet is already running")
        log = self.log_path.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "localnet", env=self.env, cwd=str(ROOT), stdout=log, stderr=log
            )
        finally:
            log.close()
        await self.wait_healthy(timeout)

    async def wait_healthy(self, timeout: float = 30) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        body = {"jsonrpc": "2.0", "id": 1, "method": "getHealth"}
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(f"localnet exited with {self.proc.returncode}; see {self.log_path}")
                with contextlib.suppress(aiohttp.ClientError, ValueError, asyncio.TimeoutError):
                    async with session.post(self.rpc_url, json=body, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if (await r.json()).get("result") == "ok":
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"localnet did not answer getHealth in {timeout:.0f} s; see {self.log_path}")
                await asyncio.sleep(0.1)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Signal the process (SIGTERM: a clean stop) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def restart(self, sig: int = signal.SIGTERM, **env: str) -> None:
        """Stop (with ``sig``) and start again, with ``env`` overrides if given."""
        await self.stop(sig)
        self.env.update(env)
        await self.start()

    async def call(self, method: str, params: Any = None) -> Any:
        """A JSON-RPC call (the ``localnet_*`` methods); its result, or ``LocalnetRpcError``."""
        answer = await self.call_raw(method, params)
        if "error" in answer:
            raise LocalnetRpcError(answer["error"])
        return answer["result"]

    async def call_raw(self, method: str, params: Any = None) -> dict[str, Any]:
        """A JSON-RPC call; the whole answer (``result`` or ``error``)."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": [] if params is None else params}
        async with aiohttp.ClientSession() as session, session.post(self.rpc_url, json=body) as resp:
            answer: dict[str, Any] = await resp.json()
        return answer


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def running_localnet(
    env: Mapping[str, str] | None = None,
    *,
    database_url: str | None = None,
    log_dir: Path | None = None,
    start: bool = True,
) -> AsyncIterator[Localnet]:
    """A started localnet on free ports; stopped (and its own database dropped) on exit.

    Defaults for tests: landing 20-40 ms, no market drift; ``env`` overrides them.
    """
    own_database = database_url is None
    name = f"localnet_test_{uuid.uuid4().hex[:10]}"
    if own_database:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        database_url = _with_database(PG_ADMIN_URL, name)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALNET_", "MARKET_"))}
    full.update(
        {
            "LOCALNET_HOST": "127.0.0.1",
            "LOCALNET_RPC_PORT": str(free_port()),
            "LOCALNET_WS_PORT": str(free_port()),
            "LOCALNET_DATABASE_URL": database_url or "",
            "LOCALNET_LANDING_MS": "20-40",
            "MARKET_DRIFT": "false",
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
    )
    full.update(env or {})
    directory = log_dir or Path(tempfile.mkdtemp(prefix="localnet-"))
    net = Localnet(full, directory / f"localnet-{full['LOCALNET_RPC_PORT']}.log")
    try:
        if start:
            await net.start()
        yield net
    finally:
        await net.stop()
        if own_database:
            admin = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
