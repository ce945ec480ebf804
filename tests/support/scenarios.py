"""Deterministic market scenarios driven through the localnet's ``localnet_`` JSON-RPC methods."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from tests.support.mesh import Mesh


async def localnet(session: aiohttp.ClientSession, mesh: Mesh, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": f"localnet_{method}", "params": list(params)}
    async with session.post(mesh.rpc_url, json=body) as resp:
        answer = await resp.json()
    assert "error" not in answer, answer
    return answer["result"]


async def slipping_order(session: aiohttp.ClientSession, mesh: Mesh, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Follow a SOL→USDC order while the market drops 2 % under each of its sent transactions.

    Landing is halted; each time the order reaches ``submitted`` (its transaction
    signed and being sent) the SOL/USDC pools are moved down
    (``localnet_setPrice``) and landing resumes, so the transaction lands with
    the venue program's slippage error; landing halts again at the retry event,
    before the next attempt sends. Restores the price and resumes landing at the end.
    """
    events: list[dict[str, Any]] = []
    price = Decimal(150)
    await localnet(session, mesh, "halt")
    try:
        async with session.post(f"{mesh.http}/api/orders/execute", json=body) as resp:
            created = await resp.json()
            assert resp.status == 201, created
        async with session.ws_connect(created["websocketUrl"]) as ws:
            async for msg in ws:
                event = orjson.loads(msg.data)
                events.append(event)
                if event["status"] == "submitted":
                    price *= Decimal("0.98")
                    await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": str(price)})
                    await localnet(session, mesh, "resume")
                elif event["status"] == "routing" and "retryIn" in event["data"]:
                    await localnet(session, mesh, "halt")
    finally:
        await localnet(session, mesh, "resume")
        await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": "150"})
    return events
