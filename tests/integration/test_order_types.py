"""Limit/sniper orders in orders against real PostgreSQL, Redis and RabbitMQ: arming, the job born at the trigger,
cancel racing the trigger."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import grpc
import orjson

from dexengine.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from services.common import amqp, config, states
from services.common.errors import parse_rpc_error
from services.router.trigger import EVENT_KEYS
from tests.support import transitions
from tests.support.client import SOL, USDC

WAITING, ROUTING = states.to_proto(states.WAITING), states.to_proto(states.ROUTING)


def limit_request(**over: str) -> orders_pb2.CreateOrderRequest:
    fields = {
        "token_in": SOL,
        "token_out": USDC,
        "amount_in": "1",
        "slippage": "0.01",
        "type": "limit",
        "limit_price": "151.2",
        **over,
    }
    return orders_pb2.CreateOrderRequest(**fields)


async def _drain_for(queue: aio_pika.abc.AbstractQueue, order_id: str, seconds: float) -> list[Any]:
    """What the messages say about ``order_id``: a job's body, or a commit's events (a message of the events
    exchange carries a relay batch's commits)."""
    found: list[Any] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        message = await queue.get(fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        await message.ack()
        body = orjson.loads(message.body)
        if isinstance(body, dict) and "commits" in body:
            found.extend(c.events for c in amqp.commits_of(message.body) if c.events[0].get("orderId") == order_id)
        elif body.get("orderId") == order_id:
            found.append(body)
    return found


async def test_a_limit_order_is_armed_without_a_job_and_its_job_is_born_when_it_fires(
    orders: orders_pb2_grpc.OrdersAsyncStub, settings: config.Settings, pg: asyncpg.Connection
) -> None:
    names = amqp.Names(settings.amqp_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        events_q = await channel.declare_queue("", exclusive=True)
        await events_q.bind(names.events_exchange)
        work = await channel.get_queue(names.execute_queue)
        resp = await orders.CreateOrder(
            limit_request(expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()), timeout=5
        )
        assert resp.order.status == WAITING and resp.order.seq == 2
        assert resp.order.limit_price == "151.2" and resp.order.expires_at.seconds > 0
        order_id = resp.order.id
        events = await pg.fetch(
            "SELECT seq, status, data FROM order_events WHERE order_id = $1 ORDER BY seq", uuid.UUID(order_id)
        )
        assert [(e["seq"], e["status"]) for e in events] == [(1, "pending"), (2, "waiting")]
        waiting = orjson.loads(events[1]["data"])
        assert waiting["limitPrice"] == "151.2" and waiting["type"] == "limit"
        assert await _drain_for(work, order_id, 1.0) == [], "an armed order queues no execution job"
        published = await _drain_for(events_q, order_id, 1.0)
        assert [[(e["status"], e["seq"]) for e in commit] for commit in published] == [
            [("pending", 1), ("waiting", 2)]
        ], "one commit: the order's pending and waiting events together"

        fired = await orders.Transition(transitions.request(order_id, WAITING, ROUTING), timeout=5)
        assert fired.order.status == ROUTING
        jobs = await _drain_for(work, order_id, 2.0)
        assert [(j["orderId"], j["attempt"]) for j in jobs] == [(order_id, 1)], "waiting -> routing: exactly one job"
        carried = jobs[0]["order"]  # what the executor's first attempt starts from
        assert (carried["status"], carried["seq"], carried["limitPrice"]) == ("routing", 3, "151.2")
    finally:
        await connection.close()


async def test_events_are_routed_by_order_type_and_a_market_order_never_reaches_the_armed_binding(
    orders: orders_pb2_grpc.OrdersAsyncStub, settings: config.Settings
) -> None:
    names = amqp.Names(settings.amqp_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        by_type = await amqp.declare_events_by_type(channel, names)
        armed = await channel.declare_queue("", exclusive=True)  # bound as the router's trigger binds
        for kind in EVENT_KEYS:
            await armed.bind(by_type, routing_key=kind)
        everything = await channel.declare_queue("", exclusive=True)
        await everything.bind(names.events_exchange)
        market = (await orders.CreateOrder(limit_request(type="market", limit_price=""), timeout=5)).order.id
        limit = (await orders.CreateOrder(limit_request(), timeout=5)).order.id
        await orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=market), timeout=5)
        await orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=limit), timeout=5)
        seen: dict[str, list[tuple[str, str]]] = {"armed": [], "everything": []}
        async with asyncio.timeout(10):
            while len(seen["everything"]) < 4:
                for name, queue in (("armed", armed), ("everything", everything)):
                    message = await queue.get(fail=False)
                    if message is None:
                        await asyncio.sleep(0.02)
                        continue
                    for commit in amqp.commits_of(message.body, message.headers):
                        ours = [e for e in commit.events if e["orderId"] in (market, limit)]
                        if ours:
                            seen[name].append((message.routing_key or "", ours[-1]["status"]))
                            assert message.headers[amqp.ORDER_TYPE_HEADER] == message.routing_key
        await asyncio.sleep(0.3)  # anything else for the armed queue would have come by now
        while (message := await armed.get(fail=False)) is not None:
            if any(e["orderId"] in (market, limit) for e in amqp.events_of(message.body)):
                seen["armed"].append((message.routing_key or "", "late"))
        assert sorted(seen["everything"]) == [
            ("limit", "cancelled"),
            ("limit", "waiting"),
            ("market", "cancelled"),
            ("market", "pending"),
        ]
        assert sorted(seen["armed"]) == [("limit", "cancelled"), ("limit", "waiting")], "no market order's event"
        # A message of an older relay: one event, no order type. The trigger still hears it.
        legacy = {"orderId": limit, "status": "expired", "seq": 9, "timestamp": None, "data": {}}
        fanout = await channel.get_exchange(names.events_exchange)
        await fanout.publish(aio_pika.Message(orjson.dumps(legacy)), routing_key="")
        message = None
        async with asyncio.timeout(10):
            while message is None:
                message = await armed.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
        assert amqp.events_of(message.body) == [legacy]
    finally:
        await connection.close()


async def test_cancel_racing_the_trigger_has_exactly_one_winner(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection
) -> None:
    ids = [(await orders.CreateOrder(limit_request(), timeout=5)).order.id for _ in range(40)]

    async def race(order_id: str) -> tuple[bool, bool]:
        cancel = orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order_id), timeout=5)
        fire = orders.Transition(transitions.request(order_id, WAITING, ROUTING), timeout=5)
        outcomes = await asyncio.gather(cancel, fire, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, grpc.aio.AioRpcError):
                assert outcome.code() == grpc.StatusCode.FAILED_PRECONDITION, outcome
                assert parse_rpc_error(outcome).reason in ("NOT_CANCELLABLE", "STALE_TRANSITION")
        return tuple(not isinstance(o, BaseException) for o in outcomes)  # type: ignore[return-value]

    results = await asyncio.gather(*(race(i) for i in ids))
    assert all(cancelled != fired for cancelled, fired in results), "exactly one of cancel and trigger wins"
    rows = await pg.fetch(
        "SELECT id::text, status, seq FROM orders WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids]
    )
    final = {r["id"]: (r["status"], r["seq"]) for r in rows}
    for order_id, (cancelled, _) in zip(ids, results, strict=True):
        assert final[order_id] == ("cancelled" if cancelled else "routing", 3)


async def test_expiry_and_cancel_are_terminal(orders: orders_pb2_grpc.OrdersAsyncStub) -> None:
    order = (await orders.CreateOrder(limit_request(), timeout=5)).order
    expired = await orders.Transition(
        transitions.request(order.id, WAITING, common_pb2.ORDER_STATUS_EXPIRED),
        timeout=5,
    )
    assert expired.order.status == common_pb2.ORDER_STATUS_EXPIRED and expired.order.completed_at.seconds > 0
    try:
        await orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order.id), timeout=5)
        raise AssertionError("an expired order is not cancellable")
    except grpc.aio.AioRpcError as err:
        info = parse_rpc_error(err)
        assert (err.code(), info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_CANCELLABLE")
        assert [(v.field, v.issue) for v in info.violations] == [("status", "expired")]
    try:
        await orders.Transition(
            transitions.request(order.id, common_pb2.ORDER_STATUS_EXPIRED, ROUTING),
            timeout=5,
        )
        raise AssertionError("expired is final")
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_waiting_orders_are_listed_by_status(
    orders: orders_pb2_grpc.OrdersAsyncStub,
) -> None:
    order = (await orders.CreateOrder(limit_request(), timeout=5)).order
    listed = await orders.ListOrders(orders_pb2.ListOrdersRequest(status=WAITING, limit=200), timeout=5)
    assert order.id in {o.id for o in listed.orders}
    assert all(o.status == WAITING for o in listed.orders)
