"""A new order's answer does not wait for Redis: the cache entry is written after it, and lands.

The orders service runs in this process against a Redis server of its own, which the test pauses (SIGSTOP)
while an order is created. A create that waited for its cache fill would answer only once the fill gave up
(the cache's 0.25 s socket timeout, a write it then logs as failed and drops); the create answers at once
and, with Redis resumed, the entry lands as the commit left it.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import replace

import grpc
import orjson
import pytest
import redis.asyncio as aioredis

from dexengine.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from services.common import config
from services.orders.__main__ import OrdersComponent
from services.orders.cache import keys
from tests.support.client import SOL, USDC
from tests.support.infra import TestInfra, isolated
from tests.support.inprocess import serve
from tests.support.servers import PrivateRedis
from tests.support.waiting import eventually


async def test_a_create_answers_before_its_cache_fill_and_the_fill_lands(
    settings: config.Settings, infra: TestInfra, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    assert private_redis.proc is not None
    async with isolated(infra.derive("fill")) as own:
        own_settings = replace(
            settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix, redis_url=private_redis.url
        )
        async with serve(OrdersComponent(own_settings)) as target, grpc.aio.insecure_channel(target) as channel:
            orders = orders_pb2_grpc.OrdersStub(channel)
            request = orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01")
            warm = (await orders.CreateOrder(request, timeout=5)).order  # the cache's connection is open
            redis = aioredis.from_url(private_redis.url)
            try:
                status_key = keys(warm.id)[0]
                with contextlib.suppress(TimeoutError):
                    await eventually(lambda: redis.exists(status_key))
                assert await redis.exists(status_key), "a create's entry lands"

                private_redis.proc.send_signal(signal.SIGSTOP)
                try:
                    created = (await orders.CreateOrder(request, timeout=5)).order
                finally:
                    private_redis.proc.send_signal(signal.SIGCONT)
                assert created.status == common_pb2.ORDER_STATUS_PENDING

                status_key, events_key = keys(created.id)[:2]
                with contextlib.suppress(TimeoutError):
                    await eventually(lambda: redis.exists(status_key))
                cached = await redis.get(status_key)
                assert cached is not None, "the fill waited for nothing but Redis, and landed once it answered"
                assert orjson.loads(cached)["seq"] == 1 and orjson.loads(cached)["status"] == "pending"
                assert [orjson.loads(e)["status"] for e in await redis.lrange(events_key, 0, -1)] == ["pending"]
                # Had the answer waited for the fill, the fill would have given up first (Redis was paused).
                failed = [r for r in caplog.records if r.name == "services.orders.cache" and r.levelname == "WARNING"]
                assert not failed, "no cache write gave up: the create did not wait for Redis"
            finally:
                await redis.aclose()
