"""HTTP and WebSocket helpers a test uses like a real client would."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

SOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"


async def post_order(
    session: aiohttp.ClientSession, base: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes | str) else orjson.dumps(body)
    async with session.post(
        f"{base}/api/orders/execute", data=data, headers={"Content-Type": "application/json", **(headers or {})}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def follow(session: aiohttp.ClientSession, url: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every message of a status WebSocket until the server closes it."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout), session.ws_connect(url) as ws:
        async for msg in ws:
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                break
            # Every status message is a JSON text frame (websocat and browsers show binary ones differently).
            assert msg.type == aiohttp.WSMsgType.TEXT, f"status message sent as {msg.type.name}"
            events.append(orjson.loads(msg.data))
        assert ws.close_code == 1000, f"socket closed with {ws.close_code}"
    return events
