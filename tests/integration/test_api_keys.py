"""API keys over gRPC (orders, notifier) with AUTH=apikey: hashed storage, ownership, quotas, admin rights."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable

import asyncpg
import grpc
import pytest

from dexengine.v1 import common_pb2, notifier_pb2, orders_pb2
from services.common.errors import parse_rpc_error
from tests.support import transitions
from tests.support.client import SOL, USDC
from tests.support.secured import ADMIN, Secured, bearer
from tests.support.transitions import advance


def order_request(**overrides: str) -> orders_pb2.CreateOrderRequest:
    values = {"token_in": SOL, "token_out": USDC, "amount_in": "1", "slippage": "0.01", **overrides}
    return orders_pb2.CreateOrderRequest(**values)


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_keys_are_stored_hashed_shown_once_listed_and_revoked(secured: Secured) -> None:
    name = f"alice-{uuid.uuid4().hex[:6]}"
    created = await secured.orders.CreateApiKey(orders_pb2.CreateApiKeyRequest(name=name), metadata=ADMIN, timeout=5)
    secret = created.secret
    assert secret.startswith("dex_") and len(secret) >= 40
    assert created.key.prefix == secret[:12] and created.key.quota_per_min == 0
    conn = await asyncpg.connect(secured.settings.database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", uuid.UUID(created.key.id))
        assert bytes(row["key_hash"]) == hashlib.sha256(secret.encode()).digest()
        assert secret not in str(dict(row)), "only the hash is stored"
    finally:
        await conn.close()
    listed = await secured.orders.ListApiKeys(orders_pb2.ListApiKeysRequest(), metadata=ADMIN, timeout=5)
    assert [k.name for k in listed.keys if k.id == created.key.id] == [name]
    assert all("secret" not in str(k) for k in listed.keys)
    taken = await rpc_error(
        secured.orders.CreateApiKey(orders_pb2.CreateApiKeyRequest(name=name), metadata=ADMIN, timeout=5)
    )
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS

    who = await secured.orders.WhoAmI(orders_pb2.WhoAmIRequest(), metadata=bearer(secret), timeout=5)
    assert (who.kind, who.key.name, who.auth) == ("key", name, "apikey")
    revoked = await secured.orders.RevokeApiKey(orders_pb2.RevokeApiKeyRequest(key=name), metadata=ADMIN, timeout=5)
    assert revoked.key.HasField("revoked_at")
    again = await secured.orders.RevokeApiKey(
        orders_pb2.RevokeApiKeyRequest(key=created.key.id), metadata=ADMIN, timeout=5
    )
    assert again.key.revoked_at == revoked.key.revoked_at, "revoking twice changes nothing"
    err = await rpc_error(secured.orders.CreateOrder(order_request(), metadata=bearer(secret), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert parse_rpc_error(err).reason == "API_KEY_REVOKED"
    active = await secured.orders.ListApiKeys(orders_pb2.ListApiKeysRequest(), metadata=ADMIN, timeout=5)
    assert created.key.id not in {k.id for k in active.keys}
    every = await secured.orders.ListApiKeys(
        orders_pb2.ListApiKeysRequest(include_revoked=True), metadata=ADMIN, timeout=5
    )
    assert created.key.id in {k.id for k in every.keys}


@pytest.mark.parametrize(
    ("name", "quota", "field"), [("", 0, "name"), ("has space", 0, "name"), ("ok", -1, "quota_per_min")]
)
async def test_bad_key_requests_name_the_field(secured: Secured, name: str, quota: int, field: str) -> None:
    err = await rpc_error(
        secured.orders.CreateApiKey(
            orders_pb2.CreateApiKeyRequest(name=name, quota_per_min=quota), metadata=ADMIN, timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in parse_rpc_error(err).violations] == [field]


async def test_public_methods_need_a_key_and_admin_methods_the_internal_token(secured: Secured) -> None:
    _, secret = await secured.new_key(f"bob-{uuid.uuid4().hex[:6]}")
    order_id = str(uuid.uuid4())
    call: Awaitable[object]
    for call in (
        secured.orders.CreateOrder(order_request(), timeout=5),
        secured.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=5),
        secured.orders.ListOrders(orders_pb2.ListOrdersRequest(), timeout=5),
        secured.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order_id), timeout=5),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        info = parse_rpc_error(err)
        assert info.reason == "API_KEY_MISSING" and [v.field for v in info.violations] == ["authorization"]
    for metadata, reason in (
        (bearer("dex_not-a-key"), "API_KEY_INVALID"),
        ((("authorization", f"Basic {secret}"),), "API_KEY_MALFORMED"),
    ):
        err = await rpc_error(secured.orders.ListOrders(orders_pb2.ListOrdersRequest(), metadata=metadata, timeout=5))
        assert (err.code(), parse_rpc_error(err).reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    # A key cannot act as a service, and a wrong internal token is no token.
    for call in (
        secured.orders.Transition(
            transitions.request(order_id, common_pb2.ORDER_STATUS_PENDING, common_pb2.ORDER_STATUS_ROUTING),
            metadata=bearer(secret),
            timeout=5,
        ),
        secured.orders.CreateApiKey(orders_pb2.CreateApiKeyRequest(name="x"), metadata=bearer(secret), timeout=5),
        secured.orders.ListApiKeys(orders_pb2.ListApiKeysRequest(), metadata=bearer(secret), timeout=5),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    wrong = (("x-dexengine-internal", "not-the-token"),)
    err = await rpc_error(secured.orders.ListApiKeys(orders_pb2.ListApiKeysRequest(), metadata=wrong, timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_another_keys_order_does_not_exist_for_a_key(secured: Secured) -> None:
    _, alice = await secured.new_key(f"alice-{uuid.uuid4().hex[:6]}")
    _, bob = await secured.new_key(f"bob-{uuid.uuid4().hex[:6]}")
    mine = (await secured.orders.CreateOrder(order_request(), metadata=bearer(alice), timeout=5)).order
    got = await secured.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=mine.id), metadata=bearer(alice), timeout=5)
    assert got.order.id == mine.id
    for call in (
        secured.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=mine.id), metadata=bearer(bob), timeout=5),
        secured.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=mine.id), metadata=bearer(bob), timeout=5),
    ):
        err = await rpc_error(call)
        assert (err.code(), parse_rpc_error(err).reason) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    watch = secured.notifier.Watch(notifier_pb2.WatchRequest(order_id=mine.id), metadata=bearer(bob))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch.read()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    watch = secured.notifier.Watch(notifier_pb2.WatchRequest(order_id=mine.id))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    own = secured.notifier.Watch(notifier_pb2.WatchRequest(order_id=mine.id), metadata=bearer(alice))
    first = await own.read()
    assert isinstance(first, common_pb2.OrderEvent), first
    assert first.order_id == mine.id and first.data.snapshot.order.id == mine.id
    own.cancel()
    # WatchMany serves many clients at once: the services of the mesh only, never a key, even the owner's.
    for metadata, code in ((bearer(alice), grpc.StatusCode.PERMISSION_DENIED), ((), grpc.StatusCode.UNAUTHENTICATED)):
        many = secured.notifier.WatchMany(
            iter([notifier_pb2.WatchManyRequest(ref=1, order_id=mine.id)]), metadata=metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await many.read()
        assert info.value.code() == code
    many = secured.notifier.WatchMany(metadata=ADMIN)
    await many.write(notifier_pb2.WatchManyRequest(ref=1, order_id=mine.id))
    batch = await many.read()
    assert isinstance(batch, notifier_pb2.WatchManyBatch), batch
    first_of_many = batch.messages[0]
    assert (first_of_many.ref, first_of_many.event.data.snapshot.order.id) == (1, mine.id)
    many.cancel()

    listed_bob = await secured.orders.ListOrders(
        orders_pb2.ListOrdersRequest(limit=200), metadata=bearer(bob), timeout=5
    )
    assert mine.id not in {o.id for o in listed_bob.orders}
    listed_alice = await secured.orders.ListOrders(
        orders_pb2.ListOrdersRequest(limit=200), metadata=bearer(alice), timeout=5
    )
    assert {o.id for o in listed_alice.orders} == {mine.id}
    # The same Idempotency-Key from two keys: two orders, neither sees the other's.
    key = f"shared-{uuid.uuid4()}"
    a = await secured.orders.CreateOrder(order_request(idempotency_key=key), metadata=bearer(alice), timeout=5)
    b = await secured.orders.CreateOrder(
        order_request(idempotency_key=key, amount_in="2"), metadata=bearer(bob), timeout=5
    )
    assert a.created and b.created and a.order.id != b.order.id
    replay = await secured.orders.CreateOrder(order_request(idempotency_key=key), metadata=bearer(alice), timeout=5)
    assert (replay.created, replay.order.id) == (False, a.order.id)


async def test_cancel_answers_not_cancellable_once_routing(secured: Secured) -> None:
    _, secret = await secured.new_key(f"carol-{uuid.uuid4().hex[:6]}")
    order = (await secured.orders.CreateOrder(order_request(), metadata=bearer(secret), timeout=5)).order
    cancelled = await secured.orders.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=order.id), metadata=bearer(secret), timeout=5
    )
    assert cancelled.order.status == common_pb2.ORDER_STATUS_CANCELLED, "a pending order is cancellable"
    order = (await secured.orders.CreateOrder(order_request(), metadata=bearer(secret), timeout=5)).order
    await advance(secured.service, order.id, 0)
    done = await rpc_error(
        secured.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order.id), metadata=bearer(secret), timeout=5)
    )
    assert done.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert parse_rpc_error(done).reason == "NOT_CANCELLABLE" and "confirmed" in (done.details() or "")


async def test_quota_over_grpc_is_resource_exhausted_with_retry_info_and_creates_nothing(secured: Secured) -> None:
    key_id, secret = await secured.new_key(f"quota-{uuid.uuid4().hex[:6]}", quota_per_min=3)
    keyed = order_request(idempotency_key=f"q-{uuid.uuid4()}")
    accepted = [
        await secured.orders.CreateOrder(keyed, metadata=bearer(secret), timeout=5),
        *[await secured.orders.CreateOrder(order_request(), metadata=bearer(secret), timeout=5) for _ in range(2)],
    ]
    assert all(a.created for a in accepted)
    err = await rpc_error(secured.orders.CreateOrder(order_request(), metadata=bearer(secret), timeout=5))
    info = parse_rpc_error(err)
    assert (err.code(), info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert info.retry_after_s is not None and 0 < info.retry_after_s <= 20
    replay = await secured.orders.CreateOrder(keyed, metadata=bearer(secret), timeout=5)
    assert (replay.created, replay.order.id) == (False, accepted[0].order.id), "a replay is answered over quota"
    conn = await asyncpg.connect(secured.settings.database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM orders WHERE api_key_id = $1", uuid.UUID(key_id))
    finally:
        await conn.close()
    assert count == 3


async def test_watch_mine_streams_exactly_the_keys_orders_with_snapshots_first(secured: Secured) -> None:
    _, alice = await secured.new_key(f"alice-{uuid.uuid4().hex[:6]}")
    _, bob = await secured.new_key(f"bob-{uuid.uuid4().hex[:6]}")
    live_before = (await secured.orders.CreateOrder(order_request(), metadata=bearer(alice), timeout=5)).order
    stream = secured.notifier.WatchMine(notifier_pb2.WatchMineRequest(), metadata=bearer(alice))
    await stream.initial_metadata()  # live from here
    ours = [(await secured.orders.CreateOrder(order_request(), metadata=bearer(alice), timeout=5)).order.id]
    theirs = [(await secured.orders.CreateOrder(order_request(), metadata=bearer(bob), timeout=5)).order.id]
    ours.append((await secured.orders.CreateOrder(order_request(), metadata=bearer(alice), timeout=5)).order.id)
    await asyncio.gather(*(advance(secured.service, oid, 0.01) for oid in [live_before.id, *ours, *theirs]))
    seen: dict[str, list[tuple[int, str, bool]]] = {}
    async with asyncio.timeout(15):
        while not all(seen.get(oid) and seen[oid][-1][1] == "confirmed" for oid in [live_before.id, *ours]):
            event = await stream.read()
            assert isinstance(event, common_pb2.OrderEvent), event
            snapshot = event.data.HasField("snapshot")
            status = common_pb2.OrderStatus.Name(event.status).removeprefix("ORDER_STATUS_").lower()
            seen.setdefault(event.order_id, []).append((event.seq, status, snapshot))
    stream.cancel()
    assert set(seen) == {live_before.id, *ours}, "exactly the caller's orders"
    assert seen[live_before.id][0][2], "an order live at subscription starts with a snapshot"
    for oid in ours:
        assert [s for s, _, _ in seen[oid]] == [1, 2, 3, 4, 5], "a new order: every event from pending, in order"
    for events in seen.values():
        seqs = [s for s, _, _ in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap, no duplicate"

    unauthenticated = secured.notifier.WatchMine(notifier_pb2.WatchMineRequest())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unauthenticated.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
