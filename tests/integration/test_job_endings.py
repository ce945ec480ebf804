"""Every execution job ends in a definite state, on a real RabbitMQ with a real orders service.

The executor's consumer runs in this process on a topology of its own; its
pipeline is the real one (orders over gRPC) with the attempt itself replaced by
the failure under test. What ended where is read from the broker afterwards,
once the consumer's channel is closed (an unacked message would be back in the
work queue then).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
import grpc
import pytest
from solders.keypair import Keypair

from dexengine.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from services.common import amqp, config
from services.executor.consumer import JobConsumer
from services.executor.errors import FinalError
from services.executor.pipeline import Pipeline
from services.executor.ratelimit import RateLimiter
from services.orders.__main__ import OrdersComponent
from tests.support.client import SOL, USDC
from tests.support.infra import TestInfra, isolated
from tests.support.inprocess import serve
from tests.support.waiting import eventually

WAIT_MS = 60_000  # long enough that a job sent to wait is still there when the test looks


class Attempt(Pipeline):
    """The real pipeline, whose attempt fails with ``error``; ``broken`` makes recording the failure raise too."""

    def __init__(self, settings: config.Settings, orders: orders_pb2_grpc.OrdersStub, error: Exception) -> None:
        super().__init__(settings, orders, None, None, Keypair())  # type: ignore[arg-type]
        self.error = error
        self.broken = False

    async def run(self, order: common_pb2.Order, attempt: int) -> common_pb2.Order:
        raise self.error

    async def transition(self, order: common_pb2.Order, **step: Any) -> common_pb2.Order:
        if self.broken:
            raise RuntimeError("a defect in failure handling")
        return await super().transition(order, **step)


@dataclass
class Bench:
    settings: config.Settings
    orders: orders_pb2_grpc.OrdersStub
    names: amqp.Names

    async def run_one_job(self, pipeline: Attempt, ends_in: str) -> str:
        """Create an order, let the consumer handle its job until a message is in ``ends_in``, stop it; the id."""
        order = (
            await self.orders.CreateOrder(
                orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01"), timeout=5
            )
        ).order
        consumer = JobConsumer(self.settings, pipeline, RateLimiter(None, 0, 0))
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            channel = await connection.channel()
            await consumer.start(channel)
            await eventually(lambda: self._has_message(ends_in), timeout=15)
            await eventually(lambda: _idle(consumer), timeout=5)
            await consumer.stop(5)
        finally:
            await connection.close()
        return order.id

    async def _has_message(self, queue: str) -> bool:
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            declared = await (await connection.channel()).declare_queue(queue, passive=True)
            return bool(declared.declaration_result.message_count)
        finally:
            await connection.close()

    async def messages(self, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            found = []
            while (message := await declared.get(fail=False, no_ack=True)) is not None:
                found.append(message)
            return found
        finally:
            await connection.close()


async def _idle(consumer: JobConsumer) -> bool:
    return consumer.stats.in_flight == 0


@pytest.fixture
async def bench(settings: config.Settings, infra: TestInfra) -> AsyncIterator[Bench]:
    async with isolated(infra.derive("endings")) as own:
        own_settings = replace(
            settings,
            database_url=own.database_url,
            amqp_prefix=own.amqp_prefix,
            retry_backoff_ms=(WAIT_MS,),
            max_attempts=3,
        )
        async with serve(OrdersComponent(own_settings)) as target, grpc.aio.insecure_channel(target) as channel:
            yield Bench(own_settings, orders_pb2_grpc.OrdersStub(channel), amqp.Names(own.amqp_prefix))


async def test_a_final_failure_parks_exactly_one_message_with_its_reason(bench: Bench) -> None:
    pipeline = Attempt(bench.settings, bench.orders, FinalError("NO_ROUTE", "no pool trades this pair"))
    order_id = await bench.run_one_job(pipeline, bench.names.parking_queue)
    order = (await bench.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, fresh=True), timeout=5)).order
    assert order.status == common_pb2.ORDER_STATUS_FAILED
    assert order.error_message == "NO_ROUTE: no pool trades this pair"
    parked = await bench.messages(bench.names.parking_queue)
    assert len(parked) == 1, "exactly one message on the parking queue"
    assert parked[0].headers["x-park-reason"] == "NO_ROUTE: no pool trades this pair"
    assert parked[0].headers["x-order-id"] == order_id
    assert await bench.messages(bench.names.execute_queue) == [], "the job itself was acked"
    assert await bench.messages(bench.names.wait_queue(WAIT_MS)) == []


async def test_a_failure_in_failure_handling_still_ends_the_message(bench: Bench) -> None:
    pipeline = Attempt(bench.settings, bench.orders, FinalError("NO_ROUTE", "no pool trades this pair"))
    pipeline.broken = True
    order_id = await bench.run_one_job(pipeline, bench.names.wait_queue(WAIT_MS))
    waiting = await bench.messages(bench.names.wait_queue(WAIT_MS))
    assert [m.headers["x-order-id"] for m in waiting] == [order_id], "sent to wait, to run again"
    assert waiting[0].headers["x-attempt"] == 1, "the same attempt: its failure was never recorded"
    assert await bench.messages(bench.names.execute_queue) == [], "acked: no prefetch slot held, no redelivery loop"
    assert await bench.messages(bench.names.parking_queue) == []
    order = (await bench.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, fresh=True), timeout=5)).order
    assert order.status == common_pb2.ORDER_STATUS_PENDING, "nothing was recorded, so nothing is lost"
