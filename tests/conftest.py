"""Session fixtures: real PostgreSQL / Redis / RabbitMQ, isolated per run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aio_pika
import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.support.infra import PG_ADMIN_URL, TestInfra, new_infra, require_servers


@pytest.fixture(scope="session")
def infra() -> Iterator[TestInfra]:
    require_servers()
    info = new_infra()
    yield info


@pytest.fixture(scope="session")
async def database(infra: TestInfra) -> AsyncIterator[str]:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{infra.database_name}"')
    finally:
        await admin.close()
    yield infra.database_url
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{infra.database_name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def amqp_cleanup(infra: TestInfra) -> AsyncIterator[None]:
    """Delete this run's queues and exchanges at the end."""
    yield
    from services.common import amqp, config

    names = amqp.Names(infra.amqp_prefix)
    settings = config.Settings()
    connection = await aio_pika.connect(infra.amqp_url)
    try:
        channel = await connection.channel()
        queues = [names.execute_queue, names.parking_queue, *(names.wait_queue(d) for d in settings.retry_backoff_ms)]
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in (names.execute_exchange, names.retry_exchange, names.parking_exchange, names.events_exchange):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def redis_client(infra: TestInfra) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(infra.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def base_env(infra: TestInfra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(infra.env())
    env.update(
        {
            "QUOTE_LATENCY_MS": "5-10",
            "EXECUTION_LATENCY_MS": "50-80",
            "RETRY_BACKOFF_MS": "200,400,800",
            "RATE_LIMIT_PER_MIN": "0",
            "MARKET_DRIFT": "false",
            "OUTBOX_POLL_MS": "200",
            "SHUTDOWN_GRACE_S": "3",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env
