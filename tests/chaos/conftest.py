"""A private PostgreSQL, Redis and RabbitMQ plus the five services, for killing."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from services.common import config
from tests.chaos.harness import Stack
from tests.support.mesh import Mesh, free_port, mesh_env
from tests.support.servers import PrivatePostgres, PrivateRabbit, PrivateRedis

CHAOS_ENV = {
    "QUOTE_LATENCY_MS": "5-15",
    "LOCALNET_LANDING_MS": "300-500",
    "RETRY_BACKOFF_MS": "1000,2000",
    "MAX_ATTEMPTS": "3",
    "RATE_LIMIT_PER_MIN": "0",
    "MARKET_DRIFT": "false",
    "OUTBOX_POLL_MS": "200",
    "SHUTDOWN_GRACE_S": "2",
    "AMQP_PREFIX": "",
}


@pytest.fixture(scope="module")
async def stack(base_env: dict[str, str]) -> AsyncIterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="dexengine-chaos-"))
    base.chmod(0o755)
    pg = PrivatePostgres(base / "pg", free_port())
    redis = PrivateRedis(base / "redis", free_port())
    rabbit = PrivateRabbit(base / "rabbit", free_port(), free_port())
    mesh: Mesh | None = None
    try:
        await pg.start()
        await redis.start()
        await rabbit.start()
        env = mesh_env({**base_env, "DATABASE_URL": pg.url, "LOCALNET_DATABASE_URL": pg.url}, base)
        env.update(CHAOS_ENV)
        env.update({"DATABASE_URL": pg.url, "REDIS_URL": redis.url, "AMQP_URL": rabbit.url})
        env["CHAOS_CRASH_MARKER"] = str(base / "crashed")
        mesh = Mesh(env, base / "logs")
        mesh.log_dir.mkdir()
        await mesh.start()
        settings = replace(config.Settings(), retry_backoff_ms=(1000, 2000), max_attempts=3)
        yield Stack(pg, redis, rabbit, mesh, settings)
    finally:
        if mesh is not None:
            await mesh.stop()
        await rabbit.stop()
        await redis.stop()
        if pg.data.exists():
            with contextlib.suppress(Exception):
                await pg.stop("immediate")
        if not os.environ.get("KEEP_CHAOS_DIR"):
            shutil.rmtree(base, ignore_errors=True)
