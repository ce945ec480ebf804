"""In-process fan-out of order events to the Watch streams of this replica.

The hub also remembers, for the orders whose events it handed out lately, the
last seq it saw (:meth:`Hub.nothing_newer`): what lets a watch begin from an
order its caller already holds, instead of reading it, when nothing newer can
exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, defaultdict
from typing import Any

log = logging.getLogger(__name__)
WATCHER_BUFFER = 256
OWNER_BUFFER = 4096  # an owner's watcher gets every event of many orders
RESYNC: dict[str, Any] = {"resync": True}  # not an event: "re-read the order now"
EVERY_OWNER = "*"  # subscribe_owner(EVERY_OWNER): the events of every order
SEEN_ORDERS = 10_000  # orders whose last seq is remembered (the least recently moved are forgotten first)
# Clocks of the database (an order's created_at) and of this process may differ: a margin for trusting either.
CLOCK_MARGIN_S = 2.0


class Hub:
    def __init__(self) -> None:
        self.watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        # By the owning API key's id (events carry it as apiKeyId), or EVERY_OWNER.
        self.owner_watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        # order id -> (last seq seen, when): every event handed out passes here, watched or not.
        self.seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.forgotten_until = 0.0  # when the most recently seen of the forgotten orders was last seen
        # Since when every event published reaches this hub (the intake's queue bound), None while it is down.
        self.intake_since: float | None = None

    def intake_up(self) -> None:
        """The intake (re)started: every event published from now on reaches the hub."""
        self.intake_since = time.time()

    def intake_down(self) -> None:
        """The intake broke: events published from now on may never reach the hub."""
        self.intake_since = None

    def nothing_newer(self, order_id: str, seq: int, created_at: float) -> bool:
        """Whether no event of the order later than ``seq`` can have reached this hub before now (so a watcher
        subscribed now gets every later one): the hub saw none, and it would have, since every event of the order
        was published after the intake started (the order was created after it) and the hub still remembers what
        it saw then (nothing seen since the order's creation was forgotten)."""
        if self.intake_since is None or created_at <= self.intake_since + CLOCK_MARGIN_S:
            return False
        if created_at <= self.forgotten_until + CLOCK_MARGIN_S:
            return False
        last = self.seen.get(order_id)
        return last is None or last[0] <= seq

    def _saw(self, order_id: str, seq: int) -> None:
        before = self.seen.get(order_id)
        self.seen[order_id] = (max(seq, before[0]) if before else seq, time.time())  # a redelivery is not newer
        self.seen.move_to_end(order_id)
        while len(self.seen) > SEEN_ORDERS:
            _, (_, at) = self.seen.popitem(last=False)
            self.forgotten_until = at

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
        order_id = event.get("orderId", "")
        seq = event.get("seq")
        if isinstance(seq, int):
            self._saw(order_id, seq)
        targets = [*self.watchers.get(order_id, ())]
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
