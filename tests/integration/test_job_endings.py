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
from services.executor.pipeline import Detach, Pipeline
from services.executor.ratelimit import RateLimiter
from services.orders.__main__ import OrdersComponent
from tests.support import transitions
from tests.support.client import SOL, USDC
from tests.support.infra import TestInfra, isolated
from tests.support.inprocess import serve
from tests.support.waiting import eventually

WAIT_MS = 60_000  # long enough that a job sent to wait is still there when the test looks


class Attempt(Pipeline):
    """The real pipeline, whose attempt fails with ``error``; ``broken`` makes recording the failure raise too."""

    def __init__(self, settings: config.Settings, orders: orders_pb2_grpc.OrdersAsyncStub, error: Exception) -> None:
        super().__init__(settings, orders, None, None, Keypair())  # type: ignore[arg-type]
        self.error = error
        self.broken = False

    async def run(self, order: common_pb2.Order, attempt: int, detach: Detach | None = None) -> common_pb2.Order:
        raise self.error

    async def transition(self, order: common_pb2.Order, **step: Any) -> common_pb2.Order:
        if self.broken:
            raise RuntimeError("a defect in failure handling")
        return await super().transition(order, **step)


@dataclass
class Bench:
    settings: config.Settings
    orders: orders_pb2_grpc.OrdersAsyncStub
    names: amqp.Names

    async def run_one_job(self, pipeline: Pipeline, ends_in: str) -> str:
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
    async with isolated(infra.derive("endings"), waits=(WAIT_MS,)) as own:
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


class Counting(Pipeline):
    """The real pipeline up to routing; counts its reads of the order. With ``record_first``, its first route
    records a decision with a real ``route_submit`` (a compare-and-set); every other route stops with NO_ROUTE."""

    def __init__(
        self, settings: config.Settings, orders: orders_pb2_grpc.OrdersAsyncStub, record_first: bool = False
    ) -> None:
        super().__init__(settings, orders, None, None, Keypair())  # type: ignore[arg-type]
        self.record_first = record_first
        self.loads = 0
        self.routed: list[common_pb2.Order] = []

    async def load(self, order_id: str) -> common_pb2.Order:
        self.loads += 1
        return await super().load(order_id)

    async def route(self, order: common_pb2.Order, attempt: int) -> common_pb2.Order:
        self.routed.append(order)
        if self.record_first and len(self.routed) == 1:
            decided = orders_pb2.RouteSubmit(routing=transitions.routing(), submit=transitions.submit())
            return await self.transition(order, route_submit=decided)
        raise FinalError("NO_ROUTE", "stop here")


async def test_the_first_delivery_starts_from_the_order_its_job_carries(bench: Bench) -> None:
    pipeline = Counting(bench.settings, bench.orders)
    await bench.run_one_job(pipeline, bench.names.parking_queue)
    (routed,) = pipeline.routed
    assert routed.status == common_pb2.ORDER_STATUS_PENDING and routed.seq == 1, "quoted from the carried copy"
    assert (routed.token_in, routed.token_out, routed.amount_in, routed.slippage) == (SOL, USDC, "1", "0.01")
    assert routed.created_at.seconds > 0
    assert pipeline.loads == 1, "one read only, when recording the failure"


async def test_a_carried_copy_no_longer_current_is_caught_by_the_first_compare_and_set(bench: Bench) -> None:
    pipeline = Counting(bench.settings, bench.orders, record_first=True)
    original = pipeline.transition

    async def moved_first(order: common_pb2.Order, **step: Any) -> common_pb2.Order:
        if "route_submit" in step and not pipeline.loads:  # another holder began this order since the job was written
            await original(order, begin=orders_pb2.Begin(attempt=1))
        return await original(order, **step)

    pipeline.transition = moved_first  # type: ignore[method-assign]
    order_id = await bench.run_one_job(pipeline, bench.names.parking_queue)
    assert pipeline.loads >= 2, "the stale copy's compare-and-set failed, and the order was read again"
    first, again = pipeline.routed
    assert first.status == common_pb2.ORDER_STATUS_PENDING and first.seq == 1
    assert again.status == common_pb2.ORDER_STATUS_ROUTING and again.seq == 2, "carried on from where it was"
    got = await bench.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, include_events=True), timeout=5)
    assert [e.status for e in got.events] == [
        common_pb2.ORDER_STATUS_PENDING,
        common_pb2.ORDER_STATUS_ROUTING,
        common_pb2.ORDER_STATUS_FAILED,
    ], "nothing of the stale copy's decision was recorded"
