"""Limit and sniper orders and cancel, end to end on the localnet (real processes), driven by localnet_ methods."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from tests.support.client import SOL, USDC, follow, post_order
from tests.support.mesh import Mesh
from tests.support.scenarios import localnet
from tests.support.waiting import eventually


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def _get(session: aiohttp.ClientSession, mesh: Mesh, order_id: str) -> dict[str, Any]:
    async with session.get(f"{mesh.http}/api/orders/{order_id}") as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def _status_is(session: aiohttp.ClientSession, mesh: Mesh, order_id: str, status: str) -> bool:
    return (await _get(session, mesh, order_id))["status"] == status


async def _first(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.ws_connect(url) as ws:
        msg = await ws.receive(timeout=5)
        return dict(orjson.loads(msg.data))


async def test_limit_above_the_market_waits_then_confirms_at_or_above_its_price(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        body = {
            "tokenIn": SOL,
            "tokenOut": USDC,
            "amountIn": "1",
            "slippage": "0.01",
            "type": "limit",
            "limitPrice": "151.20",
            "expiresAt": _in(600),
        }
        status, created = await post_order(session, mesh.http, body)
        assert status == 201, created
        first = await _first(session, created["websocketUrl"])
        assert first["status"] == "waiting" and first["seq"] == 2, first
        assert first["data"]["order"]["limitPrice"] == "151.2" and first["data"]["order"]["expiresAt"]
        await asyncio.sleep(1.0)
        order = await _get(session, mesh, created["orderId"])
        assert order["status"] == "waiting", "the market (150) is below the limit: nothing fires"
        assert [e["status"] for e in order["history"]] == ["pending", "waiting"]
        watch = asyncio.create_task(follow(session, created["websocketUrl"]))
        try:
            await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": "155"})
            events = await watch
        finally:
            await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": "150"})
    statuses = [e["status"] for e in events]
    assert statuses == ["waiting", "routing", "building", "submitted", "confirmed"], statuses
    triggered = events[1]["data"]["triggered"]
    assert triggered["kind"] == "limit" and Decimal(triggered["price"]) >= Decimal("151.20")
    assert Decimal(events[-1]["data"]["executedPrice"]) >= Decimal("151.20")
    # The transaction's minimum out was never below amountIn x limitPrice (the chain enforces it).
    assert Decimal(events[3]["data"]["minAmountOut"]) >= Decimal("151.20")


async def test_limit_below_the_market_fires_at_once(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01", "type": "limit"}
        status, created = await post_order(session, mesh.http, {**body, "limitPrice": "140"})
        assert status == 201, created
        events = await follow(session, created["websocketUrl"])
    assert events[-1]["status"] == "confirmed", events
    assert Decimal(events[-1]["data"]["executedPrice"]) >= 140


async def test_limit_that_never_reaches_its_price_expires_on_time(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        expires = datetime.now(UTC) + timedelta(seconds=2)
        body = {
            "tokenIn": SOL,
            "tokenOut": USDC,
            "amountIn": "1",
            "slippage": "0.01",
            "type": "limit",
            "limitPrice": "500",
            "expiresAt": expires.isoformat().replace("+00:00", "Z"),
        }
        status, created = await post_order(session, mesh.http, body)
        assert status == 201, created
        events = await follow(session, created["websocketUrl"], timeout=10)
        await eventually(lambda: _status_is(session, mesh, created["orderId"], "expired"))
        order = await _get(session, mesh, created["orderId"])
    assert [e["status"] for e in events] == ["waiting", "expired"], events
    expired_at = datetime.fromisoformat(events[-1]["timestamp"].replace("Z", "+00:00"))
    late = (expired_at - expires).total_seconds()
    assert 0 <= late < 0.5, f"expired {late:.3f}s after expiresAt"
    assert order["status"] == "expired" and order["completedAt"] and order["txHash"] is None


async def test_cancel_a_waiting_order_then_409(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01", "type": "limit"}
        status, created = await post_order(session, mesh.http, {**body, "limitPrice": "999"})
        assert status == 201
        watch = asyncio.create_task(follow(session, created["websocketUrl"], timeout=10))
        url = f"{mesh.http}/api/orders/{created['orderId']}/cancel"
        async with session.post(url) as resp:
            assert resp.status == 200
            cancelled = await resp.json()
        assert cancelled["status"] == "cancelled" and cancelled["orderId"] == created["orderId"]
        events = await watch
        assert [e["status"] for e in events][-1] == "cancelled", "the socket ends normally after cancelled"
        async with session.post(url) as resp:
            assert resp.status == 409
            again = await resp.json()
        assert again["error"]["code"] == "NOT_CANCELLABLE" and again["error"]["status"] == "cancelled"
        # A market order once routing or later: 409 naming its status.
        status, market = await post_order(
            session, mesh.http, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01"}
        )
        done = await follow(session, market["websocketUrl"])
        assert done[-1]["status"] == "confirmed"
        async with session.post(f"{mesh.http}/api/orders/{market['orderId']}/cancel") as resp:
            assert resp.status == 409
            assert (await resp.json())["error"]["status"] == "confirmed"


async def test_bad_limit_and_sniper_bodies_name_their_field_and_write_nothing(mesh: Mesh) -> None:
    base = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01"}
    cases = [
        ({"type": "limit"}, "limitPrice"),
        ({"type": "limit", "limitPrice": "-3"}, "limitPrice"),
        ({"type": "limit", "limitPrice": "150", "expiresAt": "yesterday"}, "expiresAt"),
        ({"type": "limit", "limitPrice": "150", "expiresAt": _in(-60)}, "expiresAt"),
        ({"type": "limit", "limitPrice": "150", "expiresAt": _in(40 * 86400)}, "expiresAt"),
        ({"type": "sniper"}, "minLiquidity"),
        ({"type": "market", "limitPrice": "150"}, "limitPrice"),
    ]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{mesh.http}/api/orders?limit=200") as resp:
            before = len((await resp.json())["orders"])
        for extra, field in cases:
            status, body = await post_order(session, mesh.http, {**base, **extra})
            assert status == 400, (extra, body)
            assert field in [d["field"] for d in body["error"]["details"]], (extra, body)
        async with session.get(f"{mesh.http}/api/orders?limit=200") as resp:
            assert len((await resp.json())["orders"]) == before


async def test_sniper_lands_within_two_slots_of_its_pool_opening_and_ignores_a_thin_pool(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        mint = (await localnet(session, mesh, "createMint", {"decimals": 6, "symbol": "NEWT"}))["mint"]
        body = {
            "tokenIn": USDC,
            "tokenOut": mint,
            "amountIn": "10",
            "slippage": "0.05",
            "type": "sniper",
            "minLiquidity": "5000",
            "expiresAt": _in(120),
        }
        status, created = await post_order(session, mesh.http, body)
        assert status == 201, created
        # A thin pool (1,000 USDC) opens now: below minLiquidity, nothing fires.
        await localnet(
            session,
            mesh,
            "createPool",
            {"venue": "raydium", "mints": [mint, "USDC"], "price": "2", "liquidity": "1000", "feePpm": 10000},
        )
        await asyncio.sleep(1.5)
        assert (await _get(session, mesh, created["orderId"]))["status"] == "waiting"
        # A deep pool (50,000 USDC) that opens 3 s from now: the sniper buys in its first slots.
        open_time = int(time.time()) + 3
        pool = await localnet(
            session,
            mesh,
            "createPool",
            {"venue": "raydium", "mints": [mint, "USDC"], "price": "2", "liquidity": "50000", "openTime": open_time},
        )
        events = await follow(session, created["websocketUrl"], timeout=30)
        order = await _get(session, mesh, created["orderId"])
        assert events[-1]["status"] == "confirmed", events
        routing = next(e for e in events if e["status"] == "routing")
        assert routing["data"]["triggered"]["pool"] == pool["pool"]
        assert [e["status"] for e in events].count("routing") == 1, "no retry: the first attempt landed"
        ledger = await localnet(session, mesh, "ledger", {"memo": created["orderId"]})
    assert len(ledger) == 1 and ledger[0]["err"] is None, f"one transaction, landed on its first attempt: {ledger}"
    assert ledger[0]["signature"] == order["txHash"]
    assert ledger[0]["blockTime"] >= open_time, "the chain's clock had reached the pool's open time"
    # The pool opens in the first slot stamped >= openTime (it begins within one slot of openTime); the swap
    # lands within two slots of that: confirmed at most 0.4 + 0.8 s after openTime.
    confirmed_at = datetime.fromisoformat(events[-1]["timestamp"].replace("Z", "+00:00")).timestamp()
    assert confirmed_at - open_time <= 1.2, f"confirmed {confirmed_at - open_time:.3f}s after the pool's openTime"
