"""dexclient.AsyncClient against real in-process orders and notifier (AUTH=apikey)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from dexclient import AsyncClient, Conflict, InvalidArgument, NotFound, OrderEvent, RateLimited, Unauthenticated
from tests.support.client import SOL, USDC
from tests.support.secured import INTERNAL_TOKEN, Secured
from tests.support.transitions import advance


@pytest.fixture
async def admin(secured: Secured) -> AsyncIterator[AsyncClient]:
    client = AsyncClient.connect(secured.orders_target, secured.notifier_target, admin_token=INTERNAL_TOKEN)
    yield client
    await client.close()


async def client_for(secured: Secured, admin: AsyncClient, quota_per_min: int = 0) -> AsyncClient:
    new = await admin.create_key(f"py-{uuid.uuid4().hex[:8]}", quota_per_min=quota_per_min)
    return AsyncClient.connect(secured.orders_target, secured.notifier_target, api_key=new.secret, timeout=5)


async def test_create_read_list_and_watch_an_order(secured: Secured, admin: AsyncClient) -> None:
    client = await client_for(secured, admin)
    try:
        who = await client.whoami()
        assert (who.kind, who.auth) == ("key", "apikey") and who.key is not None
        placed = await client.create_order("SOL", "usdc", Decimal("2.5"), "0.01")
        assert placed.created and placed.order.status == "pending"
        assert (placed.order.token_in, placed.order.token_out, placed.order.amount_in) == (SOL, USDC, Decimal("2.5"))
        again = await client.create_order(SOL, USDC, "2.5", "0.01", idempotency_key=placed.idempotency_key)
        assert (again.created, again.order.id) == (False, placed.order.id), "the same key: the same order"

        watched = asyncio.create_task(_collect(client, placed.order.id))
        await advance(secured.service, placed.order.id, 0.02)
        events = await asyncio.wait_for(watched, 10)
        assert [e.status for e in events][-1] == "confirmed" and events[0].snapshot
        assert [e.seq for e in events] == list(range(events[0].seq, 6))

        order = await client.get_order(placed.order.id)
        assert order.status == "confirmed" and [e.seq for e in order.history] == [1, 2, 3, 4, 5]
        page = await client.list_orders(limit=10)
        assert [o.id for o in page.orders] == [placed.order.id], "a key lists its own orders only"
        with pytest.raises(Conflict) as refused:
            await client.cancel_order(placed.order.id)
        assert refused.value.reason == "NOT_CANCELLABLE"
    finally:
        await client.close()


async def _collect(client: AsyncClient, order_id: str) -> list[OrderEvent]:
    return [event async for event in client.watch(order_id)]


async def test_watch_mine_and_the_errors_a_client_meets(secured: Secured, admin: AsyncClient) -> None:
    alice = await client_for(secured, admin, quota_per_min=2)
    bob = await client_for(secured, admin)
    try:
        stream = await alice.open_mine()  # live: the order below is in it
        placed = await alice.create_order(SOL, USDC, "1")
        await advance(secured.service, placed.order.id, 0)
        event = await asyncio.wait_for(stream.__anext__(), 10)
        assert (event.order_id, event.seq, event.status) == (placed.order.id, 1, "pending")
        seqs = [event.seq]
        while seqs[-1] < 5:
            seqs.append((await asyncio.wait_for(stream.__anext__(), 10)).seq)
        assert seqs == [1, 2, 3, 4, 5]
        await stream.aclose()

        with pytest.raises(NotFound):
            await bob.get_order(placed.order.id)
        with pytest.raises(InvalidArgument) as bad:
            await alice.create_order(SOL, USDC, "0.0000000001")
        assert [v.field for v in bad.value.violations] == ["amount_in"]
        await alice.create_order(SOL, USDC, "1")
        with pytest.raises(RateLimited) as limited:
            await alice.create_order(SOL, USDC, "1")
        assert limited.value.retry_after_s and limited.value.retry_after_s > 0
        anonymous = AsyncClient.connect(secured.orders_target, secured.notifier_target)
        try:
            with pytest.raises(Unauthenticated):
                await anonymous.list_orders()
        finally:
            await anonymous.close()
        keys = await admin.list_keys()
        assert all(k.active for k in keys)
    finally:
        await alice.close()
        await bob.close()
