"""Bad input stops at the door (AUTH=off mesh): each answered with its 4xx naming the field, nothing written."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson

from tests.support.client import SOL, USDC, post_order
from tests.support.mesh import Mesh

BODY = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01"}


async def test_non_json_bodies_and_amounts_below_one_base_unit_write_nothing(mesh: Mesh) -> None:
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    try:
        before = await conn.fetchval("SELECT count(*) FROM orders")
        async with aiohttp.ClientSession() as session:
            # The body is good JSON; only its declared type is not.
            for content_type in ("text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded"):
                async with session.post(
                    f"{mesh.http}/api/orders/execute", data=orjson.dumps(BODY), headers={"Content-Type": content_type}
                ) as resp:
                    body = await resp.json()
                    assert resp.status == 415, (content_type, body)
                    assert body["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
                    assert [d["field"] for d in body["error"]["details"]] == ["Content-Type"]
            # 1e-10 SOL (9 decimals) and 5e-7 USDC (6 decimals): below one base unit.
            for token_in, token_out, amount in ((SOL, USDC, "0.0000000001"), (USDC, SOL, "0.0000005")):
                status, body = await post_order(
                    session,
                    mesh.http,
                    {"tokenIn": token_in, "tokenOut": token_out, "amountIn": amount, "slippage": 0.01},
                )
                assert status == 400, body
                assert body["error"]["details"][0]["field"] == "amountIn"
                assert "below one base unit" in body["error"]["details"][0]["issue"]
            async with session.get(f"{mesh.http}/api/orders?status=") as resp:
                assert resp.status == 400
        after = await conn.fetchval("SELECT count(*) FROM orders")
    finally:
        await conn.close()
    assert after == before


SYSTEM_PROGRAM = "11111111111111111111111111111111"
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"


async def test_a_pair_no_pool_trades_is_refused_at_the_door(mesh: Mesh) -> None:
    """Market and limit orders: the router's pool accounts say no open pool trades it; a sniper may wait for one."""
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    try:
        before = await conn.fetchval("SELECT count(*) FROM orders")
        async with aiohttp.ClientSession() as session:
            for extra in ({}, {"type": "limit", "limitPrice": "1"}):
                for token_out in (SYSTEM_PROGRAM, BONK):  # no mint at all; a mint with no SOL pool
                    status, body = await post_order(session, mesh.http, {**BODY, "tokenOut": token_out, **extra})
                    assert status == 400, body
                    assert [d["field"] for d in body["error"]["details"]] == ["tokenOut"], body
        after = await conn.fetchval("SELECT count(*) FROM orders")
    finally:
        await conn.close()
    assert after == before


async def test_a_connection_dropped_after_commit_yields_one_order(mesh: Mesh, tmp_path: Path) -> None:
    """orders commits, then its answer is lost (UNAVAILABLE): the gateway's resend replays, with or without a key."""
    marker = tmp_path / "failed-once"
    await mesh.stop_one("orders")
    await mesh.start_one("orders", {"CHAOS_FAIL_AT": "after_create_commit", "CHAOS_CRASH_MARKER": str(marker)})
    await mesh.wait_ready("orders")
    try:
        conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
        try:
            async with aiohttp.ClientSession() as session:
                for headers in ({}, {"Idempotency-Key": f"dropped-{uuid.uuid4().hex}"}):
                    marker.unlink(missing_ok=True)
                    before = await conn.fetchval("SELECT count(*) FROM orders")
                    status, body = await post_order(session, mesh.http, BODY, headers)
                    assert status == 201, body
                    assert marker.exists(), "the failure point was reached: the first answer was lost"
                    if not headers:  # the client never sees our own resend
                        assert body["status"] == "pending"
                    assert await conn.fetchval("SELECT count(*) FROM orders") == before + 1
                    assert await conn.fetchval("SELECT count(*) FROM orders WHERE id = $1::uuid", body["orderId"]) == 1
        finally:
            await conn.close()
    finally:
        await mesh.stop_one("orders")
        await mesh.start_one("orders")
        await mesh.wait_ready("orders")


async def test_websocket_url_follows_the_clients_scheme_and_host(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        _, direct = await post_order(session, mesh.http, BODY)
        _, proxied = await post_order(
            session, mesh.http, BODY, {"X-Forwarded-Proto": "https", "Host": "dex.example.com"}
        )
    assert direct["websocketUrl"] == f"{mesh.ws}/ws/orders/{direct['orderId']}"
    assert proxied["websocketUrl"] == f"wss://dex.example.com/ws/orders/{proxied['orderId']}"
