"""Backpressure: with MAX_LIVE_ORDERS live, new orders are refused (gRPC RESOURCE_EXHAUSTED, HTTP 429)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp.test_utils import TestServer

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import config, states
from services.common.errors import parse_rpc_error
from services.gateway.app import build_app
from services.orders.__main__ import OrdersComponent
from tests.support import transitions
from tests.support.client import SOL, USDC, post_order
from tests.support.infra import TestInfra, isolated
from tests.support.inprocess import serve

LIMIT = 2


@dataclass
class Limited:
    component: OrdersComponent
    orders: orders_pb2_grpc.OrdersAsyncStub
    http: str

    async def live_count_refreshed(self) -> None:
        assert self.component.admission is not None
        await self.component.admission.refresh()

    async def total(self) -> int:
        assert self.component.pool is not None
        return int(await self.component.pool.fetchval("SELECT count(*) FROM orders"))


@pytest.fixture
async def limited(settings: config.Settings, infra: TestInfra) -> AsyncIterator[Limited]:
    async with isolated(infra.derive("admission")) as own:
        own_settings = replace(
            settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix, max_live_orders=LIMIT
        )
        component = OrdersComponent(own_settings)
        async with serve(component) as target, grpc.aio.insecure_channel(target) as channel:
            gateway = TestServer(build_app(replace(own_settings, orders_target=target)), host="127.0.0.1")
            await gateway.start_server()
            try:
                yield Limited(component, orders_pb2_grpc.OrdersStub(channel), str(gateway.make_url("")).rstrip("/"))
            finally:
                await gateway.close()


def request(amount: str = "1", key: str = "") -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        token_in=SOL, token_out=USDC, amount_in=amount, slippage="0.01", idempotency_key=key
    )


async def refused(limited: Limited, req: orders_pb2.CreateOrderRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await limited.orders.CreateOrder(req, timeout=5)
    details = parse_rpc_error(info.value)
    return details.code, details.reason


async def test_a_full_backlog_refuses_new_orders_changes_nothing_and_still_answers_replays(limited: Limited) -> None:
    first = (await limited.orders.CreateOrder(request(key="admission-first"), timeout=5)).order
    await limited.orders.CreateOrder(request(), timeout=5)
    await limited.live_count_refreshed()

    assert await refused(limited, request("3")) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKLOG_FULL")
    assert await limited.total() == LIMIT, "a refused order is not created"

    replay = await limited.orders.CreateOrder(request(key="admission-first"), timeout=5)
    assert (replay.created, replay.order.id) == (False, first.id), "a replay is answered with its order"
    conflict = await refused(limited, request("2", key="admission-first"))
    assert conflict == (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED")

    async with aiohttp.ClientSession() as session:
        body = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "4", "slippage": "0.01"}
        async with session.post(f"{limited.http}/api/orders/execute", json=body) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            error = (await resp.json())["error"]
        assert error["code"] == "BACKLOG_FULL"
        assert str(LIMIT) in error["message"]
    assert await limited.total() == LIMIT


async def test_a_finished_order_makes_room_and_accepted_orders_count_before_the_next_refresh(
    limited: Limited,
) -> None:
    one = (await limited.orders.CreateOrder(request(), timeout=5)).order
    await limited.orders.CreateOrder(request(), timeout=5)
    await limited.live_count_refreshed()
    assert (await refused(limited, request()))[1] == "BACKLOG_FULL"

    await limited.orders.Transition(
        transitions.request(one.id, states.to_proto("pending"), states.to_proto("failed")),
        timeout=5,
    )
    await limited.live_count_refreshed()
    async with aiohttp.ClientSession() as session:
        status, body = await post_order(
            session, limited.http, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01"}
        )
    assert status == 201, body
    # counted at once, not at the next refresh: a burst cannot run far past the limit
    assert (await refused(limited, request()))[1] == "BACKLOG_FULL"


async def test_submits_beyond_the_in_flight_limit_are_refused_at_once_never_left_to_time_out(
    settings: config.Settings, infra: TestInfra
) -> None:
    async with isolated(infra.derive("inflight")) as own:
        own_settings = replace(settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix)
        component = OrdersComponent(own_settings)
        async with serve(component) as target:
            gateway_settings = replace(own_settings, orders_target=target, max_submits_in_flight=1)
            gateway = TestServer(build_app(gateway_settings), host="127.0.0.1")
            await gateway.start_server()
            try:
                url = str(gateway.make_url("")).rstrip("/")
                body = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01"}
                async with aiohttp.ClientSession() as session:

                    async def submit() -> tuple[int, dict[str, Any], str | None]:
                        async with session.post(f"{url}/api/orders/execute", json=body) as resp:
                            return resp.status, await resp.json(), resp.headers.get("Retry-After")

                    answers = await asyncio.gather(*(submit() for _ in range(30)))
            finally:
                await gateway.close()
            assert component.pool is not None
            stored = int(await component.pool.fetchval("SELECT count(*) FROM orders"))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {201, 429}, statuses
    refused = [(b["error"]["code"], retry) for status, b, retry in answers if status == 429]
    assert refused and set(refused) == {("OVERLOADED", "1")}, refused
    assert stored == statuses.count(201), "every 201 is an order, and a refusal wrote nothing"
