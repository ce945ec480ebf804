"""The relay: rows its replica commits are published at once, including during a publish; rows nobody publishes
(their replica died, or its publish failed) are claimed from the table once they are orphans, and only then."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import TypedDict, Unpack

import aio_pika
import asyncpg
import grpc
import orjson

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import amqp, config, metrics
from services.orders.__main__ import OrdersComponent
from services.orders.outbox import OutboxRow
from tests.support import published
from tests.support.client import SOL, USDC
from tests.support.infra import TestInfra, isolated
from tests.support.inprocess import serve
from tests.support.waiting import eventually

POLL_MS = 120_000  # far longer than the test may take: only the commit's wake-up can publish in time
ORPHAN_MS = 1000


class Relay(TypedDict, total=False):
    outbox_poll_ms: int
    outbox_orphan_ms: int


def _orders(settings: config.Settings, own: TestInfra, **relay: Unpack[Relay]) -> OrdersComponent:
    """An orders service on the test's own database and AMQP names, with these relay settings."""
    return OrdersComponent(replace(settings, database_url=own.database_url, amqp_prefix=own.amqp_prefix, **relay))


def request() -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01")


async def test_an_order_committed_during_a_publish_is_published_without_waiting_for_the_poll(
    settings: config.Settings, infra: TestInfra
) -> None:
    async with isolated(infra.derive("wakeup")) as own:
        component = _orders(settings, own, outbox_poll_ms=POLL_MS)
        async with serve(component) as target, grpc.aio.insecure_channel(target) as channel:
            orders = orders_pb2_grpc.OrdersStub(channel)
            relay = component.relay
            assert relay is not None
            await asyncio.wait_for(relay.ready.wait(), 10)
            send = relay._publish_job
            second: list[str] = []
            mid_publish = asyncio.Event()

            async def send_and_commit_another(row: OutboxRow) -> None:
                if not mid_publish.is_set():
                    mid_publish.set()  # once: the batch's rows are sent concurrently
                    # another order commits, which wakes the relay
                    second.append((await orders.CreateOrder(request(), timeout=5)).order.id)
                    await asyncio.wait_for(relay._wake.wait(), 5)
                await send(row)

            relay._publish_job = send_and_commit_another  # type: ignore[method-assign]
            await orders.CreateOrder(request(), timeout=5)
            pool = component.pool
            assert pool is not None

            await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout=10)
            assert second, "the second order was created during the first publish"
            assert relay.published == 4, "two orders: a job and a pending event each"


async def test_a_row_whose_replica_died_before_its_relay_ran_is_published_by_the_poll_once_it_is_an_orphan(
    settings: config.Settings, infra: TestInfra
) -> None:
    """Commits are handed over to their own replica's relay only: a row left by a replica that died is found by
    polling, but only once it is older than OUTBOX_ORPHAN_MS (younger, its own replica may be publishing it)."""
    async with isolated(infra.derive("orphan")) as own:
        component = _orders(settings, own, outbox_poll_ms=100, outbox_orphan_ms=ORPHAN_MS)
        async with serve(component):
            relay, pool = component.relay, component.pool
            assert relay is not None and pool is not None
            await asyncio.wait_for(relay.ready.wait(), 10)
            await asyncio.sleep(0.3)  # the relay is idle: waiting on its wake-up or its poll
            # A commit of another replica, which died before its relay ran: nothing hands it over to this one.
            await pool.execute(
                "INSERT INTO outbox (order_id, kind, payload) VALUES ($1, 'event', $2)",
                uuid.uuid4(),
                '[{"seq": 1, "status": "pending"}]',
            )
            written, orphans = time.monotonic(), _orphans()
            await asyncio.sleep(ORPHAN_MS / 1000 / 2)  # five polls
            assert relay.published == 0, "younger than OUTBOX_ORPHAN_MS: left to the replica that wrote it"
            await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout=5)
            assert time.monotonic() - written >= ORPHAN_MS / 1000
            assert relay.published == 1
            assert _orphans() == orphans + 1, "dexengine_outbox_orphans_claimed_total counts it"


def _orphans() -> float:
    return metrics.REGISTRY.get_sample_value("dexengine_outbox_orphans_claimed_total") or 0.0


async def test_rows_whose_publish_failed_are_let_go_of_and_claimed_from_the_table(
    settings: config.Settings, infra: TestInfra
) -> None:
    async with isolated(infra.derive("letgo")) as own:
        component = _orders(settings, own, outbox_poll_ms=100, outbox_orphan_ms=ORPHAN_MS)
        async with serve(component) as target, grpc.aio.insecure_channel(target) as channel:
            relay, pool = component.relay, component.pool
            assert relay is not None and pool is not None
            await asyncio.wait_for(relay.ready.wait(), 10)
            send = relay._publish_job
            failed: list[float] = []

            async def fail_once(row: OutboxRow) -> None:
                if not failed:
                    failed.append(time.monotonic())
                    raise ConnectionError("the broker went away")
                await send(row)

            relay._publish_job = fail_once  # type: ignore[method-assign]
            async with published.broker(settings.amqp_url, own.amqp_prefix) as seen:
                created = await orders_pb2_grpc.OrdersStub(channel).CreateOrder(request(), timeout=5)
                await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout=10)
                claimed = time.monotonic()
                commits = await seen.commits([created.order.id], 1)
                jobs = await seen.channel.get_queue(seen.names.execute_queue)
                job = await jobs.get(fail=False)
                again = await jobs.get(fail=False)
            assert failed, "the hand-over's publish failed"
            assert claimed - failed[0] >= ORPHAN_MS / 1000 - 0.2, "claimed as an orphan, not retried at once"
            assert [event["status"] for event in commits[0]] == ["pending"]
            assert job is not None and orjson.loads(job.body)["orderId"] == created.order.id
            assert again is None, "published once"
            assert relay.published == 2, "the claim: the job and the pending event (the failed batch counted none)"


async def test_a_row_another_replica_is_publishing_is_not_claimed_until_it_is_an_orphan(
    settings: config.Settings, infra: TestInfra
) -> None:
    """Two replicas on one database: the one that wrote a row publishes it; the other's polls leave it alone while
    that publish takes less than OUTBOX_ORPHAN_MS."""
    async with isolated(infra.derive("replicas")) as own:
        writer, other = (_orders(settings, own, outbox_poll_ms=50, outbox_orphan_ms=ORPHAN_MS) for _ in range(2))
        async with serve(writer) as target, serve(other), grpc.aio.insecure_channel(target) as channel:
            assert writer.relay is not None and other.relay is not None and writer.pool is not None
            await asyncio.wait_for(other.relay.ready.wait(), 10)
            await asyncio.wait_for(writer.relay.ready.wait(), 10)
            send, slow = writer.relay._publish_job, asyncio.Event()

            async def stall(row: OutboxRow) -> None:
                await asyncio.sleep(ORPHAN_MS / 1000 / 2)  # ten of the other replica's polls
                slow.set()
                await send(row)

            writer.relay._publish_job = stall  # type: ignore[method-assign]
            await orders_pb2_grpc.OrdersStub(channel).CreateOrder(request(), timeout=5)
            pool = writer.pool
            await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout=10)
            assert slow.is_set()
            assert (writer.relay.published, other.relay.published) == (2, 0)


async def test_a_batch_goes_out_as_one_message_per_order_type_each_commit_in_it(
    settings: config.Settings, infra: TestInfra
) -> None:
    """Rows of several orders claimed in one batch: one message per order type, its commits in id order, each
    with its own trace context; every consumer reads each commit as it was written."""
    async with isolated(infra.derive("batches")) as own:
        # rows written here by hand: claimed as soon as the relay is woken
        component = _orders(settings, own, outbox_poll_ms=POLL_MS, outbox_orphan_ms=0)
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
                messages: list[aio_pika.abc.AbstractIncomingMessage] = []
                async with asyncio.timeout(10):
                    while sum(len(amqp.commits_of(m.body)) for m in messages) < len(written):
                        message = await seen.events.get(fail=False)
                        if message is None:
                            await asyncio.sleep(0.02)
                        else:
                            messages.append(message)
            assert sorted(str(m.routing_key) for m in messages) == ["limit", "market", "sniper"], "one per order type"
            for message in messages:
                assert message.routing_key is not None
                kind = message.routing_key
                assert message.headers[amqp.ORDER_TYPE_HEADER] == kind
                commits = amqp.commits_of(message.body, message.headers)
                assert [c.events for c in commits] == [events for k, events, _ in written if k == kind]
                for commit, (_, _, trace) in zip(commits, [w for w in written if w[0] == kind], strict=True):
                    # tracing is off in this process: the row's own context is carried on, unchanged
                    assert commit.trace == trace
            assert relay.published == len(written)


async def test_a_stopping_relay_publishes_what_it_was_handed_before_it_stops(
    settings: config.Settings, infra: TestInfra
) -> None:
    """A replica that stops (a rolling update) publishes and deletes its last commits' rows instead of leaving
    them to another replica's poll, OUTBOX_ORPHAN_MS later."""
    async with isolated(infra.derive("stopping")) as own:
        component = _orders(settings, own, outbox_poll_ms=POLL_MS)
        async with serve(component) as target, grpc.aio.insecure_channel(target) as channel:
            relay = component.relay
            assert relay is not None
            await asyncio.wait_for(relay.ready.wait(), 10)
            send, publishing = relay._publish_job, asyncio.Event()

            async def slow(row: OutboxRow) -> None:
                publishing.set()
                await asyncio.sleep(0.3)
                await send(row)

            relay._publish_job = slow  # type: ignore[method-assign]
            await orders_pb2_grpc.OrdersStub(channel).CreateOrder(request(), timeout=5)
            await asyncio.wait_for(publishing.wait(), 5)
        # stopped while the publish was under way
        assert relay.published == 2, "the job and the pending event went out before the relay stopped"
        conn = await asyncpg.connect(own.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0, "and were deleted"
        finally:
            await conn.close()
