"""Orders, notifier and gateway in the test's process with AUTH=apikey, on a database of their own.

No router or executor: a test moves orders itself (tests.support.transitions)
with the internal token, as the executor would. Independent of the venues and
the chain, so the doors (keys, ownership, quotas, the multiplexed socket, the
clients) are tested on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import grpc
from aiohttp.test_utils import TestServer

from dexengine.v1 import notifier_pb2_grpc, orders_pb2, orders_pb2_grpc
from services.common import auth, config, grpc_client
from services.common.auth import AuthSettings
from services.gateway.app import build_app
from services.notifier.__main__ import NotifierComponent
from services.orders.__main__ import OrdersComponent
from tests.support.infra import TEST_BACKOFF_MS, TestInfra, isolated
from tests.support.inprocess import serve
from tests.support.mesh import detached

INTERNAL_TOKEN = "test-internal-token-0123456789"
ADMIN = ((auth.INTERNAL, INTERNAL_TOKEN),)


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return ((auth.AUTHORIZATION, f"Bearer {secret}"),)


@dataclass
class Secured:
    settings: config.Settings
    auth: AuthSettings
    orders_target: str
    notifier_target: str
    gateway: TestServer
    channel: grpc.aio.Channel  # to orders, plain: a client's own calls carry only what the test gives them
    notifier_channel: grpc.aio.Channel  # to the notifier, plain
    service_channel: grpc.aio.Channel  # to orders with the internal token, like the executor's

    @property
    def orders(self) -> orders_pb2_grpc.OrdersAsyncStub:
        return orders_pb2_grpc.OrdersStub(self.channel)

    @property
    def notifier(self) -> notifier_pb2_grpc.NotifierAsyncStub:
        return notifier_pb2_grpc.NotifierStub(self.notifier_channel)

    @property
    def service(self) -> orders_pb2_grpc.OrdersAsyncStub:
        """Orders as the executor sees it (internal token): Transition, every order."""
        return orders_pb2_grpc.OrdersStub(self.service_channel)

    @property
    def http(self) -> str:
        return str(self.gateway.make_url("")).rstrip("/")

    @property
    def ws(self) -> str:
        return self.http.replace("http://", "ws://", 1)

    async def new_key(self, name: str, quota_per_min: int = 0) -> tuple[str, str]:
        """(key id, secret) of a new key."""
        created = await self.orders.CreateApiKey(
            orders_pb2.CreateApiKeyRequest(name=name, quota_per_min=quota_per_min), metadata=ADMIN, timeout=5
        )
        return created.key.id, created.secret


@contextlib.asynccontextmanager
async def secured_servers(infra: TestInfra, quota_per_min: int = 600) -> AsyncIterator[Secured]:
    async with isolated(infra) as own:
        settings = replace(
            detached(config.Settings()),
            database_url=own.database_url,
            redis_url=own.redis_url,
            amqp_url=own.amqp_url,
            amqp_prefix=own.amqp_prefix,
            retry_backoff_ms=TEST_BACKOFF_MS,
            outbox_poll_ms=100,
            rate_limit_per_min=0,
        )
        auth_settings = AuthSettings(auth.APIKEY, INTERNAL_TOKEN, quota_per_min)
        orders = OrdersComponent(settings, auth_settings)
        async with serve(orders) as orders_target:
            assert orders.relay is not None
            await asyncio.wait_for(orders.relay.ready.wait(), 10)
            notifier = NotifierComponent(replace(settings, orders_target=orders_target), auth_settings)
            async with serve(notifier) as notifier_target:
                app = build_app(
                    replace(settings, orders_target=orders_target, notifier_target=notifier_target), auth_settings
                )
                gateway = TestServer(app, host="127.0.0.1")
                await gateway.start_server()
                channel = grpc.aio.insecure_channel(orders_target)
                notifier_channel = grpc.aio.insecure_channel(notifier_target)
                service_channel = grpc_client.channel(orders_target, INTERNAL_TOKEN)
                try:
                    yield Secured(
                        settings,
                        auth_settings,
                        orders_target,
                        notifier_target,
                        gateway,
                        channel,
                        notifier_channel,
                        service_channel,
                    )
                finally:
                    for open_channel in (channel, notifier_channel, service_channel):
                        await open_channel.close()
                    await gateway.close()
