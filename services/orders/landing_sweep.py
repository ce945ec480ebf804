"""Taking back the sent orders of an executor that is gone.

An executor acks an order's job once its transaction is recorded and sent, and
watches it land in its process; the ``submitted`` order names it
(``execution.executor``), and it renews a lease in Redis while it runs
(services/common/leases.py). Every ``SWEEP_S`` this reads the ``submitted``
orders that name an executor and those executors' leases; an order whose
executor's lease has been missing for half a lease (longer than a renewal:
a Redis that restarted empty is not taken for dead executors) gets its job
again, through the outbox, with the executor's name cleared in the same
statement. The job's executor asks the cluster first, as for any
redelivery: a transaction that landed is confirmed, never sent twice. When
Redis does not answer, nothing is taken back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import redis.asyncio as aioredis

from services.common import grpc_server, metrics
from services.common.leases import lease_key
from services.orders.store import OrderStore

log = logging.getLogger(__name__)
SWEEP_S = 2.0


class LandingSweep:
    def __init__(self, store: OrderStore, redis: aioredis.Redis, prefix: str, lease_ms: int) -> None:
        self.store = store
        self.redis = redis
        self.prefix = prefix
        self.grace_s = lease_ms / 2000
        self.sweep_s = min(SWEEP_S, self.grace_s)
        self._missing: dict[uuid.UUID, float] = {}  # order -> when its executor's lease was first seen missing
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="landing-sweep")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("landing sweep failed: %s", exc)

    async def sweep(self) -> list[uuid.UUID]:
        """One pass; the orders whose jobs were queued again."""
        watched = await self.store.watched_landings()
        executors = sorted({executor for _, executor in watched})
        leases = await self.redis.mget([lease_key(self.prefix, e) for e in executors]) if executors else []
        alive = {executor for executor, lease in zip(executors, leases, strict=True) if lease is not None}
        now = time.monotonic()
        orphaned = [(order, executor) for order, executor in watched if executor not in alive]
        self._missing = {order: self._missing.get(order, now) for order, _ in orphaned}
        due = [(order, executor) for order, executor in orphaned if now - self._missing[order] >= self.grace_s]
        if not due:
            return []
        taken = await self.store.take_back(due)
        metrics.TAKEN_BACK.inc(len(taken))
        gone = dict(due)
        for order_id in taken:
            self._missing.pop(order_id, None)
            log.warning(
                "order taken back: the executor watching it land is gone; its job runs again",
                extra={"orderId": str(order_id), "executor": gone[order_id]},
            )
        return taken

    async def stop(self) -> None:
        if self._task is not None:
            await grpc_server.cancel(self._task)
