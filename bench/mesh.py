"""The mesh under test: the five services as real processes, isolated from others.

Reuses the end-to-end tests' launcher (:mod:`tests.support.mesh`: free ports,
readiness by gRPC health and ``/healthz``) and adds what a benchmark needs:
its own database ``dexengine_bench`` (dropped and created afresh per run),
Redis database 2 (flushed), the AMQP prefix ``bench.`` (its queues and
exchanges deleted before and after), a metrics port per process (the defaults
would collide with another mesh on the same box), extra executor replicas,
and the pids to sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import redis.asyncio as aioredis
import uvloop

from services.common import amqp, config
from services.launcher import LOCALNET, SERVICES
from tests.support.mesh import ROOT, Mesh, free_port, mesh_env

T = TypeVar("T")

BENCH_DATABASE = "dexengine_bench"
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/2")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
AMQP_PREFIX = "bench."


def database_url() -> str:
    parts = urlsplit(PG_ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}"))


def server_ports() -> dict[str, int]:
    """Where PostgreSQL, Redis and RabbitMQ listen (to find their processes)."""
    return {
        "postgres": urlsplit(PG_ADMIN_URL).port or 5432,
        "redis": urlsplit(REDIS_URL).port or 6379,
        "rabbitmq": urlsplit(AMQP_URL).port or 5672,
    }


def infra_env() -> dict[str, str]:
    return {
        "DATABASE_URL": database_url(),
        "REDIS_URL": REDIS_URL,
        "AMQP_URL": AMQP_URL,
        "AMQP_PREFIX": AMQP_PREFIX,
    }


async def _delete_amqp(settings: config.Settings) -> None:
    names = amqp.Names(AMQP_PREFIX)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        queues = names.queues(settings.retry_backoff_ms)
        exchanges = names.exchanges
        for name in queues:
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(name)
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.close()
        for name in exchanges:
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.exchange_delete(name)
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.close()
    finally:
        await connection.close()


async def reset_infra(env: Mapping[str, str]) -> None:
    """A fresh database, an empty Redis db and no leftover bench.* queues."""
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    finally:
        await admin.close()
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    await _delete_amqp(settings_from(env))


async def cleanup_infra(env: Mapping[str, str]) -> None:
    """After a run: delete the bench.* queues (the database stays for inspection)."""
    await _delete_amqp(settings_from(env))


def settings_from(env: Mapping[str, str]) -> config.Settings:
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return config.load()
    finally:
        os.environ.clear()
        os.environ.update(saved)


class BenchMesh(Mesh):
    """:class:`Mesh` plus replicas (``executor-2`` …) and a metrics port per process."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir)
        self.replica_ports: dict[str, int] = {}

    def grpc_target(self, service: str) -> str:
        if service in self.replica_ports:
            return f"127.0.0.1:{self.replica_ports[service]}"
        return super().grpc_target(service)

    async def start_replica(self, key: str, service: str) -> None:
        port = free_port()
        self.replica_ports[key] = port
        log = (self.log_dir / f"{key}.log").open("ab")
        self.procs[key] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{service}",
            env={**self.env, f"{service.upper()}_GRPC_PORT": str(port), "METRICS_PORT": str(free_port())},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )

    async def _ready(self, name: str) -> bool:
        if name in self.replica_ports:
            service = name.split("-", 1)[0]
            saved = self.env[f"{service.upper()}_GRPC_PORT"]
            self.env[f"{service.upper()}_GRPC_PORT"] = str(self.replica_ports[name])
            try:
                return await super()._ready(service)
            finally:
                self.env[f"{service.upper()}_GRPC_PORT"] = saved
        return await super()._ready(name)

    async def start_all(self, executors: int = 1) -> None:
        await self.start_one(LOCALNET)
        await self.wait_ready(LOCALNET, timeout=60)
        for name in SERVICES:
            extra = {} if name == "gateway" else {"METRICS_PORT": str(free_port())}
            await self.start_one(name, extra)
        for n in range(2, executors + 1):
            await self.start_replica(f"executor-{n}", "executor")
        await self.wait_ready(*self.procs, timeout=60)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items() if proc.returncode is None}

    def crashed(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.returncode is not None]


def bench_env(profile_env: Mapping[str, str], log_level: str, wallet_dir: Path) -> dict[str, str]:
    """The services' environment: this one less tracing, the bench infra, the profile's settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base.update(infra_env())
    base.update({"LOG_LEVEL": log_level, "PYTHONUNBUFFERED": "1"})
    base.update(profile_env)
    return mesh_env(base, wallet_dir)


def run_stoppable(main: Callable[[], Coroutine[object, object, T]]) -> T:
    """Run ``main()`` on uvloop; SIGTERM stops it as Ctrl-C does.

    Either cancels the run, so its ``finally`` stops the mesh it started and deletes its queues. A run started in
    the background (``&``, nohup, a supervisor) ignores SIGINT, and a SIGTERM used to end it at once, leaving the
    services running and the ``bench.`` queues behind. Stopped by SIGTERM, the process exits with 143."""

    async def stoppable() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main()

    try:
        return uvloop.run(stoppable())
    except asyncio.CancelledError:
        logging.getLogger("bench").info("stopped by SIGTERM")
        raise SystemExit(128 + signal.SIGTERM) from None
