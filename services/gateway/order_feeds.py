"""One feed per live order per gateway, shared by its WebSockets; one notifier stream for every feed.

Without sharing, every WebSocket held its own gRPC stream to the notifier: 10,000
subscribers of 100 orders meant 10,000 streams, and each event was encoded,
sent, received and decoded 100 times over. A feed follows its order once,
encodes each event to its JSON text frame once, and hands that frame to every
subscriber's queue. The feeds are subscriptions on one notifier ``WatchMany``
stream (:class:`NotifierStream`), so a newly watched order costs a message on
an open stream instead of opening a gRPC call of its own.

The notifier's contract carries over unchanged: a subscriber receives the
snapshot that began the feed, then every event since in seq order — those
already seen by the feed are replayed from its backlog at once, the rest
arrive live — no gaps, no duplicates. A feed ends with its order's terminal
event (subscribers close with 1000), with the stream breaking off (1013,
reconnect) or, before its first message, with the notifier's error (the HTTP
error of the upgrade request). An ended feed is forgotten, so the next
subscriber starts a fresh subscription; a feed whose last subscriber leaves is
cancelled and its subscription stopped. When the shared stream breaks off
(a notifier restart), every feed on it ends as its own stream would have;
the next feed opens a new one.

A WebSocket for an order usually follows its POST within moments, so the
gateway keeps each order it created for ``KNOWN_FOR_S`` (:meth:`OrderFeeds.
remember`) and hands it to the feed's subscription as ``known``: the notifier
starts from it instead of reading the order, when nothing newer can exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import orjson
from google.rpc import status_pb2

from dexengine.v1 import common_pb2, notifier_pb2, notifier_pb2_grpc
from services.common import codec, metrics, states
from services.common.errors import RpcErrorInfo, parse_rpc_error, parse_status
from services.common.grpc_server import MAX_CONNECTION_AGE_MS
from services.common.mesh_calls import WATCH_MANY_MORE


@dataclass(frozen=True)
class FeedEnd:
    """The last item of a subscription: why there is nothing more."""

    terminal: bool  # the order reached a terminal status
    error: RpcErrorInfo | None = None  # the stream failed (before or after its first message)


CLIENT_GONE = FeedEnd(terminal=False)  # put by the WebSocket handler when its client leaves
Item = str | FeedEnd


KNOWN_FOR_S = 10.0  # how long a created order is kept for the first feed of it
KNOWN_MAX = 10_000  # created orders kept at most (the oldest go first)


class OrderFeed:
    def __init__(self, feeds: OrderFeeds, order_id: str, known: common_pb2.Order | None = None) -> None:
        self.feeds = feeds
        self.order_id = order_id
        self.backlog: list[str] = []  # the snapshot and every event since, as sent
        self.subscribers: set[asyncio.Queue[Item]] = set()
        self.task = asyncio.create_task(self._run(known), name=f"order-feed-{order_id}")

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

    async def _run(self, known: common_pb2.Order | None) -> None:
        stream = self.feeds.stream()
        ref, inbox = stream.subscribe(self.order_id, known)
        end: FeedEnd | None = None  # set when the notifier ended the subscription (or the stream)
        metrics.ORDER_FEEDS.inc()
        try:
            end = await self._follow(inbox)
        except asyncio.CancelledError:
            self._publish(FeedEnd(terminal=False))  # the gateway is shutting down: subscribers close with "reconnect"
            raise
        finally:
            metrics.ORDER_FEEDS.dec()
            stream.release(ref, stop=end is None)
            self.feeds.forget(self)
        self._publish(end)

    async def _follow(self, inbox: asyncio.Queue[Message | FeedEnd]) -> FeedEnd:
        """Publish the subscription's events as frames; return how it ended."""
        while not isinstance(item := await inbox.get(), FeedEnd):
            if item.WhichOneof("item") == "refused":
                return FeedEnd(terminal=False, error=parse_status(status_pb2.Status.FromString(item.refused)))
            frame = orjson.dumps(codec.event_to_view(item.event)).decode()
            self.backlog.append(frame)
            self._publish(frame)
            if states.from_proto(item.event.status) in states.TERMINAL:
                return FeedEnd(terminal=True)
        return item  # the shared stream ended


Message = notifier_pb2.WatchManyMessage
# Half the servers' connection age: every connection the channel opens gets new feeds for a while.
ROTATE_AFTER_S = MAX_CONNECTION_AGE_MS / 2 / 1000


class NotifierStream:
    """One ``WatchMany`` call: the subscriptions of feeds, by ref, and the messages it brings for each.

    Opened when the first feed subscribes; when it ends, every subscription's inbox gets a FeedEnd (with the
    call's error, if any) and the gateway opens a new one for the next feed. After ``ROTATE_AFTER_S`` new
    feeds go to a new call, which takes the channel's current connection (the notifier recycles connections
    so that new replicas get a share); the old one serves its feeds to their end, then closes."""

    def __init__(self, stub: notifier_pb2_grpc.NotifierAsyncStub) -> None:
        self.inboxes: dict[int, asyncio.Queue[Message | FeedEnd]] = {}
        self.requests: asyncio.Queue[notifier_pb2.WatchManyRequest | None] = asyncio.Queue()  # None: the call ended
        self.refs = itertools.count(1)
        self.opened = time.monotonic()
        self.retired = False
        self.batching = False  # the notifier said it reads WatchManyRequest.more (initial metadata)
        # A context of its own: the call outlives the request that happened to open it (its trace, its log fields).
        self.task = asyncio.create_task(self._run(stub), name="notifier-watch-many", context=contextvars.Context())

    def fresh(self) -> bool:
        return not self.task.done() and time.monotonic() - self.opened < ROTATE_AFTER_S

    def retire(self) -> None:
        """No new subscriptions: close once the last one is released."""
        self.retired = True
        if not self.inboxes:
            self.task.cancel()

    def subscribe(
        self, order_id: str, known: common_pb2.Order | None = None
    ) -> tuple[int, asyncio.Queue[Message | FeedEnd]]:
        ref = next(self.refs)
        inbox: asyncio.Queue[Message | FeedEnd] = asyncio.Queue()
        self.inboxes[ref] = inbox
        self.requests.put_nowait(notifier_pb2.WatchManyRequest(ref=ref, order_id=order_id, known=known))
        return ref, inbox

    def release(self, ref: int, *, stop: bool) -> None:
        """The feed is done with ``ref``; ``stop`` it at the notifier when it has not ended there."""
        if self.inboxes.pop(ref, None) is not None and stop and not self.task.done():
            self.requests.put_nowait(notifier_pb2.WatchManyRequest(ref=ref, stop=True))
        if self.retired and not self.inboxes:
            self.task.cancel()

    async def _outgoing(self) -> AsyncIterator[notifier_pb2.WatchManyRequest]:
        """The requests, one per message until the notifier said it reads ``more``; then every request ready
        when a message is sent, in one (one stream write, where under load a write per request queued)."""
        while (request := await self.requests.get()) is not None:
            if not self.batching or self.requests.empty():
                yield request
                continue
            carrier = notifier_pb2.WatchManyRequest()
            carrier.more.append(request)
            ended = False
            while not self.requests.empty():
                if (ready := self.requests.get_nowait()) is None:
                    ended = True
                    break
                carrier.more.append(ready)
            yield carrier
            if ended:
                return

    async def _run(self, stub: notifier_pb2_grpc.NotifierAsyncStub) -> None:
        call = stub.WatchMany(self._outgoing())
        end = FeedEnd(terminal=False)
        try:
            metadata = await call.initial_metadata()
            self.batching = metadata is not None and metadata.get(WATCH_MANY_MORE) == "1"
            async for batch in call:
                for message in batch.messages:
                    inbox = self.inboxes.get(message.ref)
                    if inbox is not None:
                        inbox.put_nowait(message)
        except grpc.aio.AioRpcError as err:
            end = FeedEnd(terminal=False, error=parse_rpc_error(err))
        finally:
            # End the request iterator too: grpc cancels its reader only for a call still running, so a call that
            # ended on its own would leave that task waiting inside ``_outgoing`` for good.
            self.requests.put_nowait(None)
            call.cancel()
            for inbox in self.inboxes.values():
                inbox.put_nowait(end)
            self.inboxes.clear()


class OrderFeeds:
    """The feeds of this gateway, by order id."""

    def __init__(self, stub: notifier_pb2_grpc.NotifierAsyncStub) -> None:
        self.stub = stub
        self.feeds: dict[str, OrderFeed] = {}
        self._stream: NotifierStream | None = None
        self._known: OrderedDict[str, tuple[float, common_pb2.Order]] = OrderedDict()  # id -> (kept at, order)

    def remember(self, order: common_pb2.Order) -> None:
        """An order this gateway just created: the first feed of it within KNOWN_FOR_S starts from it."""
        now = time.monotonic()
        self._known[order.id] = (now, order)
        while self._known:
            kept_at, _ = next(iter(self._known.values()))
            if len(self._known) <= KNOWN_MAX and now - kept_at < KNOWN_FOR_S:
                break
            self._known.popitem(last=False)

    def _take_known(self, order_id: str) -> common_pb2.Order | None:
        kept = self._known.pop(order_id, None)
        if kept is None or time.monotonic() - kept[0] >= KNOWN_FOR_S:
            return None
        return kept[1]

    def stream(self) -> NotifierStream:
        """The open WatchMany stream, opened anew when there is none or the last one ended."""
        if self._stream is None or not self._stream.fresh():
            if self._stream is not None:
                self._stream.retire()
            self._stream = NotifierStream(self.stub)
        return self._stream

    def join(self, order_id: str) -> tuple[OrderFeed, asyncio.Queue[Item]]:
        feed = self.feeds.get(order_id)
        if feed is None:
            feed = self.feeds[order_id] = OrderFeed(self, order_id, self._take_known(order_id))
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
        if self._stream is not None:
            self._stream.retire()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream.task
