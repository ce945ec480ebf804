"""In-process fan-out of order events to the Watch streams of this replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

log = logging.getLogger(__name__)
WATCHER_BUFFER = 256
RESYNC: dict[str, Any] = {"resync": True}  # not an event: "re-read the order now"


class Hub:
    def __init__(self) -> None:
        self.watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self.delivered = 0

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
        for queue in self.watchers.get(event.get("orderId", ""), ()):
            try:
                queue.put_nowait(event)
                delivered += 1
            except asyncio.QueueFull:
                # A stuck watcher loses live events; its stream refetches the gap by seq.
                log.warning("watcher buffer full, event dropped for it", extra={"orderId": event.get("orderId")})
        self.delivered += delivered
        return delivered

    def resync_all(self) -> None:
        """Tell every watcher to re-read its order: events may have been lost (the broker connection dropped)."""
        for queues in self.watchers.values():
            for queue in queues:
                with contextlib.suppress(asyncio.QueueFull):  # a full buffer resyncs by seq anyway
                    queue.put_nowait(RESYNC)

    @property
    def watching(self) -> int:
        return sum(len(queues) for queues in self.watchers.values())
