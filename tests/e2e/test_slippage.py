"""A market moving against the order trips the venue program's slippage check on chain.

Driven deterministically through the localnet's scenario methods: landing is
halted, and each time the order's transaction has been sent (``submitted``)
the SOL/USDC pools are moved 2 % down (``localnet_setPrice``) before landing
resumes. The transaction lands with the venue program's own error (minimum
out not met), each retry re-quotes against the moved pools, and the order
ends failed after the last attempt — through RabbitMQ's wait queues and back.
"""

from __future__ import annotations

from decimal import Decimal

import aiohttp

from tests.support.client import SOL, USDC
from tests.support.mesh import Mesh
from tests.support.scenarios import slipping_order

SLIPPAGE_CODES = ("RAYDIUM_CPMM_EXCEEDED_SLIPPAGE_0x1775", "METEORA_EXCEEDED_AMOUNT_SLIPPAGE_TOLERANCE_0x1773")


async def test_slippage_fails_the_swap_and_each_retry_requotes(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        events = await slipping_order(
            session, mesh, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.005"}
        )
        async with session.get(f"{mesh.http}/api/orders/{events[0]['orderId']}") as resp:
            order = await resp.json()

    assert events[-1]["status"] == "failed", [e["status"] for e in events]
    history = order["history"]  # every event, whenever the socket joined
    assert history[-1] == events[-1]
    final = history[-1]
    assert final["data"]["code"] in SLIPPAGE_CODES
    assert final["data"]["attempt"] == 3
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
