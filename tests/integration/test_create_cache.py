"""A create writes nothing to Redis; the first read of the order fills its entry, and transitions keep it.

The orders service runs in this process against a Redis server of its own, which the test pauses (SIGSTOP)
while an order is created: the create answers at once, and no cache write waits or gives up (the cache's
0.25-s socket timeout would log one as failed). The entry appears only with the first read, and each
transition after it lands on it.
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
from tests.support import transitions
from tests.support.cached import cached_view
from tests.support.client import SOL, USDC
from tests.support.infra import TestInfra, isolated
from tests.support.inprocess import serve
from tests.support.servers import PrivateRedis
from tests.support.waiting import eventually


async def test_a_create_writes_nothing_to_redis_and_the_first_read_fills_the_entry(
    settings: config.Settings, infra: TestInfra, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    assert private_redis.proc is not None
    async with isolated(infra.derive("createcache")) as own:
        own_settings = replace(
            settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix, redis_url=private_redis.url
        )
        async with serve(OrdersComponent(own_settings)) as target, grpc.aio.insecure_channel(target) as channel:
            orders = orders_pb2_grpc.OrdersStub(channel)
            request = orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01")
            redis = aioredis.from_url(private_redis.url)
            try:
                private_redis.proc.send_signal(signal.SIGSTOP)
                try:
                    created = (await orders.CreateOrder(request, timeout=5)).order
                finally:
                    private_redis.proc.send_signal(signal.SIGCONT)
                assert created.status == common_pb2.ORDER_STATUS_PENDING
                failed = [r for r in caplog.records if r.name == "services.orders.cache" and r.levelname == "WARNING"]
                assert not failed, "no cache write was waiting on Redis"
                assert await redis.keys(f"order:{created.id}:*") == [], "a create writes nothing"

                read = orders_pb2.GetOrderRequest(order_id=created.id, include_events=True)
                got = await orders.GetOrder(read, timeout=5)
                assert [e.seq for e in got.events] == [1]
                status_key, events_key = keys(created.id)[:2]
                cached = await redis.get(status_key)
                assert cached is not None, "the read filled the entry"
                assert (orjson.loads(cached)["seq"], orjson.loads(cached)["status"]) == (1, "pending")

                await orders.Transition(transitions.request(created.id, "pending", "routing"), timeout=5)
                with contextlib.suppress(TimeoutError):
                    await eventually(lambda: _seq(redis, status_key, 2))
                assert (await cached_view(redis, status_key))["status"] == "routing", "the append kept it"
                assert [orjson.loads(e)["seq"] for e in await redis.lrange(events_key, 0, -1)] == [1, 2]
            finally:
                await redis.aclose()


async def _seq(redis: aioredis.Redis, key: str, seq: int) -> bool:
    raw = await redis.get(key)
    return raw is not None and orjson.loads(raw)["seq"] == seq
