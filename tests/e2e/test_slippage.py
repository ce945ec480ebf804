"""A market moving against the order trips the venue's slippage check for real.

The router is restarted with a strong downward trend in the SOL price, so by
the time a transaction lands (tens of milliseconds after its quote) arbitrage
has pulled the pools below the quote's minimum out. Every attempt fails with
the venue's own slippage error, each retry re-quotes against the moved market,
and the order ends failed after the last attempt — through RabbitMQ's wait
queues and back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest

from tests.support.client import SOL, USDC, follow, post_order
from tests.support.mesh import Mesh

SLIPPAGE_CODES = ("RAYDIUM_CPMM_EXCEEDED_SLIPPAGE_0x1775", "METEORA_EXCEEDED_AMOUNT_SLIPPAGE_TOLERANCE_0x1773")


@pytest.fixture
async def falling_market(mesh: Mesh) -> AsyncIterator[Mesh]:
    await mesh.stop_one("router")
    await mesh.start_one("router", {"MARKET_DRIFT": "true", "MARKET_TREND_BPS_PER_S": "-2000"})
    await mesh.wait_ready("router")
    try:
        yield mesh
    finally:
        await mesh.stop_one("router")
        await mesh.start_one("router")
        await mesh.wait_ready("router")


async def test_slippage_fails_the_swap_and_each_retry_requotes(falling_market: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await post_order(
            session, falling_market.http, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.005"}
        )
        assert status == 201, body
        events = await follow(session, body["websocketUrl"])
        async with session.get(f"{falling_market.http}/api/orders/{body['orderId']}") as resp:
            order = await resp.json()

    assert events[-1]["status"] == "failed", [e["status"] for e in events]
    history = order["history"]  # every event, whenever the socket joined
    assert history[-1] == events[-1]
    final = history[-1]
    assert final["data"]["code"] in SLIPPAGE_CODES
    assert final["data"]["attempt"] == 3 and final["data"]["retryable"] is False
    retries = [e for e in history if e["status"] == "routing" and "retryIn" in e["data"]]
    assert [r["data"]["attempt"] for r in retries] == [2, 3]
    assert all(r["data"]["code"] in SLIPPAGE_CODES for r in retries)
    assert [r["data"]["retryIn"] for r in retries] == ["0.2s", "0.4s"]
    # Each attempt quoted afresh against a market that kept falling.
    quoted = [Decimal(e["data"]["amountOut"]) for e in history if e["status"] == "building"]
    assert len(quoted) == 3
    assert quoted[0] > quoted[1] > quoted[2]
    assert order["status"] == "failed" and order["retryCount"] == 2
    assert order["errorMessage"].split(":")[0] in SLIPPAGE_CODES
