"""Session fixtures: real PostgreSQL / Redis / RabbitMQ, isolated per run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.support.infra import (
    TEST_BACKOFF_MS,
    TestInfra,
    create_database,
    delete_topology,
    drop_database,
    new_infra,
    require_servers,
)


@pytest.fixture(scope="session")
def infra() -> Iterator[TestInfra]:
    require_servers()
    info = new_infra()
    yield info


@pytest.fixture(scope="session")
async def database(infra: TestInfra) -> AsyncIterator[str]:
    await create_database(infra)
    yield infra.database_url
    await drop_database(infra)


@pytest.fixture(scope="session")
async def amqp_cleanup(infra: TestInfra) -> AsyncIterator[None]:
    """Delete this run's queues and exchanges at the end."""
    yield
    await delete_topology(infra)


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
            "LOCALNET_LANDING_MS": "50-80",
            # A killed executor's sent orders come back after half a lease (services/orders/landing_sweep.py).
            "EXECUTOR_LEASE_MS": "2000",
            "RETRY_BACKOFF_MS": ",".join(map(str, TEST_BACKOFF_MS)),
            "RATE_LIMIT_PER_MIN": "0",
            "MARKET_DRIFT": "false",
            "OUTBOX_POLL_MS": "200",
            "SHUTDOWN_GRACE_S": "3",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env
