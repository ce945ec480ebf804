"""In-process gRPC servers (real grpc.aio on free ports) over the real servers."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pytest

from dexengine.v1 import orders_pb2_grpc
from services.common import config
from services.notifier.__main__ import NotifierComponent
from services.orders.__main__ import OrdersComponent
from tests.support.infra import TEST_BACKOFF_MS, TestInfra
from tests.support.inprocess import serve
from tests.support.mesh import Mesh, detached, free_port, mesh_env
from tests.support.secured import Secured, secured_servers
from tests.support.servers import PrivateRedis


@pytest.fixture(scope="session")
def settings(infra: TestInfra, database: str) -> config.Settings:
    return replace(
        detached(config.Settings()),
        database_url=database,
        redis_url=infra.redis_url,
        amqp_url=infra.amqp_url,
        amqp_prefix=infra.amqp_prefix,
        retry_backoff_ms=TEST_BACKOFF_MS,
        outbox_poll_ms=100,
        rate_limit_per_min=0,
    )


@pytest.fixture(scope="session")
async def orders_server(settings: config.Settings, amqp_cleanup: None) -> AsyncIterator[str]:
    component = OrdersComponent(settings)
    async with serve(component) as target:
        assert component.relay is not None
        await asyncio.wait_for(component.relay.ready.wait(), 10)
        yield target


@pytest.fixture(scope="session")
async def notifier_served(
    settings: config.Settings, orders_server: str
) -> AsyncIterator[tuple[NotifierComponent, str]]:
    """A real notifier (its own AMQP queue, reading orders) and its target."""
    component = NotifierComponent(replace(settings, orders_target=orders_server))
    async with serve(component) as target:
        yield component, target


@pytest.fixture
async def orders(orders_server: str) -> AsyncIterator[orders_pb2_grpc.OrdersAsyncStub]:
    async with grpc.aio.insecure_channel(orders_server) as channel:
        yield orders_pb2_grpc.OrdersStub(channel)


@pytest.fixture
async def pg(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def localnet(
    base_env: dict[str, str], database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    """A real localnet process (its own ports and wallet; schema localnet of the run's database)."""
    log_dir = tmp_path_factory.mktemp("localnet")
    net = Mesh(mesh_env({**base_env, "DATABASE_URL": database}, log_dir), log_dir)
    try:
        await net.start("localnet")
        yield net
    finally:
        await net.stop()


@pytest.fixture(scope="package")
async def secured(infra: TestInfra) -> AsyncIterator[Secured]:
    """Orders, notifier and gateway with AUTH=apikey on a database of their own (no router, no executor)."""
    async with secured_servers(infra.derive("keys")) as servers:
        yield servers


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A Redis server of the test's own, to pause (SIGSTOP), flush or stop."""
    server = PrivateRedis(tmp_path / "redis", free_port())
    await server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)  # a test that failed while it was paused
        await server.stop()
