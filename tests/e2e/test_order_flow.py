"""The whole flow through five real service processes, RabbitMQ, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import cast

import aiohttp
import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.client import SOL, USDC, USDT, follow, post_order
from tests.support.mesh import Mesh

FLOW = ["pending", "routing", "building", "submitted", "confirmed"]


async def test_five_concurrent_orders_stream_every_status(mesh: Mesh) -> None:
    bodies = [
        {"tokenIn": SOL, "tokenOut": USDC, "amountIn": 1, "slippage": 0.01},
        {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "2.5", "slippage": "0.02"},
        {"tokenIn": USDC, "tokenOut": SOL, "amountIn": 150, "slippage": 0.01},
        {"tokenIn": SOL, "tokenOut": USDT, "amountIn": 0.5, "slippage": 0.05},
        {"tokenIn": USDC, "tokenOut": USDT, "amountIn": "1000", "slippage": 0.005},
    ]
    async with aiohttp.ClientSession() as session:
        created = await asyncio.gather(*(post_order(session, mesh.http, b) for b in bodies))
        for status, body in created:
            assert status == 201, body
            assert body["status"] == "pending"
            assert body["websocketUrl"] == f"{mesh.ws}/ws/orders/{body['orderId']}"
        streams = await asyncio.gather(*(follow(session, body["websocketUrl"]) for _, body in created))

    for (_, body), events in zip(created, streams, strict=True):
        statuses = [e["status"] for e in events]
        # The first message is the current state (whatever it is by then), then every later status.
        assert statuses == FLOW[FLOW.index(statuses[0]) :], statuses
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        assert all(e["orderId"] == body["orderId"] for e in events)
        final = events[-1]["data"]
        assert final["txHash"] and len(final["txHash"]) >= 86
        assert Decimal(final["executedPrice"]) > 0
        assert Decimal(final["amountOut"]) > 0
        assert final["venue"] in ("raydium", "meteora", "split")


async def test_late_subscriber_gets_confirmed_snapshot_and_get_returns_final_order(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await post_order(
            session, mesh.http, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "3", "slippage": "0.01"}
        )
        assert status == 201
        events = await follow(session, body["websocketUrl"])
        assert events[-1]["status"] == "confirmed"
        late = await follow(session, body["websocketUrl"])
        assert len(late) == 1
        assert late[0]["status"] == "confirmed"
        assert late[0]["seq"] == events[-1]["seq"] == 5
        assert late[0]["data"]["snapshot"] is True
        async with session.get(f"{mesh.http}/api/orders/{body['orderId']}") as resp:
            assert resp.status == 200
            order = await resp.json()
    assert order["status"] == "confirmed"
    assert order["txHash"] == events[-1]["data"]["txHash"]
    assert order["amountOut"] == events[-1]["data"]["amountOut"]
    assert order["executedPrice"] == events[-1]["data"]["executedPrice"]
    assert order["dexProvider"] in ("raydium", "meteora", "split")
    assert [h["status"] for h in order["history"]] == FLOW
    assert [h["seq"] for h in order["history"]] == [1, 2, 3, 4, 5]
    assert order["routing"]["quotes"], "the decision keeps every venue's quote"
    assert order["completedAt"] is not None


async def test_every_grpc_port_is_serving_and_reflects_its_service(mesh: Mesh) -> None:
    expected = {
        "orders": "dexengine.v1.Orders",
        "router": "dexengine.v1.Router",
        "executor": "dexengine.v1.Executor",
        "notifier": "dexengine.v1.Notifier",
    }
    for service, full_name in expected.items():
        async with grpc.aio.insecure_channel(mesh.grpc_target(service)) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=full_name), timeout=2
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING, service
            stub = reflection_pb2_grpc.ServerReflectionStub(cast(grpc.Channel, channel))  # typed for sync channels only
            reflect = cast(
                grpc.aio.StreamStreamMultiCallable[
                    reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
                ],
                stub.ServerReflectionInfo,
            )
            responses = reflect(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = [s.name async for r in responses for s in r.list_services_response.service]
            assert full_name in names, (service, names)
            assert "grpc.health.v1.Health" in names


async def test_bad_inputs_are_rejected_naming_the_field_and_write_nothing(mesh: Mesh) -> None:
    good = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": 1, "slippage": 0.01}
    cases: list[tuple[object, int, str]] = [
        (b"{not json", 400, "body"),
        ([1, 2], 400, "body"),
        ({**good, "tokenIn": None}, 400, "tokenIn"),
        ({k: v for k, v in good.items() if k != "tokenOut"}, 400, "tokenOut"),
        ({**good, "tokenIn": "not-a-mint"}, 400, "tokenIn"),
        ({**good, "tokenOut": SOL}, 400, "tokenOut"),
        ({**good, "amountIn": -1}, 400, "amountIn"),
        ({**good, "amountIn": "abc"}, 400, "amountIn"),
        ({**good, "amountIn": True}, 400, "amountIn"),
        ({**good, "slippage": 0.9}, 400, "slippage"),
        ({**good, "slippage": 0}, 400, "slippage"),
        ({**good, "type": "stop"}, 400, "type"),
        ({**good, "extra": 1}, 400, "extra"),
    ]
    field: str | None  # the field an error names; None for a 404
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    try:
        before = await conn.fetchval("SELECT count(*) FROM orders")
        async with aiohttp.ClientSession() as session:
            for body, status, field in cases:
                got, answer = await post_order(session, mesh.http, body)
                assert got == status, (body, answer)
                fields = [d["field"] for d in answer["error"]["details"]]
                assert field in fields, (body, answer)
                assert answer["error"]["code"] and answer["error"]["message"]
            for path, status, field in (
                ("/api/orders/not-a-uuid", 400, "orderId"),
                ("/api/orders/00000000-0000-0000-0000-000000000000", 404, None),
                ("/api/orders?status=done", 400, "status"),
                ("/api/orders?limit=0", 400, "limit"),
                ("/ws/orders/nope", 400, "orderId"),
                ("/ws/orders/00000000-0000-0000-0000-000000000000", 404, None),
            ):
                async with session.get(f"{mesh.http}{path}") as resp:
                    answer = await resp.json()
                    assert resp.status == status, (path, answer)
                    if field:
                        assert field in [d["field"] for d in answer["error"]["details"]]
        after = await conn.fetchval("SELECT count(*) FROM orders")
    finally:
        await conn.close()
    assert after == before
