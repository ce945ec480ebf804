"""Per-key submit quota: a token bucket in Redis, shared by every orders replica.

A key with a quota of N orders per minute may submit N at once, then one
every 60/N seconds (GCRA: one timestamp per key, the bucket's "theoretical
arrival time"). Over it, CreateOrder answers RESOURCE_EXHAUSTED (reason
``QUOTA_EXCEEDED``, a google.rpc.RetryInfo with the wait; HTTP 429 with
Retry-After) and creates nothing. Redis's own clock is used, so replicas
with skewed clocks agree. If Redis does not answer, the quota is not
enforced for that call (logged): an outage of the cache must not stop trading.
"""

from __future__ import annotations

import logging
import math
import uuid

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.common.errors import DomainError

log = logging.getLogger(__name__)

# KEYS[1]: the key's bucket. ARGV: emission interval (µs), bucket span (µs). Returns µs to wait (0: allowed).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - span - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
"""


class QuotaExceeded(DomainError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUOTA_EXCEEDED"

    def __init__(self, quota_per_min: int, retry_after_s: float) -> None:
        self.quota_per_min = quota_per_min
        self.retry_after_s = retry_after_s
        super().__init__(
            f"submit quota of {quota_per_min} orders per minute exceeded; retry in {math.ceil(retry_after_s)} s"
        )


class Quota:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._take = redis.register_script(_TAKE)

    async def take(self, key_id: uuid.UUID, quota_per_min: int) -> None:
        """Count one submission of the key; QuotaExceeded (and nothing counted) when over its quota."""
        interval = 60_000_000 // quota_per_min
        try:
            wait_us = int(await self._take(keys=[f"quota:{key_id}"], args=[interval, interval * quota_per_min]))
        except (RedisError, OSError) as exc:
            log.warning("quota not enforced, redis unavailable: %s", exc)
            return
        if wait_us > 0:
            raise QuotaExceeded(quota_per_min, max(wait_us / 1_000_000, 0.001))
