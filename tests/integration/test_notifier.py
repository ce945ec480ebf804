"""notifier.Watch and WatchMany: snapshot first, then every later event, no gap, no duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import status_pb2

from dexengine.v1 import notifier_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc
from services.common import states
from services.common.errors import parse_status
from services.common.mesh_calls import WATCH_MANY_MORE
from services.notifier.__main__ import NotifierComponent
from tests.support import transitions
from tests.support.client import SOL, USDC
from tests.support.transitions import CHAIN, advance
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
async def notifier(
    notifier_served: tuple[NotifierComponent, str],
) -> AsyncIterator[notifier_pb2_grpc.NotifierAsyncStub]:
    async with grpc.aio.insecure_channel(notifier_served[1]) as channel:
        yield notifier_pb2_grpc.NotifierStub(channel)


async def watch(notifier: notifier_pb2_grpc.NotifierAsyncStub, order_id: str) -> list[tuple[str, int]]:
    seen = []
    async for event in notifier.Watch(notifier_pb2.WatchRequest(order_id=order_id), timeout=20):
        seen.append((states.from_proto(event.status), event.seq))
    return seen


@pytest.mark.parametrize("pause", [0.0, 0.01, 0.05])
async def test_subscriptions_racing_transitions_see_each_event_once_in_order(
    orders: orders_pb2_grpc.OrdersAsyncStub, notifier: notifier_pb2_grpc.NotifierAsyncStub, pause: float
) -> None:
    """Watchers join while events are being committed: snapshot, then the rest, contiguous."""
    order = (
        await orders.CreateOrder(
            orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01"), timeout=5
        )
    ).order
    mover = asyncio.create_task(advance(orders, order.id, pause))
    watchers = []
    for _ in range(8):
        watchers.append(asyncio.create_task(watch(notifier, order.id)))
        await asyncio.sleep(pause / 2)
    results = await asyncio.gather(*watchers)
    await mover
    for seen in results:
        first_status, first_seq = seen[0]
        assert CHAIN.index(first_status) == first_seq - 1
        assert seen == [(s, i + 1) for i, s in enumerate(CHAIN)][first_seq - 1 :], seen


async def test_watch_unknown_order_is_not_found(notifier: notifier_pb2_grpc.NotifierAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch(notifier, "00000000-0000-0000-0000-000000000000")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await watch(notifier, "not-a-uuid")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def create(orders: orders_pb2_grpc.OrdersAsyncStub) -> str:
    request = orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01")
    return (await orders.CreateOrder(request, timeout=5)).order.id


class Many:
    """A WatchMany call read message by message (the stream carries them in batches); ``batches`` as they came."""

    def __init__(self, notifier: notifier_pb2_grpc.NotifierAsyncStub) -> None:
        self.call = notifier.WatchMany(timeout=20)
        self.ready: list[notifier_pb2.WatchManyMessage] = []
        self.batches: list[list[notifier_pb2.WatchManyMessage]] = []

    async def write(self, request: notifier_pb2.WatchManyRequest) -> None:
        await self.call.write(request)

    async def read(self) -> notifier_pb2.WatchManyMessage:
        while not self.ready:
            batch = await self.call.read()
            assert isinstance(batch, notifier_pb2.WatchManyBatch), batch
            assert batch.messages, "a batch is never empty"
            self.batches.append(list(batch.messages))
            self.ready.extend(batch.messages)
        return self.ready.pop(0)


def subscribe(ref: int, order_id: str) -> notifier_pb2.WatchManyRequest:
    return notifier_pb2.WatchManyRequest(ref=ref, order_id=order_id)


def refusal(message: notifier_pb2.WatchManyMessage) -> tuple[grpc.StatusCode, str, list[str]]:
    info = parse_status(status_pb2.Status.FromString(message.refused))
    return info.code, info.reason, [v.field for v in info.violations]


@pytest.mark.parametrize("pause", [0.0, 0.02])
async def test_watch_many_streams_each_subscription_as_watch_does_over_one_call(
    orders: orders_pb2_grpc.OrdersAsyncStub,
    notifier: notifier_pb2_grpc.NotifierAsyncStub,
    notifier_served: tuple[NotifierComponent, str],
    pause: float,
) -> None:
    """Orders subscribed on one stream while they move: per ref a snapshot, then the rest, contiguous, to the end."""
    order_ids = [await create(orders) for _ in range(4)]
    call = Many(notifier)
    movers = []
    for ref, order_id in enumerate(order_ids, start=1):
        await call.write(subscribe(ref, order_id))
        movers.append(asyncio.create_task(advance(orders, order_id, pause)))
        await asyncio.sleep(pause)
    seen: dict[int, list[tuple[str, int, bool]]] = {ref: [] for ref in range(1, 5)}
    finished: set[int] = set()
    while finished != set(seen):
        message = await call.read()
        assert message.WhichOneof("item") == "event", message
        assert message.event.order_id == order_ids[message.ref - 1]
        status = states.from_proto(message.event.status)
        seen[message.ref].append((status, message.event.seq, message.event.data.HasField("snapshot")))
        if status in states.TERMINAL:
            finished.add(message.ref)
    await asyncio.gather(*movers)
    for events in seen.values():
        (first_status, first_seq, snapshot), rest = events[0], events[1:]
        assert snapshot and CHAIN.index(first_status) == first_seq - 1
        assert [(s, q) for s, q, _ in events] == [(s, i + 1) for i, s in enumerate(CHAIN)][first_seq - 1 :], events
        assert not any(snap for _, _, snap in rest)
    # A subscription that reached its terminal event is gone from the notifier; the stream stays open.
    hub = notifier_served[0].hub
    await eventually(lambda: not any(order_id in hub.watchers for order_id in order_ids))
    await call.write(subscribe(9, order_ids[0]))
    again = await call.read()
    assert (again.ref, states.from_proto(again.event.status), again.event.data.HasField("snapshot")) == (
        9,
        "confirmed",
        True,
    )
    await call.call.done_writing()
    assert await call.call.read() == grpc.aio.EOF  # the caller ended its side: so does the stream
    assert await call.call.code() == grpc.StatusCode.OK


async def test_watch_many_refuses_a_subscription_alone_and_a_stopped_one_sends_nothing_more(
    orders: orders_pb2_grpc.OrdersAsyncStub,
    notifier: notifier_pb2_grpc.NotifierAsyncStub,
    notifier_served: tuple[NotifierComponent, str],
) -> None:
    hub = notifier_served[0].hub
    stopped, kept = await create(orders), await create(orders)
    call = Many(notifier)
    await call.write(subscribe(1, "00000000-0000-0000-0000-000000000000"))
    await call.write(subscribe(2, "not-a-uuid"))
    await call.write(subscribe(3, stopped))
    await call.write(subscribe(4, kept))
    first: dict[int, notifier_pb2.WatchManyMessage] = {}
    while len(first) < 4:
        message = await call.read()
        first.setdefault(message.ref, message)
    assert refusal(first[1]) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND", [])
    assert refusal(first[2]) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["order_id"])
    assert first[3].event.data.HasField("snapshot") and first[4].event.data.HasField("snapshot")
    await call.write(notifier_pb2.WatchManyRequest(ref=3, stop=True))
    await eventually(lambda: stopped not in hub.watchers)
    await asyncio.gather(advance(orders, stopped, 0), advance(orders, kept, 0))
    later: list[notifier_pb2.WatchManyMessage] = []
    while not later or states.from_proto(later[-1].event.status) not in states.TERMINAL:
        later.append(await call.read())
    # Everything after the stop belongs to the order still followed, in order, up to its end.
    assert {m.ref for m in later} == {4}
    assert [m.event.seq for m in later] == list(range(2, len(CHAIN) + 1))
    call.call.cancel()
    await eventually(lambda: kept not in hub.watchers and stopped not in hub.watchers)


async def test_watch_many_sends_a_commits_events_in_one_message(
    orders: orders_pb2_grpc.OrdersAsyncStub, notifier: notifier_pb2_grpc.NotifierAsyncStub
) -> None:
    """route_submit commits routing, building and submitted at once: they reach the caller together."""
    order_id = await create(orders)
    call = Many(notifier)
    await call.write(subscribe(1, order_id))
    assert (await call.read()).event.data.HasField("snapshot")
    await orders.Transition(transitions.request(order_id, "pending", "submitted"), timeout=5)
    await call.read()
    assert [states.from_proto(m.event.status) for m in call.batches[-1]] == ["routing", "building", "submitted"]
    call.call.cancel()


async def test_watch_many_reads_requests_carried_together_as_if_each_came_alone(
    orders: orders_pb2_grpc.OrdersAsyncStub, notifier: notifier_pb2_grpc.NotifierAsyncStub
) -> None:
    """``more``: a carrier of several subscriptions, a request with its own subscription and more, a stop among
    them; the notifier says so as the stream opens."""
    order_ids = [await create(orders) for _ in range(4)]
    call = Many(notifier)
    assert (await call.call.initial_metadata()).get(WATCH_MANY_MORE) == "1"
    first: dict[int, notifier_pb2.WatchManyMessage] = {}

    async def snapshots(refs: set[int]) -> None:
        while not refs <= set(first):
            message = await call.read()
            first.setdefault(message.ref, message)

    await call.write(notifier_pb2.WatchManyRequest(more=[subscribe(1, order_ids[0]), subscribe(2, order_ids[1])]))
    await snapshots({1, 2})
    await call.write(
        notifier_pb2.WatchManyRequest(
            ref=3,
            order_id=order_ids[2],
            more=[subscribe(4, order_ids[3]), notifier_pb2.WatchManyRequest(ref=2, stop=True)],
        )
    )
    await snapshots({3, 4})
    for ref in (1, 2, 3, 4):
        assert first[ref].event.order_id == order_ids[ref - 1] and first[ref].event.data.HasField("snapshot")
    await asyncio.gather(*(advance(orders, o, 0) for o in order_ids))
    later: dict[int, list[int]] = {}
    while sorted(later) != [1, 3, 4] or any(len(later[r]) < len(CHAIN) - 1 for r in later):
        message = await call.read()
        later.setdefault(message.ref, []).append(message.event.seq)
    assert later == {r: list(range(2, len(CHAIN) + 1)) for r in (1, 3, 4)}, "each in seq order; ref 2 was stopped"
    call.call.cancel()
