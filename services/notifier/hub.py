"""In-process fan-out of order events to the Watch streams of this replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

log = logging.getLogger(__name__)
WATCHER_BUFFER = 256
OWNER_BUFFER = 4096  # an owner's watcher gets every event of many orders
RESYNC: dict[str, Any] = {"resync": True}  # not an event: "re-read the order now"
EVERY_OWNER = "*"  # subscribe_owner(EVERY_OWNER): the events of every order


class Hub:
    def __init__(self) -> None:
        self.watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        # By the owning API key's id (events carry it as apiKeyId), or EVERY_OWNER.
        self.owner_watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def subscribe_owner(self, owner: str) -> asyncio.Queue[dict[str, Any]]:
        """Every later event of the orders of ``owner`` (an API key id, or EVERY_OWNER)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(OWNER_BUFFER)
        self.owner_watchers[owner].add(queue)
        return queue

    def unsubscribe_owner(self, owner: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        queues = self.owner_watchers.get(owner)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self.owner_watchers[owner]

    def subscribe(self, order_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(WATCHER_BUFFER)
        self.watchers[order_id].add(queue)
        return queue

    def unsubscribe(self, order_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        queues = self.watchers.get(order_id)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self.watchers[order_id]

    def publish(self, event: dict[str, Any]) -> int:
        """Hand the event to every watcher of its order; return how many got it."""
        delivered = 0
        targets = [*self.watchers.get(event.get("orderId", ""), ())]
        if self.owner_watchers:
            targets.extend(self.owner_watchers.get(EVERY_OWNER, ()))
            owner = event.get("apiKeyId")
            if owner:
                targets.extend(self.owner_watchers.get(owner, ()))
        for queue in targets:
            try:
                queue.put_nowait(event)
                delivered += 1
            except asyncio.QueueFull:
                # A stuck watcher loses live events; its stream refetches the gap by seq.
                log.warning("watcher buffer full, event dropped for it", extra={"orderId": event.get("orderId")})
        return delivered

    def resync_all(self) -> None:
        """Tell every watcher to re-read its order: events may have been lost (the broker connection dropped)."""
        for queues in (*self.watchers.values(), *self.owner_watchers.values()):
            for queue in queues:
                with contextlib.suppress(asyncio.QueueFull):  # a full buffer resyncs by seq anyway
                    queue.put_nowait(RESYNC)
