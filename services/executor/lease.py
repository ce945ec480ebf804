"""This executor's lease in Redis (services/common/leases.py).

Renewed every third of its time to live. The executor watches an order land
after acking its job only while the lease is held: renewed less than half its
time to live ago. Otherwise (Redis unreachable) the job settles in place, as
a job that finds its order already sent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.common import grpc_server
from services.common.leases import lease_key

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, redis: aioredis.Redis | None, prefix: str, ttl_ms: int) -> None:
        self.redis = redis
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.key = lease_key(prefix, self.id)
        self.ttl_ms = ttl_ms
        self._renewed = -float("inf")
        self._task: asyncio.Task[None] | None = None

    def held(self) -> bool:
        return self.redis is not None and time.monotonic() - self._renewed < self.ttl_ms / 2000

    async def start(self) -> None:
        """Take the lease (when Redis answers: without it, jobs settle in place until a renewal takes it), then
        renew it in the background."""
        if self.redis is not None:
            await self._renew()
            self._task = asyncio.create_task(self._run(), name="executor-lease")

    async def _renew(self) -> None:
        assert self.redis is not None
        started = time.monotonic()
        try:
            await self.redis.set(self.key, "1", px=self.ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("executor lease not renewed: %s", exc)
            return
        self._renewed = started

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            await self._renew()

    async def release(self) -> None:
        """Stop renewing and drop the lease: orders takes back what this executor still watched."""
        if self._task is not None:
            await grpc_server.cancel(self._task)
            self._task = None
        self._renewed = -float("inf")
        if self.redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.delete(self.key)
