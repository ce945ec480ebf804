"""notifier.Watch: snapshot first, then every later event, no gap, no duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from dexengine.v1 import notifier_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc
from services.common import states
from services.notifier.__main__ import NotifierComponent
from tests.support.client import SOL, USDC
from tests.support.transitions import CHAIN, advance


@pytest.fixture(scope="module")
async def notifier(
    notifier_served: tuple[NotifierComponent, str],
) -> AsyncIterator[notifier_pb2_grpc.NotifierStub]:
    async with grpc.aio.insecure_channel(notifier_served[1]) as channel:
        yield notifier_pb2_grpc.NotifierStub(channel)


async def watch(notifier: notifier_pb2_grpc.NotifierStub, order_id: str) -> list[tuple[str, int]]:
    seen = []
    async for event in notifier.Watch(notifier_pb2.WatchRequest(order_id=order_id), timeout=20):
        seen.append((states.from_proto(event.status), event.seq))
    return seen


@pytest.mark.parametrize("pause", [0.0, 0.01, 0.05])
async def test_subscriptions_racing_transitions_see_each_event_once_in_order(
    orders: orders_pb2_grpc.OrdersStub, notifier: notifier_pb2_grpc.NotifierStub, pause: float
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


async def test_watch_unknown_order_is_not_found(notifier: notifier_pb2_grpc.NotifierStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch(notifier, "00000000-0000-0000-0000-000000000000")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await watch(notifier, "not-a-uuid")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
