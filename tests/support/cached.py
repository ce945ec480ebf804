"""Reading the orders service's Redis cache in tests."""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis


async def cached_view(redis: aioredis.Redis, key: str) -> dict[str, Any]:
    """The order view cached under ``key`` (``order:{id}:status``); the test fails if there is none."""
    raw = await redis.get(key)
    assert raw is not None, f"no cache entry at {key}"
    view: dict[str, Any] = orjson.loads(raw)
    return view
