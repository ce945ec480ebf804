"""One notifier Watch stream per live order per gateway, shared by its WebSockets.

Without sharing, every WebSocket held its own gRPC stream to the notifier: 10,000
subscribers of 100 orders meant 10,000 streams, and each event was encoded,
sent, received and decoded 100 times over. A feed opens one stream per order,
encodes each event to its JSON text frame once, and hands that frame to every
subscriber's queue.

The notifier's contract carries over unchanged: a subscriber receives the
snapshot that began the feed, then every event since in seq order — those
already seen by the feed are replayed from its backlog at once, the rest
arrive live — no gaps, no duplicates. A feed ends with its order's terminal
event (subscribers close with 1000), with the stream breaking off (1013,
reconnect) or, before its first message, with the notifier's error (the HTTP
error of the upgrade request). An ended feed is forgotten, so the next
subscriber opens a fresh stream; a feed whose last subscriber leaves is
cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import grpc
import orjson

from dexengine.v1 import common_pb2, notifier_pb2, notifier_pb2_grpc
from services.common import codec, metrics, states
from services.common.errors import RpcErrorInfo, parse_rpc_error


@dataclass(frozen=True)
class FeedEnd:
    """The last item of a subscription: why there is nothing more."""

    terminal: bool  # the order reached a terminal status
    error: RpcErrorInfo | None = None  # the stream failed (before or after its first message)


CLIENT_GONE = FeedEnd(terminal=False)  # put by the WebSocket handler when its client leaves
Item = str | FeedEnd


class OrderFeed:
    def __init__(self, feeds: OrderFeeds, order_id: str) -> None:
        self.feeds = feeds
        self.order_id = order_id
        self.backlog: list[str] = []  # the snapshot and every event since, as sent
        self.subscribers: set[asyncio.Queue[Item]] = set()
        self.task = asyncio.create_task(self._run(), name=f"order-feed-{order_id}")

    def join(self) -> asyncio.Queue[Item]:
        queue: asyncio.Queue[Item] = asyncio.Queue()
        for frame in self.backlog:
            queue.put_nowait(frame)
        self.subscribers.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[Item]) -> None:
        self.subscribers.discard(queue)
        if not self.subscribers and not self.task.done():
            self.feeds.forget(self)
            self.task.cancel()

    def _publish(self, item: Item) -> None:
        for queue in self.subscribers:
            queue.put_nowait(item)

    async def _run(self) -> None:
        call = self.feeds.stub.Watch(notifier_pb2.WatchRequest(order_id=self.order_id))
        end = FeedEnd(terminal=False)
        metrics.ORDER_FEEDS.inc()
        try:
            while True:
                event = await call.read()
                if not isinstance(event, common_pb2.OrderEvent):  # grpc.aio.EOF: the stream ended
                    break
                frame = orjson.dumps(codec.event_to_view(event)).decode()
                self.backlog.append(frame)
                self._publish(frame)
                if states.from_proto(event.status) in states.TERMINAL:
                    end = FeedEnd(terminal=True)
                    break
        except grpc.aio.AioRpcError as err:
            end = FeedEnd(terminal=False, error=parse_rpc_error(err))
        except asyncio.CancelledError:
            self._publish(end)  # the gateway is shutting down: subscribers close with "reconnect"
            raise
        finally:
            metrics.ORDER_FEEDS.dec()
            call.cancel()
            self.feeds.forget(self)
        self._publish(end)


class OrderFeeds:
    """The feeds of this gateway, by order id."""

    def __init__(self, stub: notifier_pb2_grpc.NotifierAsyncStub) -> None:
        self.stub = stub
        self.feeds: dict[str, OrderFeed] = {}

    def join(self, order_id: str) -> tuple[OrderFeed, asyncio.Queue[Item]]:
        feed = self.feeds.get(order_id)
        if feed is None:
            feed = self.feeds[order_id] = OrderFeed(self, order_id)
        return feed, feed.join()

    def forget(self, feed: OrderFeed) -> None:
        if self.feeds.get(feed.order_id) is feed:
            del self.feeds[feed.order_id]

    async def close(self) -> None:
        feeds = list(self.feeds.values())
        for feed in feeds:
            feed.task.cancel()
        for feed in feeds:
            with contextlib.suppress(asyncio.CancelledError):
                await feed.task
