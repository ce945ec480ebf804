"""The executor as an operator sees it: its 'order executed' log line, and the global rate limit at work."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import aiohttp
import asyncpg
import grpc
import orjson
import pytest
import redis.asyncio as aioredis

from dexengine.v1 import executor_pb2, executor_pb2_grpc
from services.common import states
from services.executor.ratelimit import limiter_key
from tests.support.client import SOL, USDC, follow, post_order
from tests.support.mesh import Mesh
from tests.support.scenarios import localnet
from tests.support.waiting import eventually

LANDINGS_GAUGE = "dexengine_executor_landings "
ORDER = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "0.1", "slippage": "0.05"}
RATE_PER_MIN = 30
BURST = 2


async def test_a_confirmed_order_writes_one_order_executed_json_line(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await post_order(
            session, mesh.http, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1.5", "slippage": "0.02"}
        )
        assert status == 201
        events = await follow(session, body["websocketUrl"])
    final = events[-1]
    assert final["status"] == "confirmed"
    lines = []
    for _ in range(50):  # the line is flushed right after the commit; give the file a moment
        raw = (mesh.log_dir / "executor.log").read_text(errors="replace").splitlines()
        lines = [orjson.loads(x) for x in raw if x.startswith("{") and body["orderId"] in x]
        if any(x.get("msg") == "order executed" for x in lines):
            break
        await asyncio.sleep(0.1)
    (line,) = [x for x in lines if x.get("msg") == "order executed"]
    assert line["orderId"] == body["orderId"] and line["service"] == "executor"
    assert line["venue"] == final["data"]["venue"]
    assert line["executedPrice"] == final["data"]["executedPrice"]
    assert line["amountOut"] == final["data"]["amountOut"]
    assert line["txHash"] == final["data"]["txHash"]
    assert isinstance(line["durationMs"], int) and line["durationMs"] > 0


@contextlib.asynccontextmanager
async def executor_with(mesh: Mesh, env: dict[str, str]) -> AsyncIterator[Mesh]:
    """The executor restarted with ``env`` once every earlier test's order has ended, and back to the mesh's
    settings afterwards."""
    await mesh.stop_one("executor")
    await mesh.start_one("executor", env)
    await mesh.wait_ready("executor")
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    try:
        await eventually(lambda: _no_order_in_flight(conn), timeout=60)
    finally:
        await conn.close()
    try:
        yield mesh
    finally:
        await mesh.stop_one("executor")
        await mesh.start_one("executor")
        await mesh.wait_ready("executor")


@pytest.fixture
async def limited(mesh: Mesh) -> AsyncIterator[Mesh]:
    """The executor restarted with the limiter on: 30 orders/min, burst 2, and a fresh budget once every earlier
    test's order has ended (a job of one still waiting out a retry tier would otherwise spend part of the burst)."""
    async with executor_with(mesh, {"RATE_LIMIT_PER_MIN": str(RATE_PER_MIN), "RATE_LIMIT_BURST": str(BURST)}):
        client = aioredis.from_url(mesh.env["REDIS_URL"])
        try:
            await client.delete(limiter_key(mesh.env["AMQP_PREFIX"]))
        finally:
            await client.aclose()
        yield mesh


@pytest.fixture
async def one_slot(mesh: Mesh) -> AsyncIterator[Mesh]:
    """The executor restarted with one execution job in flight at a time."""
    async with executor_with(mesh, {"EXECUTOR_PREFETCH": "1"}):
        yield mesh


async def placed_together(mesh: Mesh, count: int) -> list[list[dict[str, Any]]]:
    """``count`` orders posted at once, each followed to its end (all confirmed); each order's history.

    The history, not the socket: a socket that joined late starts from a snapshot past `routing`."""
    async with aiohttp.ClientSession() as session:
        created = await asyncio.gather(*(post_order(session, mesh.http, ORDER) for _ in range(count)))
        assert all(status == 201 for status, _ in created)
        streams = await asyncio.gather(*(follow(session, body["websocketUrl"], timeout=60) for _, body in created))
        histories = []
        for _, body in created:
            async with session.get(f"{mesh.http}/api/orders/{body['orderId']}") as resp:
                histories.append((await resp.json())["history"])
    assert all(events[-1]["status"] == "confirmed" for events in streams), [events[-1] for events in streams]
    return histories


async def test_an_order_waiting_to_land_does_not_hold_an_execution_slot(one_slot: Mesh) -> None:
    """With one execution job at a time, the next order is quoted, signed, recorded and sent while the one before
    waits for the cluster to land it (the localnet lands 50–80 ms after the send): once sent, an order is watched
    by its executor after the job's ack. Were the slot held until the landing, each order would reach `submitted`
    only after the one before it was `confirmed`."""
    histories = await placed_together(one_slot, 4)

    def at(history: list[dict[str, Any]], status: str) -> datetime:
        (event,) = [e for e in history if e["status"] == status]
        return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))

    # In the order the one slot took them: each sent order's landing against the next order's submit.
    spans = sorted((at(h, "submitted"), at(h, "confirmed")) for h in histories)
    overlaps = [b_sent < a_landed for (_, a_landed), (b_sent, _) in itertools.pairwise(spans)]
    assert any(overlaps), spans


async def test_the_rate_limit_spaces_executions_at_its_rate(limited: Mesh) -> None:
    """Six orders at once: two start at once (the burst), the rest one every 2 s, within 10 %."""
    histories = await placed_together(limited, 6)
    # When each order started: its first `routing` event, written right after the limiter let it through.
    started = sorted(
        datetime.fromisoformat(next(e for e in events if e["status"] == "routing")["timestamp"].replace("Z", "+00:00"))
        for events in histories
    )
    gaps = [Decimal(str((b - a).total_seconds())) for a, b in itertools.pairwise(started)]
    interval = Decimal(60) / RATE_PER_MIN
    assert gaps[0] < Decimal("0.5"), gaps  # the burst: the second starts with the first
    at_limit = gaps[BURST - 1 :]
    # At the limit: the mean spacing is the interval within 10 %, and no start comes early
    # (a busy machine can only delay a start, never bring it forward).
    assert abs(cast(Decimal, sum(at_limit)) / len(at_limit) - interval) <= interval * Decimal("0.1"), gaps
    assert all(gap >= interval * Decimal("0.9") for gap in at_limit), gaps


async def _no_order_in_flight(conn: asyncpg.Connection) -> bool:
    in_flight = [s for s in states.ORDERED if s not in states.TERMINAL and s != states.WAITING]
    return await conn.fetchval("SELECT count(*) = 0 FROM orders WHERE status = ANY($1::text[])", in_flight) is True


async def test_sent_orders_are_watched_after_their_jobs_end(one_slot: Mesh) -> None:
    """With landing halted and one execution job at a time, three orders all reach `submitted`: each job ended at its
    send, and the executor watches the three land (its GetStats and its /metrics say so); once the cluster lands
    them, all three are confirmed and nothing is watched any more."""
    async with (
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(one_slot.grpc_target("executor")) as channel,
    ):
        executor = executor_pb2_grpc.ExecutorStub(channel)
        metrics_url = f"http://127.0.0.1:{one_slot.env['EXECUTOR_METRICS_PORT']}/metrics"

        async def watched() -> tuple[int, int, float]:
            stats = await executor.GetStats(executor_pb2.GetStatsRequest(), timeout=2)
            async with session.get(metrics_url) as resp:
                text = await resp.text()
            (gauge,) = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(LANDINGS_GAUGE)]
            return stats.jobs_in_flight, stats.landings_watched, gauge

        await localnet(session, one_slot, "halt")
        try:
            created = [await post_order(session, one_slot.http, ORDER) for _ in range(3)]
            assert all(status == 201 for status, _ in created), created
            ids = [body["orderId"] for _, body in created]

            async def all_submitted() -> bool:
                for order_id in ids:
                    async with session.get(f"{one_slot.http}/api/orders/{order_id}") as resp:
                        if (await resp.json())["status"] != "submitted":
                            return False
                return True

            await eventually(all_submitted, timeout=30, every=0.1)
            assert await watched() == (0, 3, 3.0), "no job held, three sent orders watched"
        finally:
            await localnet(session, one_slot, "resume")
        finals = [await follow(session, body["websocketUrl"], timeout=30) for _, body in created]
        assert [events[-1]["status"] for events in finals] == ["confirmed"] * 3, finals

        async def nothing_watched() -> bool:
            return await watched() == (0, 0, 0.0)

        await eventually(nothing_watched, timeout=10, every=0.1)
