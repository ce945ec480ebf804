"""A commit made while the relay publishes a batch is published at once, not after the poll interval."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import grpc
import orjson

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import amqp, config
from services.orders.__main__ import OrdersComponent
from tests.support import published
from tests.support.client import SOL, USDC
from tests.support.infra import TestInfra, isolated
from tests.support.inprocess import serve
from tests.support.waiting import eventually

POLL_MS = 120_000  # far longer than the test may take: only the commit's wake-up can publish in time


def request() -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01")


async def test_an_order_committed_during_a_publish_is_published_without_waiting_for_the_poll(
    settings: config.Settings, infra: TestInfra
) -> None:
    async with isolated(infra.derive("wakeup")) as own:
        component = OrdersComponent(
            replace(settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix, outbox_poll_ms=POLL_MS)
        )
        async with serve(component) as target, grpc.aio.insecure_channel(target) as channel:
            orders = orders_pb2_grpc.OrdersStub(channel)
            relay = component.relay
            assert relay is not None
            await asyncio.wait_for(relay.ready.wait(), 10)
            send = relay._publish_job
            second: list[str] = []
            mid_publish = asyncio.Event()

            async def send_and_commit_another(row: Any, stored: dict[str, Any]) -> None:
                if not mid_publish.is_set():
                    mid_publish.set()  # once: the batch's rows are sent concurrently
                    # another order commits, which wakes the relay
                    second.append((await orders.CreateOrder(request(), timeout=5)).order.id)
                    await asyncio.wait_for(relay._wake.wait(), 5)
                await send(row, stored)

            relay._publish_job = send_and_commit_another  # type: ignore[method-assign]
            await orders.CreateOrder(request(), timeout=5)
            pool = component.pool
            assert pool is not None

            await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout=10)
            assert second, "the second order was created during the first publish"
            assert relay.published == 4, "two orders: a job and a pending event each"


async def test_a_row_whose_replica_died_before_its_relay_ran_is_published_by_the_poll(
    settings: config.Settings, infra: TestInfra
) -> None:
    """Commits wake only their own replica's relay: a row left by a replica that died is found by polling."""
    async with isolated(infra.derive("orphan")) as own:
        component = OrdersComponent(
            replace(settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix, outbox_poll_ms=200)
        )
        async with serve(component):
            relay, pool = component.relay, component.pool
            assert relay is not None and pool is not None
            await asyncio.wait_for(relay.ready.wait(), 10)
            await asyncio.sleep(0.3)  # the relay is idle: waiting on its wake-up or its poll
            # A commit of another replica, which died before its relay ran: nothing wakes this one.
            await pool.execute(
                "INSERT INTO outbox (order_id, kind, payload) VALUES ($1, 'event', $2)",
                uuid.uuid4(),
                '[{"seq": 1, "status": "pending"}]',
            )
            await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout=5)
            assert relay.published == 1


async def test_a_batch_goes_out_as_one_message_per_order_type_each_commit_in_it(
    settings: config.Settings, infra: TestInfra
) -> None:
    """Rows of several orders claimed in one batch: one message per order type, its commits in id order, each
    with its own trace context; every consumer reads each commit as it was written."""
    async with isolated(infra.derive("batches")) as own:
        component = OrdersComponent(
            replace(settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix, outbox_poll_ms=POLL_MS)
        )
        async with serve(component):
            relay, pool = component.relay, component.pool
            assert relay is not None and pool is not None
            await asyncio.wait_for(relay.ready.wait(), 10)
            await asyncio.sleep(0.3)  # idle: only a wake-up (or the 120-s poll) publishes
            async with published.broker(settings.amqp_url, own.amqp_prefix) as seen:
                written = []
                for i, kind in enumerate(["market", "limit", "market", "sniper", "market", "limit"]):
                    order_id = str(uuid.uuid4())
                    events = [{"orderId": order_id, "seq": 1, "status": "pending"}]
                    if kind != "market":
                        events.append({"orderId": order_id, "seq": 2, "status": "waiting"})
                    trace = {"traceparent": f"00-{uuid.uuid4().hex}-{i + 1:016x}-01"}
                    await pool.execute(
                        "INSERT INTO outbox (order_id, kind, payload, headers) VALUES ($1, 'event', $2, $3)",
                        uuid.UUID(order_id),
                        orjson.dumps(events).decode(),
                        orjson.dumps({**trace, amqp.ORDER_TYPE_HEADER: kind}).decode(),
                    )
                    written.append((kind, events, trace))
                relay.wake()
                messages = []
                async with asyncio.timeout(10):
                    while sum(len(amqp.commits_of(m.body)) for m in messages) < len(written):
                        message = await seen.events.get(fail=False)
                        if message is None:
                            await asyncio.sleep(0.02)
                        else:
                            messages.append(message)
            assert sorted(m.routing_key for m in messages) == ["limit", "market", "sniper"], "one per order type"
            for message in messages:
                kind = message.routing_key
                assert message.headers[amqp.ORDER_TYPE_HEADER] == kind
                commits = amqp.commits_of(message.body, message.headers)
                assert [c.events for c in commits] == [events for k, events, _ in written if k == kind]
                for commit, (_, _, trace) in zip(commits, [w for w in written if w[0] == kind], strict=True):
                    # tracing is off in this process: the row's own context is carried on, unchanged
                    assert commit.trace == trace
            assert relay.published == len(written)
