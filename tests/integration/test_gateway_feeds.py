"""The gateway's WebSockets share one feed per order, and its feeds one notifier stream (real HTTP, gRPC, AMQP,
PostgreSQL)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dexengine.v1 import notifier_pb2, orders_pb2, orders_pb2_grpc
from services.common import config
from services.gateway import order_feeds
from services.gateway.app import GATEWAY, build_app
from services.notifier import servicer as notifier_servicer
from services.notifier.__main__ import NotifierComponent
from tests.support.client import SOL, USDC, follow
from tests.support.grpc_tasks import request_readers
from tests.support.inprocess import serve
from tests.support.transitions import CHAIN, advance
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
async def gateway(
    settings: config.Settings, orders_server: str, notifier_served: tuple[NotifierComponent, str]
) -> AsyncIterator[TestServer]:
    app = build_app(replace(settings, orders_target=orders_server, notifier_target=notifier_served[1]))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def feeds_of(server: TestServer) -> dict[str, Any]:
    return server.app[GATEWAY].feeds.feeds


async def create(orders: orders_pb2_grpc.OrdersAsyncStub) -> str:
    resp = await orders.CreateOrder(
        orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01"), timeout=5
    )
    return resp.order.id


@pytest.mark.parametrize("pause", [0.0, 0.02])
async def test_sockets_joining_while_events_commit_see_each_event_once_in_order_over_one_stream(
    orders: orders_pb2_grpc.OrdersAsyncStub,
    gateway: TestServer,
    notifier_served: tuple[NotifierComponent, str],
    pause: float,
) -> None:
    notifier = notifier_served[0]
    order_id = await create(orders)
    url = str(gateway.make_url(f"/ws/orders/{order_id}"))
    async with aiohttp.ClientSession() as session:
        first = asyncio.create_task(follow(session, url))
        await eventually(lambda: order_id in feeds_of(gateway) and feeds_of(gateway)[order_id].backlog)
        mover = asyncio.create_task(advance(orders, order_id, pause))
        sockets = [first]
        for _ in range(7):
            sockets.append(asyncio.create_task(follow(session, url)))
            await asyncio.sleep(pause / 2)
        # However many sockets, the notifier serves this gateway one stream for the order.
        assert len(notifier.hub.watchers.get(order_id, ())) <= 1
        results = await asyncio.gather(*sockets)
        await mover
    for events in results:
        statuses = [e["status"] for e in events]
        seqs = [e["seq"] for e in events]
        assert events[0]["data"]["snapshot"] is True
        assert statuses == CHAIN[CHAIN.index(statuses[0]) :], statuses
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert results[0][0]["status"] == "pending", "the first socket was open before the first transition"
    await eventually(lambda: order_id not in feeds_of(gateway))
    assert order_id not in notifier.hub.watchers


async def test_feeds_of_many_orders_are_subscriptions_on_one_notifier_stream(
    orders: orders_pb2_grpc.OrdersAsyncStub, gateway: TestServer, notifier_served: tuple[NotifierComponent, str]
) -> None:
    order_ids = [await create(orders) for _ in range(3)]
    async with aiohttp.ClientSession() as session:
        sockets = [asyncio.create_task(follow(session, str(gateway.make_url(f"/ws/orders/{o}")))) for o in order_ids]
        await eventually(lambda: all(o in feeds_of(gateway) and feeds_of(gateway)[o].backlog for o in order_ids))
        stream = gateway.app[GATEWAY].feeds.stream()
        assert len(stream.inboxes) == 3  # three subscriptions, one call
        await asyncio.gather(*(advance(orders, o, 0) for o in order_ids))
        results = await asyncio.gather(*sockets)
    for order_id, events in zip(order_ids, results, strict=True):
        assert {e["orderId"] for e in events} == {order_id}
        assert [e["status"] for e in events] == CHAIN
    assert gateway.app[GATEWAY].feeds.stream() is stream  # the stream outlives the feeds that ended
    await eventually(lambda: not stream.inboxes and not any(o in notifier_served[0].hub.watchers for o in order_ids))


async def test_after_its_rotation_age_new_feeds_go_to_a_new_stream_and_the_old_one_closes_after_its_last(
    orders: orders_pb2_grpc.OrdersAsyncStub,
    gateway: TestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The notifier recycles connections so that new replicas get a share; a stream stays on its connection."""
    first, second = await create(orders), await create(orders)
    async with aiohttp.ClientSession() as session:
        one = await session.ws_connect(str(gateway.make_url(f"/ws/orders/{first}")))
        assert (await one.receive_json())["status"] == "pending"
        old = gateway.app[GATEWAY].feeds.stream()
        monkeypatch.setattr(order_feeds, "ROTATE_AFTER_S", 0.0)
        two = await session.ws_connect(str(gateway.make_url(f"/ws/orders/{second}")))
        assert (await two.receive_json())["status"] == "pending"
        new = gateway.app[GATEWAY].feeds._stream
        assert new is not None
        assert new is not old and old.retired and not new.retired
        assert list(old.inboxes) and list(new.inboxes)  # each serves its own feed
        await advance(orders, first, 0)
        assert [m["status"] async for m in frames(one)] == CHAIN[1:]
        await eventually(old.task.done)  # its last feed ended: the old call is closed
        assert not new.task.done()
        await advance(orders, second, 0)
        assert [m["status"] async for m in frames(two)] == CHAIN[1:]


async def frames(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[dict[str, Any]]:
    async for message in ws:
        yield message.json()


async def test_the_last_socket_leaving_closes_the_stream_and_a_later_one_opens_a_fresh_one(
    orders: orders_pb2_grpc.OrdersAsyncStub, gateway: TestServer, notifier_served: tuple[NotifierComponent, str]
) -> None:
    notifier = notifier_served[0]
    order_id = await create(orders)
    url = str(gateway.make_url(f"/ws/orders/{order_id}"))
    async with aiohttp.ClientSession() as session:
        one = await session.ws_connect(url)
        two = await session.ws_connect(url)
        assert (await one.receive_json())["status"] == "pending"
        assert (await two.receive_json())["status"] == "pending"
        assert len(notifier.hub.watchers[order_id]) == 1
        await one.close()
        await two.close()
        await eventually(lambda: order_id not in feeds_of(gateway) and order_id not in notifier.hub.watchers)
        await advance(orders, order_id, 0)
        late = await follow(session, url)
    assert [e["status"] for e in late] == ["confirmed"]
    assert late[0]["data"]["snapshot"] is True


async def test_an_unknown_order_is_a_404_before_the_upgrade_and_leaves_no_feed(gateway: TestServer) -> None:
    order_id = "00000000-0000-0000-0000-000000000000"
    url = gateway.make_url(f"/ws/orders/{order_id}")
    async with aiohttp.ClientSession() as session, session.get(url, headers=upgrade_headers()) as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["error"]["code"] == "ORDER_NOT_FOUND"
    assert order_id not in feeds_of(gateway)


def upgrade_headers() -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


def _server_sockets() -> list[web.WebSocketResponse]:
    return [o for o in gc.get_objects() if isinstance(o, web.WebSocketResponse)]


async def test_a_finished_socket_is_freed_at_once_not_by_the_cyclic_collector(
    orders: orders_pb2_grpc.OrdersAsyncStub, gateway: TestServer
) -> None:
    """With the collector off, each server-side socket is gone once its client left: no cycle keeps it."""
    order_id = await create(orders)
    gc.collect()
    gc.disable()
    older = _server_sockets()  # earlier tests' sockets, each freed when its heartbeat timer fires
    ours: list[weakref.ref[web.WebSocketResponse]] = []

    def fresh() -> list[web.WebSocketResponse]:
        """Sockets neither from earlier tests nor already counted."""
        known = [*older, *(r() for r in ours)]
        return [o for o in _server_sockets() if not any(o is k for k in known)]

    async def one(path: str) -> None:
        async with session.ws_connect(str(gateway.make_url(path))) as ws:
            if path != "/ws/orders":
                assert (await ws.receive_json())["data"]["snapshot"] is True
            await eventually(lambda: len(fresh()) == 1, timeout=5)
            ours.append(weakref.ref(fresh()[0]))

    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                await one(f"/ws/orders/{order_id}")
            for _ in range(3):  # the multiplexed socket too
                await one("/ws/orders")
        assert len(ours) == 8
        await eventually(lambda: all(r() is None for r in ours), timeout=5)
    finally:
        older.clear()
        gc.enable()


async def test_a_notifier_stream_that_ends_leaves_no_task_reading_its_requests(
    settings: config.Settings, orders_server: str, orders: orders_pb2_grpc.OrdersAsyncStub
) -> None:
    """The notifier stops under a watched order: the socket closes with 1013, the stream's call ended on its own,
    and grpc's reader of its requests ended with it (it is cancelled only for a call still running)."""
    order_id = await create(orders)
    server: TestServer | None = None
    async with aiohttp.ClientSession() as session:
        try:
            async with serve(NotifierComponent(replace(settings, orders_target=orders_server))) as target:
                app = build_app(replace(settings, orders_target=orders_server, notifier_target=target))
                server = TestServer(app, host="127.0.0.1")
                await server.start_server()
                ws = await session.ws_connect(str(server.make_url(f"/ws/orders/{order_id}")))
                assert (await ws.receive_json())["status"] == "pending"
                stream = server.app[GATEWAY].feeds._stream
                assert stream is not None and request_readers(stream), "the open call reads its requests"
            closed = await ws.receive(timeout=10)  # the notifier stopped (its server and component closed)
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1013
            await eventually(stream.task.done)
            await eventually(lambda: not request_readers(stream), timeout=2)
        finally:
            if server is not None:
                await server.close()


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The orders subscribed by each WatchMany message the (in-process) notifier reads, message by message."""
    messages: list[list[str]] = []
    real = notifier_servicer._requests_in

    def recorded(message: notifier_pb2.WatchManyRequest) -> Iterator[notifier_pb2.WatchManyRequest]:
        requests = list(real(message))
        messages.append([r.order_id for r in requests if not r.stop])
        return iter(requests)

    monkeypatch.setattr(notifier_servicer, "_requests_in", recorded)
    return messages


async def test_feeds_subscribing_together_go_to_the_notifier_in_one_message(
    orders: orders_pb2_grpc.OrdersAsyncStub, gateway: TestServer, received: list[list[str]]
) -> None:
    """Once the notifier said it reads ``more``, the subscriptions ready when the gateway writes share a message."""
    order_ids = [await create(orders) for _ in range(5)]
    feeds = gateway.app[GATEWAY].feeds
    stream = feeds.stream()
    await eventually(lambda: stream.batching)  # the notifier's initial metadata came
    received.clear()
    subscriptions = [stream.subscribe(o) for o in order_ids]  # five feeds in one turn of the loop
    snapshots = [await asyncio.wait_for(inbox.get(), 5) for _, inbox in subscriptions]
    assert [s.event.order_id for s in snapshots] == order_ids  # type: ignore[union-attr]
    assert received == [order_ids], "one message carried the five subscriptions, in order"
    for ref, _ in subscriptions:
        stream.release(ref, stop=True)


async def test_a_notifier_that_does_not_say_it_reads_more_gets_one_request_per_message(
    orders: orders_pb2_grpc.OrdersAsyncStub,
    gateway: TestServer,
    received: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older notifier (a rolling upgrade) never sees ``more``: it would not read it."""
    monkeypatch.setattr(notifier_servicer, "WATCH_MANY_MORE", "x-something-else")
    monkeypatch.setattr(order_feeds, "ROTATE_AFTER_S", 0.0)  # the next feed opens a new stream
    order_ids = [await create(orders) for _ in range(3)]
    stream = gateway.app[GATEWAY].feeds.stream()
    monkeypatch.setattr(order_feeds, "ROTATE_AFTER_S", 3600.0)
    first = stream.subscribe(order_ids[0])
    await asyncio.wait_for(first[1].get(), 5)  # the stream's initial metadata came before this
    assert not stream.batching
    subscriptions = [first, *(stream.subscribe(o) for o in order_ids[1:])]  # two in one turn of the loop
    for _, inbox in subscriptions[1:]:
        await asyncio.wait_for(inbox.get(), 5)
    assert received[-3:] == [[o] for o in order_ids]
    for ref, _ in subscriptions:
        stream.release(ref, stop=True)
