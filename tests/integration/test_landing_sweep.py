"""Orders takes back the sent orders of an executor whose lease lapsed, and only those (landing_sweep.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aio_pika
import asyncpg
import grpc
import orjson
import pytest
import redis.asyncio as aioredis

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import amqp, config, metrics, states
from services.common.leases import lease_key
from services.orders.__main__ import OrdersComponent
from tests.support import transitions
from tests.support.client import SOL, USDC
from tests.support.infra import TestInfra, isolated
from tests.support.inprocess import serve
from tests.support.waiting import eventually

LEASE_MS = 400  # the sweep runs every half lease here, and takes an order back half a lease after its lease lapsed


@dataclass
class Swept:
    orders: orders_pb2_grpc.OrdersAsyncStub
    settings: config.Settings
    redis: aioredis.Redis

    async def submitted_by(self, executor: str) -> str:
        """A new order, taken to ``submitted`` with ``executor`` named as the one watching it land."""
        created = await self.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01"), timeout=5
        )
        request = transitions.request(created.order.id, "pending", "submitted")
        request.route_submit.submit.execution.executor = executor
        moved = await self.orders.Transition(request, timeout=5)
        assert moved.order.execution.executor == executor
        return created.order.id

    async def executor_of(self, order_id: str) -> str | None:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            named: str | None = await conn.fetchval(
                "SELECT execution ->> 'executor' FROM orders WHERE id = $1", uuid.UUID(order_id)
            )
            return named
        finally:
            await conn.close()

    async def jobs(self) -> list[dict[str, object]]:
        """Every job in the execute queue now (taken off it)."""
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            queue = await (await connection.channel()).get_queue(amqp.Names(self.settings.amqp_prefix).execute_queue)
            found = []
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                found.append(orjson.loads(message.body))
            return found
        finally:
            await connection.close()


@pytest.fixture
async def swept(settings: config.Settings, infra: TestInfra) -> AsyncIterator[Swept]:
    async with isolated(infra.derive("sweep")) as own:
        own_settings = replace(
            settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix, executor_lease_ms=LEASE_MS
        )
        redis = aioredis.from_url(own.redis_url)
        component = OrdersComponent(own_settings)
        try:
            async with serve(component) as target, grpc.aio.insecure_channel(target) as channel:
                yield Swept(orders_pb2_grpc.OrdersStub(channel), own_settings, redis)
        finally:
            await redis.aclose()


async def test_an_order_whose_executor_lease_lapsed_gets_its_job_again_once(swept: Swept) -> None:
    prefix = swept.settings.amqp_prefix
    alive, gone = f"alive-{uuid.uuid4().hex[:6]}", f"gone-{uuid.uuid4().hex[:6]}"
    await swept.redis.set(lease_key(prefix, alive), "1", px=60_000)
    kept = await swept.submitted_by(alive)
    taken = await swept.submitted_by(gone)  # no lease: its executor is gone
    again = {"orderId": taken, "attempt": 1}  # the order named only: a copy of it would carry no signed transaction
    counted = _taken_back()
    jobs: list[dict[str, object]] = []  # every job published, in the order they came

    async def taken_back() -> bool:
        jobs.extend(await swept.jobs())
        return again in jobs and any(job["orderId"] == kept for job in jobs)

    await eventually(taken_back, timeout=10)
    assert await swept.executor_of(taken) is None
    assert _taken_back() == counted + 1, "dexengine_orders_taken_back_total counts it"
    assert await swept.executor_of(kept) == alive, "an executor whose lease holds keeps its order"
    # Taken back once: the name is cleared, so later sweeps leave the order to its new job.
    await asyncio.sleep(LEASE_MS * 4 / 1000)
    jobs.extend(await swept.jobs())
    of_taken = [job for job in jobs if job["orderId"] == taken]
    assert len(of_taken) == 2 and "order" in of_taken[0] and of_taken[1] == again, of_taken
    assert [job for job in jobs if job["orderId"] == kept and "order" not in job] == [], "only its create's job"
    order = (await swept.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=taken, fresh=True), timeout=5)).order
    assert order.status == states.to_proto(states.SUBMITTED) and not order.execution.executor


def _taken_back() -> float:
    return metrics.REGISTRY.get_sample_value("dexengine_orders_taken_back_total") or 0.0
