"""AUTH=apikey through the real processes: HTTP, WebSocket and gRPC doors, ownership, quotas, "mine".

Orders here are executed for real (router, executor, localnet), under keys.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from dexengine.v1 import common_pb2, notifier_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc
from services.common.errors import parse_rpc_error
from tests.support.client import SOL, USDC, follow, post_order
from tests.support.mesh import Mesh
from tests.support.secured import ADMIN, bearer

BODY = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "0.5", "slippage": "0.02"}


class Doors:
    def __init__(self, mesh: Mesh, orders: grpc.aio.Channel, notifier: grpc.aio.Channel) -> None:
        self.mesh = mesh
        self.orders = orders_pb2_grpc.OrdersStub(orders)
        self.notifier = notifier_pb2_grpc.NotifierStub(notifier)

    async def key(self, quota_per_min: int = 0) -> tuple[str, str]:
        created = await self.orders.CreateApiKey(
            orders_pb2.CreateApiKeyRequest(name=f"e2e-{uuid.uuid4().hex[:8]}", quota_per_min=quota_per_min),
            metadata=ADMIN,
            timeout=5,
        )
        return created.key.id, created.secret

    async def revoke(self, key_id: str) -> None:
        await self.orders.RevokeApiKey(orders_pb2.RevokeApiKeyRequest(key=key_id), metadata=ADMIN, timeout=5)


@pytest.fixture
async def doors(auth_mesh: Mesh) -> AsyncIterator[Doors]:
    async with (
        grpc.aio.insecure_channel(auth_mesh.grpc_target("orders")) as orders,
        grpc.aio.insecure_channel(auth_mesh.grpc_target("notifier")) as notifier,
    ):
        yield Doors(auth_mesh, orders, notifier)


def headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def grpc_code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if hasattr(call, "read"):
            await call.read()
        else:
            await call
    return info.value.code(), parse_rpc_error(info.value).reason


async def test_an_order_under_a_key_executes_and_streams_to_confirmed(doors: Doors) -> None:
    _, secret = await doors.key()
    async with aiohttp.ClientSession(headers=headers(secret)) as session:
        status, created = await post_order(session, doors.mesh.http, BODY)
        assert status == 201, created
        events = await follow(session, created["websocketUrl"])
    assert events[-1]["status"] == "confirmed", events
    assert events[-1]["data"]["txHash"]


async def test_401_without_a_key_and_with_a_revoked_one_over_http_ws_and_grpc(doors: Doors) -> None:
    key_id, secret = await doors.key()
    async with aiohttp.ClientSession() as session:
        status, created = await post_order(session, doors.mesh.http, BODY, headers(secret))
        assert status == 201
        order_id = created["orderId"]
        await doors.revoke(key_id)
        for auth, reason in (({}, "API_KEY_MISSING"), (headers(secret), "API_KEY_REVOKED")):
            for method, path in (
                ("POST", "/api/orders/execute"),
                ("GET", f"/api/orders/{order_id}"),
                ("GET", "/api/orders"),
                ("POST", f"/api/orders/{order_id}/cancel"),
            ):
                async with session.request(
                    method, f"{doors.mesh.http}{path}", json=BODY if path.endswith("execute") else None, headers=auth
                ) as resp:
                    body = await resp.json()
                    assert (resp.status, body["error"]["code"]) == (401, reason), (path, body)
            for path in (f"/ws/orders/{order_id}", "/ws/orders"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(f"{doors.mesh.ws}{path}", headers=auth)
                assert info.value.status == 401, path
    for metadata, reason in (((), "API_KEY_MISSING"), (bearer(secret), "API_KEY_REVOKED")):
        calls = [
            doors.orders.CreateOrder(
                orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01"),
                metadata=metadata,
                timeout=5,
            ),
            doors.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), metadata=metadata, timeout=5),
            doors.orders.ListOrders(orders_pb2.ListOrdersRequest(), metadata=metadata, timeout=5),
            doors.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order_id), metadata=metadata, timeout=5),
            doors.notifier.Watch(notifier_pb2.WatchRequest(order_id=order_id), metadata=metadata),
            doors.notifier.WatchMine(notifier_pb2.WatchMineRequest(), metadata=metadata),
        ]
        for call in calls:
            assert await grpc_code(call) == (grpc.StatusCode.UNAUTHENTICATED, reason)


async def test_another_keys_order_is_404_over_http_ws_and_not_found_over_grpc(doors: Doors) -> None:
    _, alice = await doors.key()
    _, bob = await doors.key()
    async with aiohttp.ClientSession() as session:
        _, created = await post_order(session, doors.mesh.http, BODY, headers(alice))
        order_id = created["orderId"]
        for method, path in (("GET", f"/api/orders/{order_id}"), ("POST", f"/api/orders/{order_id}/cancel")):
            async with session.request(method, f"{doors.mesh.http}{path}", headers=headers(bob)) as resp:
                assert resp.status == 404, path
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(f"{doors.mesh.ws}/ws/orders/{order_id}", headers=headers(bob))
        assert info.value.status == 404
        async with session.ws_connect(f"{doors.mesh.ws}/ws/orders", headers=headers(bob)) as ws:
            await ws.send_json({"subscribe": [order_id]})
            frame = orjson.loads((await ws.receive(timeout=10)).data)
            assert frame["error"]["code"] == "ORDER_NOT_FOUND" and frame["orderId"] == order_id
    for call in (
        doors.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), metadata=bearer(bob), timeout=5),
        doors.orders.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order_id), metadata=bearer(bob), timeout=5),
        doors.notifier.Watch(notifier_pb2.WatchRequest(order_id=order_id), metadata=bearer(bob)),
    ):
        assert (await grpc_code(call))[0] == grpc.StatusCode.NOT_FOUND
    listed = await doors.orders.ListOrders(orders_pb2.ListOrdersRequest(limit=200), metadata=bearer(bob), timeout=5)
    assert order_id not in {o.id for o in listed.orders}


async def test_429_over_the_keys_quota_with_retry_after_over_http_and_grpc(doors: Doors) -> None:
    _, secret = await doors.key(quota_per_min=3)
    async with aiohttp.ClientSession(headers=headers(secret)) as session:
        answers = [await post_order(session, doors.mesh.http, BODY) for _ in range(3)]
        assert [status for status, _ in answers] == [201, 201, 201]
        async with session.post(f"{doors.mesh.http}/api/orders/execute", json=BODY) as resp:
            body = await resp.json()
            assert resp.status == 429 and body["error"]["code"] == "QUOTA_EXCEEDED"
            assert 1 <= int(resp.headers["Retry-After"]) <= 20
    code = await grpc_code(
        doors.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01"),
            metadata=bearer(secret),
            timeout=5,
        )
    )
    assert code == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    # Another key is not held back by this one's quota.
    _, other = await doors.key()
    async with aiohttp.ClientSession(headers=headers(other)) as session:
        assert (await post_order(session, doors.mesh.http, BODY))[0] == 201


async def test_subscribe_mine_sees_exactly_the_callers_orders_over_ws_and_grpc(doors: Doors) -> None:
    _, alice = await doors.key()
    _, bob = await doors.key()
    grpc_mine = doors.notifier.WatchMine(notifier_pb2.WatchMineRequest(), metadata=bearer(alice))
    await grpc_mine.initial_metadata()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{doors.mesh.ws}/ws/orders", headers=headers(alice)) as ws,
    ):
        await ws.send_json({"subscribe": "mine"})
        assert orjson.loads((await ws.receive(timeout=10)).data) == {"subscribed": "mine"}
        ours, theirs = [], []
        for _ in range(3):
            ours.append((await post_order(session, doors.mesh.http, BODY, headers(alice)))[1]["orderId"])
            theirs.append((await post_order(session, doors.mesh.http, BODY, headers(bob)))[1]["orderId"])
        seen: dict[str, list[dict[str, Any]]] = {}
        async with asyncio.timeout(60):
            while not all(seen.get(o) and seen[o][-1]["status"] == "confirmed" for o in ours):
                frame = orjson.loads((await ws.receive()).data)
                seen.setdefault(frame["orderId"], []).append(frame)
        assert set(seen) == set(ours), "exactly alice's orders"
        for order_id in ours:
            assert [e["seq"] for e in seen[order_id]] == [1, 2, 3, 4, 5], seen[order_id]
            assert [e["status"] for e in seen[order_id]] == ["pending", "routing", "building", "submitted", "confirmed"]

    over_grpc: dict[str, list[int]] = {}
    async with asyncio.timeout(30):
        while not all(len(over_grpc.get(o, [])) == 5 for o in ours):
            event = await grpc_mine.read()
            assert isinstance(event, common_pb2.OrderEvent)  # not grpc.aio.EOF: the stream stays open
            over_grpc.setdefault(event.order_id, []).append(event.seq)
    grpc_mine.cancel()
    assert set(over_grpc) == set(ours) and all(seqs == [1, 2, 3, 4, 5] for seqs in over_grpc.values())
