"""Global rate limit across executor replicas: GCRA in Redis.

One key, updated by a Lua script using Redis' own clock, so every replica
shares the same budget (RATE_LIMIT_PER_MIN, burst RATE_LIMIT_BURST). A
limited job waits for its turn; it never fails and spends no attempt.
If Redis is unreachable the limiter lets jobs through (orders must still
execute without the cache) and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1]: the limiter key. ARGV: emission interval (µs), burst tolerance (µs).
# Returns 0 when allowed (and books the slot), else µs to wait.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"""


def limiter_key(prefix: str) -> str:
    """The budget's key: one per deployment, as its queues are (AMQP_PREFIX), so two engines sharing a
    Redis (a test run beside `make run`) never spend each other's budget."""
    return f"{prefix}ratelimit:orders"


class RateLimiter:
    def __init__(self, redis: aioredis.Redis | None, per_minute: int, burst: int, key: str = limiter_key("")) -> None:
        self.redis = redis
        self.per_minute = per_minute
        self.key = key
        self.interval_us = 60_000_000 // per_minute if per_minute > 0 else 0
        self.tolerance_us = self.interval_us * max(burst - 1, 0)
        self._script = redis.register_script(_GCRA) if redis is not None and per_minute > 0 else None

    async def acquire(self) -> None:
        """Wait until this replica may start one more order."""
        if self._script is None:
            return
        while True:
            try:
                wait_us = int(await self._script(keys=[self.key], args=[self.interval_us, self.tolerance_us]))
            except (RedisError, OSError) as exc:
                log.warning("rate limiter unavailable, letting the job through: %s", exc)
                return
            if wait_us <= 0:
                return
            await asyncio.sleep(wait_us / 1_000_000)
