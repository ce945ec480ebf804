"""The trigger survives a kill (catch-up from current state) and scales to replicas (the CAS fires each order once).

Runs after test_limit_sniper_cancel (same mesh). The executor is stopped first so that the fired orders do
not trade the pools meanwhile: the price every order sees is the one the test set, and the oracle is simple.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg
import grpc

from dexengine.v1 import common_pb2, orders_pb2, orders_pb2_grpc, router_pb2, router_pb2_grpc
from tests.support.client import SOL, USDC
from tests.support.mesh import ROOT, Mesh, free_port
from tests.support.scenarios import localnet
from tests.support.waiting import eventually

AMOUNT = "0.1"


async def _arm(orders: orders_pb2_grpc.OrdersAsyncStub, prices: list[Decimal]) -> dict[str, Decimal]:
    async def one(price: Decimal) -> tuple[str, Decimal]:
        request = orders_pb2.CreateOrderRequest(
            token_in=SOL,
            token_out=USDC,
            amount_in=AMOUNT,
            slippage="0.01",
            type="limit",
            limit_price=str(price),
        )
        resp = await orders.CreateOrder(request, timeout=10)
        assert resp.order.status == common_pb2.ORDER_STATUS_WAITING
        return resp.order.id, price

    armed: dict[str, Decimal] = {}
    for i in range(0, len(prices), 50):
        armed.update(await asyncio.gather(*(one(p) for p in prices[i : i + 50])))
    return armed


async def _routing_events(mesh: Mesh, ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    try:
        rows = await conn.fetch(
            """SELECT order_id::text AS id, count(*) AS n FROM order_events
               WHERE order_id = ANY($1::uuid[]) AND status = 'routing' GROUP BY order_id""",
            [uuid.UUID(i) for i in ids],
        )
    finally:
        await conn.close()
    return {r["id"]: int(r["n"]) for r in rows}


async def _statuses(mesh: Mesh, ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    try:
        rows = await conn.fetch("SELECT id::text, status FROM orders WHERE id = ANY($1::uuid[])", ids)
    finally:
        await conn.close()
    return {r["id"]: r["status"] for r in rows}


async def _executable(mesh: Mesh) -> Decimal:
    async with grpc.aio.insecure_channel(mesh.grpc_target("router")) as channel:
        resp = await router_pb2_grpc.RouterStub(channel).GetQuotes(
            router_pb2.GetQuotesRequest(token_in=SOL, token_out=USDC, amount_in=AMOUNT, slippage="0.01"), timeout=10
        )
    return Decimal(resp.decision.expected_price)


async def test_kill_the_router_with_1000_armed_move_the_price_restart_every_eligible_fires_once(mesh: Mesh) -> None:
    await mesh.stop_one("executor")
    # 1,000 limits from 150.5 to 170.48 (step 0.02): none executable at 150.
    prices = [Decimal("150.5") + Decimal("0.02") * i for i in range(1000)]
    async with grpc.aio.insecure_channel(mesh.grpc_target("orders")) as channel:
        armed = await _arm(orders_pb2_grpc.OrdersStub(channel), prices)
    ids = list(armed)
    await asyncio.sleep(1.0)
    assert await _routing_events(mesh, ids) == {}, "nothing is executable at 150"
    assert await mesh.stop_one("router", signal.SIGKILL) == -signal.SIGKILL
    async with aiohttp.ClientSession() as session:
        await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": "160"})
        await mesh.start_one("router")
        await mesh.wait_ready("router")
        executable = await _executable(mesh)
        eligible = {i for i, p in armed.items() if p <= executable}
        assert 400 < len(eligible) < 600, executable
        await eventually(lambda: _all_fired(mesh, eligible), timeout=30, every=0.2)
        await asyncio.sleep(1.0)  # anything that would fire wrongly or twice has had its chance
        fired = await _routing_events(mesh, ids)
        statuses = await _statuses(mesh, ids)
        await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": "150"})
    assert set(fired) == eligible, f"{len(set(fired) - eligible)} fired wrongly, {len(eligible - set(fired))} missed"
    assert set(fired.values()) == {1}, "each fired exactly once"
    assert all(statuses[i] == "routing" for i in eligible)
    assert all(statuses[i] == "waiting" for i in set(ids) - eligible)
    await _cancel_all(mesh, [i for i in ids if i not in eligible])


async def _all_fired(mesh: Mesh, eligible: set[str]) -> bool:
    return set(await _routing_events(mesh, list(eligible))) == eligible


async def _cancel_all(mesh: Mesh, ids: list[str]) -> None:
    async with grpc.aio.insecure_channel(mesh.grpc_target("orders")) as channel:
        stub = orders_pb2_grpc.OrdersStub(channel)
        for i in range(0, len(ids), 50):
            await asyncio.gather(
                *(stub.CancelOrder(orders_pb2.CancelOrderRequest(order_id=o), timeout=10) for o in ids[i : i + 50])
            )


async def test_two_router_replicas_fire_each_order_exactly_once(mesh: Mesh) -> None:
    port, metrics_port = free_port(), free_port()
    log = (mesh.log_dir / "router-2.log").open("ab")
    second = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.router",
        env={**mesh.env, "ROUTER_GRPC_PORT": str(port), "METRICS_PORT": str(metrics_port)},
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    try:
        await _wait_serving(f"127.0.0.1:{port}")
        prices = [Decimal("151") + Decimal("0.05") * i for i in range(300)]
        async with grpc.aio.insecure_channel(mesh.grpc_target("orders")) as channel:
            armed = await _arm(orders_pb2_grpc.OrdersStub(channel), prices)
        ids = list(armed)
        # Both replicas hold every order armed (their gauges say so) before the price moves.
        for metrics in (mesh.env["ROUTER_METRICS_PORT"], str(metrics_port)):
            await eventually(functools.partial(_armed_at_least, metrics, len(ids)), timeout=30, every=0.2)
        async with aiohttp.ClientSession() as session:
            await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": "170"})
            await eventually(lambda: _all_fired(mesh, set(ids)), timeout=30, every=0.2)
            await asyncio.sleep(1.0)
            fired = await _routing_events(mesh, ids)
            await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": "150"})
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    assert set(fired) == set(ids) and set(fired.values()) == {1}, "every order fired, none twice"
    logs = (mesh.log_dir / "router.log").read_text() + Path(mesh.log_dir / "router-2.log").read_text()
    assert "order triggered" in (mesh.log_dir / "router-2.log").read_text() or "lost the race" in logs


async def _armed_at_least(metrics_port: str, count: int) -> bool:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
        text = await resp.text()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("dexengine_armed_orders ")]
    return bool(values) and values[0] >= count


async def _wait_serving(target: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async def serving() -> bool:
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    await eventually(serving, timeout=30, every=0.2)
