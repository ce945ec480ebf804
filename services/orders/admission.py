"""Backpressure: refuse new orders while too many accepted ones are still live.

Accepting without bound turns overload into an ever-growing queue: an order
accepted now would start minutes later, against a market that has moved.
With ``MAX_LIVE_ORDERS`` orders pending, routing, building or submitted,
CreateOrder answers RESOURCE_EXHAUSTED (reason ``BACKLOG_FULL``; HTTP 429 with
Retry-After at the gateway) and changes nothing. A replay of an existing
Idempotency-Key is still answered with its order.

The count comes from PostgreSQL, so it is global across orders replicas; it is
re-read every ``REFRESH_S`` and counted up locally between reads, so a burst
overshoots the limit by at most what the replicas accept in one refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from services.common.errors import DomainError
from services.orders.store import OrderStore

log = logging.getLogger(__name__)
REFRESH_S = 0.25


class BacklogFull(DomainError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "BACKLOG_FULL"

    def __init__(self, live: int, limit: int) -> None:
        self.live = live
        self.limit = limit
        super().__init__(f"{live} orders are live, the limit is {limit}; retry later")


class Admission:
    def __init__(self, store: OrderStore, limit: int) -> None:
        self.store = store
        self.limit = limit  # 0 = no limit
        self.live = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.limit > 0:
            self._task = asyncio.create_task(self._run(), name="admission-refresh")

    async def refresh(self) -> None:
        self.live = await self.store.count_live()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the last count; CreateOrder reports the database itself
                log.warning("live order count failed: %s", exc)
            await asyncio.sleep(REFRESH_S)

    @property
    def full(self) -> bool:
        return self.limit > 0 and self.live >= self.limit

    def check(self) -> None:
        """Raise BacklogFull when a new order may not be accepted now."""
        if self.full:
            raise BacklogFull(self.live, self.limit)

    def accepted(self) -> None:
        self.live += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
