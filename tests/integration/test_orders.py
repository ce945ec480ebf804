"""orders against real PostgreSQL, Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import aio_pika
import asyncpg
import grpc
import orjson
import pytest
import redis.asyncio as aioredis

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import config, states
from services.common.errors import parse_rpc_error
from tests.support import published, transitions
from tests.support.cached import cached_view
from tests.support.client import SOL, USDC
from tests.support.waiting import eventually

PENDING, ROUTING, BUILDING, SUBMITTED, CONFIRMED = (
    states.to_proto(s) for s in ("pending", "routing", "building", "submitted", "confirmed")
)


def create_request(**over: str) -> orders_pb2.CreateOrderRequest:
    fields = {"token_in": SOL, "token_out": USDC, "amount_in": "1.25", "slippage": "0.01", **over}
    return orders_pb2.CreateOrderRequest(**fields)


async def test_create_writes_order_event_and_outbox_rows_in_one_transaction(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection
) -> None:
    # Hold the outbox table lock so the relay cannot publish (and delete) the rows before we look.
    async with pg.transaction():
        # Waits (bounded) for a relay batch in flight: its DELETE holds the table until the publishes are confirmed.
        await pg.execute("SET LOCAL lock_timeout = '10s'")
        await pg.execute("LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE")
        task = asyncio.ensure_future(orders.CreateOrder(create_request(), timeout=5))
        await asyncio.sleep(0.3)
        assert not task.done(), "the create must wait for the outbox insert: same transaction"
        count = await pg.fetchval("SELECT count(*) FROM orders")
    resp = await task
    order_id = uuid.UUID(resp.order.id)
    row = await pg.fetchrow("SELECT status, amount_in, slippage, seq FROM orders WHERE id = $1", order_id)
    assert row["status"] == "pending" and str(row["amount_in"]) == "1.25" and row["seq"] == 1
    events = await pg.fetch("SELECT seq, status FROM order_events WHERE order_id = $1", order_id)
    assert [(e["seq"], e["status"]) for e in events] == [(1, "pending")]
    assert count == await pg.fetchval("SELECT count(*) FROM orders") - 1


async def test_failed_insert_leaves_nothing_behind(pg: asyncpg.Connection) -> None:
    """The CTE is one statement: an error in any part writes no part."""
    from services.orders.store import CREATE_SQL

    order_id = uuid.uuid4()
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.fetchrow(
            CREATE_SQL,
            *[[value] for value in (order_id, "market", SOL, USDC, -1, 0.01, None, "h", "{}", "{}")],
            *[[None]] * 5,
        )
    # Counted by this order's id: the relay keeps deleting other tests' outbox rows meanwhile.
    written = await pg.fetchval(
        """SELECT (SELECT count(*) FROM orders WHERE id = $1) + (SELECT count(*) FROM order_events WHERE order_id = $1)
                + (SELECT count(*) FROM outbox WHERE order_id = $1)""",
        order_id,
    )
    assert written == 0


async def test_invalid_create_is_invalid_argument_naming_fields(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection
) -> None:
    before = await pg.fetchval("SELECT count(*) FROM orders")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await orders.CreateOrder(create_request(token_in="bad", amount_in="0", slippage="2"), timeout=5)
    details = parse_rpc_error(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in details.violations} == {"token_in", "amount_in", "slippage"}
    assert await pg.fetchval("SELECT count(*) FROM orders") == before


async def test_stale_transition_is_failed_precondition(orders: orders_pb2_grpc.OrdersAsyncStub) -> None:
    order = (await orders.CreateOrder(create_request(), timeout=5)).order
    await orders.Transition(transitions.request(order.id, PENDING, ROUTING), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await orders.Transition(transitions.request(order.id, PENDING, ROUTING), timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as illegal:
        await orders.Transition(
            orders_pb2.TransitionRequest(order_id=order.id, expected_status=ROUTING, begin=orders_pb2.Begin(attempt=1)),
            timeout=5,
        )
    assert illegal.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await orders.Transition(
            transitions.request(str(uuid.uuid4()), ROUTING, BUILDING),
            timeout=5,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_concurrent_transitions_exactly_one_wins(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection
) -> None:
    order = (await orders.CreateOrder(create_request(), timeout=5)).order
    results = await asyncio.gather(
        *(orders.Transition(transitions.request(order.id, PENDING, ROUTING), timeout=5) for _ in range(20)),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(wins) == 1
    assert len(losses) == 19
    assert all(r.code() == grpc.StatusCode.FAILED_PRECONDITION for r in losses)
    seqs = await pg.fetch("SELECT seq FROM order_events WHERE order_id = $1 ORDER BY seq", uuid.UUID(order.id))
    assert [r["seq"] for r in seqs] == [1, 2]


async def test_each_step_records_its_facts_and_its_typed_event(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection
) -> None:
    order = (await orders.CreateOrder(create_request(), timeout=5)).order
    await orders.Transition(transitions.request(order.id, PENDING, ROUTING), timeout=5)
    resp = await orders.Transition(transitions.request(order.id, ROUTING, BUILDING), timeout=5)
    assert resp.order.dex_provider == "meteora"
    assert resp.order.expected_price == "149.86"
    assert resp.order.routing == transitions.routing()
    assert resp.event.seq == 3
    assert resp.event.data.WhichOneof("detail") == "building"
    assert resp.event.data.building == transitions.routing()

    submitted = await orders.Transition(transitions.request(order.id, BUILDING, SUBMITTED), timeout=5)
    assert submitted.order.tx_hash == transitions.SIGNATURE
    assert submitted.order.signed.transaction == b"\x01signed", "the executor gets its signed transaction back"
    assert submitted.event.data.submitted.tx_hash == transitions.SIGNATURE
    public = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id, fresh=True), timeout=5)
    assert not public.order.HasField("signed"), "the signed transaction is private"
    assert public.order.execution == transitions.execution()
    private = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id, include_signed=True), timeout=5)
    assert private.order.signed.last_valid_block_height == 1000
    stored = await pg.fetchval("SELECT execution::text FROM orders WHERE id = $1", uuid.UUID(order.id))
    assert "signed" not in stored and "transaction" not in stored.lower()

    bad = transitions.request(order.id, SUBMITTED, CONFIRMED)
    bad.confirm.amount_out = "-1"
    bad.confirm.execution.signature = ""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await orders.Transition(bad, timeout=5)
    assert {v.field for v in parse_rpc_error(info.value).violations} == {
        "confirm.amount_out",
        "confirm.execution.signature",
    }
    with pytest.raises(grpc.aio.AioRpcError) as no_step:
        await orders.Transition(orders_pb2.TransitionRequest(order_id=order.id, expected_status=SUBMITTED), timeout=5)
    assert [v.field for v in parse_rpc_error(no_step.value).violations] == ["step"]
    confirmed = await orders.Transition(transitions.request(order.id, SUBMITTED, CONFIRMED), timeout=5)
    assert confirmed.order.amount_out == "149.9"
    assert confirmed.order.execution.slot == 7 and confirmed.order.execution.executed_out == "149.9"
    assert confirmed.event.data.confirmed.improvement_bps == "2.67"


async def test_route_submit_appends_building_then_submitted_in_one_commit(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection, settings: config.Settings
) -> None:
    order = (await orders.CreateOrder(create_request(), timeout=5)).order
    await orders.Transition(transitions.request(order.id, PENDING, ROUTING), timeout=5)
    resp = await orders.Transition(transitions.request(order.id, ROUTING, SUBMITTED), timeout=5)
    assert resp.order.status == SUBMITTED and resp.order.seq == 4
    assert [(e.seq, e.data.WhichOneof("detail")) for e in resp.events] == [(3, "building"), (4, "submitted")]
    assert resp.event == resp.events[-1]
    rows = await pg.fetch(
        "SELECT seq, status, created_at FROM order_events WHERE order_id = $1 ORDER BY seq", uuid.UUID(order.id)
    )
    assert [(r["seq"], r["status"]) for r in rows] == [
        (1, "pending"),
        (2, "routing"),
        (3, "building"),
        (4, "submitted"),
    ]
    assert rows[2]["created_at"] == rows[3]["created_at"], "one commit"
    got = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id, include_events=True), timeout=5)
    assert [e.seq for e in got.events] == [1, 2, 3, 4], "the cache holds both events"
    client = aioredis.from_url(settings.redis_url)
    try:
        # The append is sent after the answer: it lands a moment later.
        await eventually(lambda: _equals(client.llen(f"order:{order.id}:events"), 4))
    finally:
        await client.aclose()


async def test_route_submit_from_pending_is_one_commit_and_one_message(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection, settings: config.Settings
) -> None:
    async with published.broker(settings.amqp_url, settings.amqp_prefix) as seen:
        order = (await orders.CreateOrder(create_request(), timeout=5)).order
        resp = await orders.Transition(transitions.request(order.id, PENDING, SUBMITTED), timeout=5)
        assert resp.order.status == SUBMITTED and resp.order.seq == 4 and resp.order.retry_count == 0
        assert [(e.seq, e.data.WhichOneof("detail")) for e in resp.events] == [
            (2, "routing"),
            (3, "building"),
            (4, "submitted"),
        ]
        assert resp.events[0].data.routing.attempt == 1
        rows = await pg.fetch(
            "SELECT seq, status, created_at FROM order_events WHERE order_id = $1 ORDER BY seq", uuid.UUID(order.id)
        )
        assert [r["status"] for r in rows] == ["pending", "routing", "building", "submitted"]
        assert len({r["created_at"] for r in rows[1:]}) == 1, "one commit"
        commits = await seen.commits({order.id}, 2)
    assert [[(e["status"], e["seq"]) for e in commit] for commit in commits] == [
        [("pending", 1)],
        [("routing", 2), ("building", 3), ("submitted", 4)],
    ], "one entry per commit, its events in seq order"


async def test_idempotency_key_same_body_same_order_other_body_rejected(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection
) -> None:
    key = f"key-{uuid.uuid4()}"
    answers = await asyncio.gather(
        *(orders.CreateOrder(create_request(idempotency_key=key), timeout=5) for _ in range(20))
    )
    assert len({a.order.id for a in answers}) == 1
    assert sum(a.created for a in answers) == 1
    assert await pg.fetchval("SELECT count(*) FROM orders WHERE idempotency_key = $1", key) == 1
    jobs = await pg.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'job' AND order_id = $1", uuid.UUID(answers[0].order.id)
    )
    assert jobs in (0, 1), "at most one job, never one per request"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await orders.CreateOrder(create_request(idempotency_key=key, amount_in="2"), timeout=5)
    details = parse_rpc_error(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_relay_publishes_jobs_and_events_to_rabbitmq(
    orders: orders_pb2_grpc.OrdersAsyncStub, settings: config.Settings, pg: asyncpg.Connection
) -> None:
    async with published.broker(settings.amqp_url, settings.amqp_prefix) as seen:
        order = (await orders.CreateOrder(create_request(), timeout=5)).order
        work = await seen.channel.get_queue(seen.names.execute_queue)
        job = None
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:  # earlier tests' jobs are queued too
            message = await work.get(fail=False)
            if message is not None:
                body = orjson.loads(message.body)
                await message.ack()
                if body["orderId"] == order.id:
                    job = (body, message)
                    break
            else:
                await asyncio.sleep(0.1)
        assert job is not None, "the job reached the execution queue"
        assert job[1].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert job[1].headers["x-attempt"] == 1
        (commit,) = await seen.commits({order.id}, 1)
        assert [(e["status"], e["seq"]) for e in commit] == [("pending", 1)], "one entry per commit"
        # The rows are deleted when the whole batch is confirmed, a moment after a consumer may see a message.
        await eventually(
            lambda: pg.fetchval("SELECT count(*) = 0 FROM outbox WHERE order_id = $1", uuid.UUID(order.id))
        )


async def test_get_order_reads_through_redis(
    orders: orders_pb2_grpc.OrdersAsyncStub, settings: config.Settings
) -> None:
    order = (await orders.CreateOrder(create_request(), timeout=5)).order
    await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id), timeout=5)  # the first read fills it
    await orders.Transition(transitions.request(order.id, PENDING, ROUTING), timeout=5)
    client = aioredis.from_url(settings.redis_url)
    try:
        # The append is sent after the answer; once it landed, its marker is gone with it.
        await eventually(lambda: _equals(client.exists(f"order:{order.id}:writing"), 0))
        cached = await cached_view(client, f"order:{order.id}:status")
        assert cached["status"] == "routing" and cached["seq"] == 2
        assert await client.llen(f"order:{order.id}:events") == 2
        # What a read reads, and the fence a fill reads (no `writing` left once the append ran).
        assert set(await client.keys(f"order:{order.id}:*")) == {
            f"order:{order.id}:{part}".encode() for part in ("status", "events", "fence")
        }, "only what is read is written"
        await client.delete(f"order:{order.id}:status", f"order:{order.id}:events")
        got = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id, include_events=True), timeout=5)
        assert [e.seq for e in got.events] == [1, 2]
        assert await client.exists(f"order:{order.id}:status") == 1, "a miss refills the cache"
    finally:
        await client.aclose()


async def test_list_orders_filters_and_pages(orders: orders_pb2_grpc.OrdersAsyncStub) -> None:
    created = [(await orders.CreateOrder(create_request(), timeout=5)).order.id for _ in range(3)]
    page1 = await orders.ListOrders(orders_pb2.ListOrdersRequest(limit=2), timeout=5)
    assert len(page1.orders) == 2 and page1.next_cursor
    page2 = await orders.ListOrders(orders_pb2.ListOrdersRequest(limit=2, cursor=page1.next_cursor), timeout=5)
    ids = [o.id for o in page1.orders] + [o.id for o in page2.orders]
    assert ids[:3] == list(reversed(created))
    assert len(set(ids)) == len(ids)
    routing = await orders.ListOrders(orders_pb2.ListOrdersRequest(status=ROUTING, limit=200), timeout=5)
    assert all(o.status == ROUTING for o in routing.orders)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await orders.ListOrders(orders_pb2.ListOrdersRequest(cursor="garbage"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_fresh_read_of_a_terminal_order_repairs_an_entry_its_dead_writer_left(
    orders: orders_pb2_grpc.OrdersAsyncStub, settings: config.Settings
) -> None:
    """A writer that died between its commit and its cache append leaves the entry one step behind and its
    `writing` marker: a fresh read that saw a terminal status fills over both (nothing can commit after it)."""
    order = (await orders.CreateOrder(create_request(), timeout=5)).order
    await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id), timeout=5)  # the first read fills it
    await transitions.advance(orders, order.id, 0)
    client = aioredis.from_url(settings.redis_url)
    status_key, events_key, writing_key = (f"order:{order.id}:{part}" for part in ("status", "events", "writing"))
    try:
        await eventually(lambda: _equals(client.exists(writing_key), 0))  # the last append landed
        behind = await cached_view(client, status_key)
        assert (behind["status"], behind["seq"]) == ("confirmed", 5)
        behind.update(status="submitted", seq=4)
        await client.set(status_key, orjson.dumps(behind))
        await client.ltrim(events_key, 0, 3)
        await client.sadd(writing_key, "a-dead-writers-token")
        await client.expire(writing_key, 5)
        read = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id, fresh=True), timeout=5)
        assert read.order.status == CONFIRMED
        repaired = await cached_view(client, status_key)
        assert (repaired["status"], repaired["seq"]) == ("confirmed", 5)
        assert await client.llen(events_key) == 5
    finally:
        await client.aclose()


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
