"""The real servers the tests use, and isolation between test runs.

Tests talk to real PostgreSQL, Redis and RabbitMQ. Each run gets its own
database (created and dropped here), its own Redis database index and its own
AMQP name prefix, so a test run never touches a running ``make run`` mesh.
A missing server fails the run loudly; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class InfrastructureMissing(RuntimeError):
    pass


def require_servers() -> None:
    """Raise naming every server that does not answer (never skip)."""
    missing = []
    for name, url, port in (
        ("PostgreSQL", PG_ADMIN_URL, 5432),
        ("Redis", REDIS_URL, 6379),
        ("RabbitMQ", AMQP_URL, 5672),
    ):
        parts = urlsplit(url)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or port), timeout=3):
                pass
        except OSError as exc:
            missing.append(f"{name} at {parts.hostname}:{parts.port or port} ({exc})")
    if missing:
        raise InfrastructureMissing(
            "tests need real servers, not reachable: " + "; ".join(missing) + " — .ci/run starts them"
        )


TEST_BACKOFF_MS = (200, 400, 800)  # retry waits of the tests' services: short, the same three tiers as the defaults


@dataclass(frozen=True)
class TestInfra:
    __test__ = False  # not a test class, whatever its name

    database_url: str
    database_name: str
    redis_url: str
    amqp_url: str
    amqp_prefix: str

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "AMQP_URL": self.amqp_url,
            "AMQP_PREFIX": self.amqp_prefix,
        }

    def derive(self, suffix: str) -> TestInfra:
        """Another isolated slot of this run: its own database and AMQP names.

        Two meshes must never share a database: each orders service's relay
        drains the whole outbox into its own AMQP prefix.
        """
        name = f"{self.database_name}_{suffix}"
        url = urlunsplit(urlsplit(self.database_url)._replace(path=f"/{name}"))
        return TestInfra(url, name, self.redis_url, self.amqp_url, f"{self.amqp_prefix}{suffix}.")


async def create_database(infra: TestInfra) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{infra.database_name}"')
    finally:
        await admin.close()


async def drop_database(infra: TestInfra) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{infra.database_name}" WITH (FORCE)')
    finally:
        await admin.close()


async def delete_topology(infra: TestInfra, waits: Iterable[int] = ()) -> None:
    """Delete the queues and exchanges a run created under its prefix (``waits``: its own backoff tiers)."""
    from services.common import amqp, config

    names = amqp.Names(infra.amqp_prefix)
    connection = await aio_pika.connect(infra.amqp_url)
    try:
        channel = await connection.channel()
        # Every tier a run may have declared: the tests' and the defaults (quorum queues left
        # behind pile up in the shared broker, run after run).
        tiers = sorted(set(TEST_BACKOFF_MS) | set(config.Settings().retry_backoff_ms) | set(waits))
        for queue in names.queues(tiers):
            await channel.queue_delete(queue)
        for exchange in names.exchanges:
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def isolated(infra: TestInfra, waits: Iterable[int] = ()) -> AsyncIterator[TestInfra]:
    """A database and AMQP names of its own for as long as the block runs (``waits``: backoff tiers it adds)."""
    await create_database(infra)
    try:
        yield infra
    finally:
        await drop_database(infra)
        await delete_topology(infra, waits)


def new_infra() -> TestInfra:
    run_id = uuid.uuid4().hex[:10]
    name = f"dexengine_test_{run_id}"
    parts = urlsplit(PG_ADMIN_URL)
    database_url = urlunsplit(parts._replace(path=f"/{name}"))
    return TestInfra(database_url, name, REDIS_URL, AMQP_URL, f"t{run_id}.")
