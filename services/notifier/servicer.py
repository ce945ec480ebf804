"""Watch: snapshot first, then every later event in seq order, no gaps, no duplicates.

The watcher subscribes to the hub *before* reading the snapshot, so an event
committed while the snapshot is read is either in the snapshot (seq <= the
snapshot's, dropped as a duplicate) or buffered (seq > it, delivered). A gap
in seq (an event that never reached this replica) is filled from the order's
history in orders; so is a quiet period, in case the broker lost events.

A WatchMany subscription may carry the order as its caller holds it
(``known``: a gateway keeps the orders it just created); that is the snapshot,
with no read, when the hub can tell that nothing newer reached it
(:meth:`Hub.nothing_newer`). Later events then come through the hub as after
a read; a gap or a quiet period is repaired the same way.

Reads of one order's history are shared: a watcher joins a read of the same
order that started after it subscribed (so it cannot miss an event), instead
of sending its own. 10,000 watchers of 100 orders cost about 100 reads, not
10,000, and the quiet-period check (jittered, ~30 s) does not become a storm.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from dexengine.v1 import common_pb2, notifier_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc
from services.common import auth, codec, metrics, states
from services.common.auth import AuthSettings
from services.common.errors import (
    DomainError,
    FieldViolation,
    RpcErrorInfo,
    UpstreamError,
    ValidationFailed,
    abort,
    answering,
    parse_rpc_error,
    status_message,
    status_of,
)
from services.common.mesh_calls import WATCH_MANY_MORE, OrdersCalls
from services.common.validation import validate_order_id
from services.notifier.hub import EVERY_OWNER, RESYNC, Hub

log = logging.getLogger(__name__)
RESYNC_AFTER_S = 30.0  # a backstop: gaps are repaired as soon as a later event arrives
HistoryResult = tuple[dict[str, Any], list[dict[str, Any]]]
MAX_SNAPSHOTS = 10_000  # live orders snapshotted when a WatchMine stream opens (MAX_LIVE_ORDERS' default)
FINISHED_MEMORY = 10_000  # finished orders a WatchMine stream remembers, to drop their late duplicates


class ApiKeyMissing(DomainError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    reason = "API_KEY_MISSING"

    def __init__(self) -> None:
        message = "an API key is required: send 'authorization: Bearer <key>'"
        self.violations = (FieldViolation("authorization", message),)
        super().__init__(message)


def snapshot_event(order: dict[str, Any]) -> dict[str, Any]:
    """The current state as the first message of a stream."""
    return {
        "orderId": order["orderId"],
        "status": order["status"],
        "seq": order["seq"],
        "timestamp": order["updatedAt"],
        "data": {"snapshot": True, "order": order},
    }


class NotifierServicer(notifier_pb2_grpc.NotifierServicer):
    def __init__(
        self,
        hub: Hub,
        orders: orders_pb2_grpc.OrdersAsyncStub,
        calls: OrdersCalls,
        auth_settings: AuthSettings | None = None,
    ) -> None:
        self.hub = hub
        self.orders = orders
        self.reads = calls  # GetOrder, the call of every watched order, on one Calls stream
        self.auth = auth_settings or AuthSettings()
        self._reads: dict[str, tuple[float, asyncio.Future[HistoryResult]]] = {}

    def _authorization(self, context: grpc.aio.ServicerContext) -> str | None:
        """The client's own ``authorization`` value (to forward to orders), or None for a service of the mesh.

        With AUTH=off every caller is the anonymous one (None). ApiKeyMissing when a client presents nothing.
        """
        if not self.auth.enabled:
            return None
        metadata = context.invocation_metadata()
        value = auth.metadata_value(metadata, auth.AUTHORIZATION)
        if value is not None:
            return value
        if self.auth.is_internal(auth.metadata_value(metadata, auth.INTERNAL)):
            return None
        raise ApiKeyMissing

    async def _orders_call(self, call: Any) -> Any:
        """Orders' answer to a question about the caller; its refusal is passed on as it came."""
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            raise UpstreamError(parse_rpc_error(err)) from None

    async def _history(self, order_id: str, since: float) -> HistoryResult:
        """The order and its events as read at some moment after ``since`` (shared between watchers)."""
        current = self._reads.get(order_id)
        if current is None or current[0] < since:
            started = time.monotonic()
            future = asyncio.ensure_future(self._read(order_id))
            current = (started, future)
            self._reads[order_id] = current
            future.add_done_callback(lambda _: self._forget(order_id, future))
        return await asyncio.shield(current[1])

    def _forget(self, order_id: str, future: asyncio.Future[HistoryResult]) -> None:
        if self._reads.get(order_id, (0.0, None))[1] is future:
            del self._reads[order_id]
        if not future.cancelled():
            future.exception()  # retrieved: a failed shared read is reported to each waiter, not to the loop

    async def _read(self, order_id: str) -> HistoryResult:
        resp = await self.reads.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, include_events=True), timeout=5)
        return codec.order_to_view(resp.order), [codec.event_to_view(e) for e in resp.events]

    async def Watch(
        self, request: notifier_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.OrderEvent]:
        async with answering(context):
            order_id = str(validate_order_id(request.order_id))
            authorization = self._authorization(context)
            if authorization is not None:  # a client: orders says whether the key may see the order
                await self._orders_call(
                    self.reads.GetOrder(
                        orders_pb2.GetOrderRequest(order_id=order_id), timeout=5, metadata=auth.forwarded(authorization)
                    )
                )
        async with answering(context):
            async for event in self._watch(order_id):
                yield event

    def _current(self, order_id: str, known: common_pb2.Order | None) -> dict[str, Any] | None:
        """``known`` as the snapshot when nothing newer can have reached this replica (Hub.nothing_newer), else
        None (read the order). Called right after subscribing, with no await between."""
        if known is None:
            return None
        if known.id != order_id:
            raise ValidationFailed([FieldViolation("known.id", "must be the subscription's order_id")])
        if not known.HasField("created_at"):
            return None
        created_at = known.created_at.seconds + known.created_at.nanos / 1e9
        if not self.hub.nothing_newer(order_id, known.seq, created_at):
            return None
        return codec.order_to_view(known)

    async def _watch(
        self, order_id: str, known: common_pb2.Order | None = None
    ) -> AsyncIterator[common_pb2.OrderEvent]:
        """One order's stream: its snapshot, then every later event in seq order, up to a terminal one.

        ``known``: the order as the caller holds it, the snapshot if nothing newer can exist (see _current).
        Raises UpstreamError when the snapshot cannot be read (NOT_FOUND for an unknown order)."""
        subscribed = time.monotonic()
        queue = self.hub.subscribe(order_id)
        metrics.WATCHERS.inc()
        try:
            order = self._current(order_id, known)
            metrics.SNAPSHOTS.labels("read" if order is None else "known").inc()
            if order is None:
                try:
                    order, _ = await self._history(order_id, subscribed)
                except grpc.aio.AioRpcError as err:
                    raise UpstreamError(parse_rpc_error(err)) from None
            yield codec.event_from_view(snapshot_event(order))
            last = order["seq"]
            if order["status"] in states.TERMINAL:
                return
            while True:
                event = await _next_or_none(queue)
                checked = time.monotonic()
                if event is RESYNC:
                    event = None
                if event is not None and event["seq"] <= last:
                    continue
                if event is None or event["seq"] > last + 1:
                    try:
                        _, history = await self._history(order_id, checked)
                    except grpc.aio.AioRpcError as err:
                        # orders unreachable for now: keep the stream, try again on the next event or timeout
                        log.warning("resync failed, will retry: %s", err.details(), extra={"orderId": order_id})
                        continue
                    missing = [e for e in history if e["seq"] > last]
                else:
                    missing = [event]
                for item in missing:
                    yield codec.event_from_view(item)
                    last = item["seq"]
                    if item["status"] in states.TERMINAL:
                        return
        finally:
            metrics.WATCHERS.dec()
            self.hub.unsubscribe(order_id, queue)

    async def WatchMany(
        self, request_iterator: AsyncIterator[notifier_pb2.WatchManyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[notifier_pb2.WatchManyBatch]:
        """Many orders' Watch streams over one stream, each tagged with the caller's ref (see notifier.proto)."""
        async with answering(context):
            if self._authorization(context) is not None:
                raise ServicesOnly
        # Its requests may carry more requests (WatchManyRequest.more): the caller learns it here.
        await context.send_initial_metadata(((WATCH_MANY_MORE, "1"),))
        stream = _ManyWatches(self._watch)
        reader = asyncio.create_task(stream.read_requests(request_iterator))
        try:
            while (batch := await stream.next_batch()) is not None:
                yield batch
        finally:
            reader.cancel()
            stream.stop_all()

    async def _owner(self, authorization: str | None) -> str:
        """Whose orders a WatchMine stream follows: the key's id, or EVERY_OWNER (AUTH=off, or a service)."""
        if authorization is None:
            return EVERY_OWNER
        who = await self._orders_call(
            self.orders.WhoAmI(orders_pb2.WhoAmIRequest(), timeout=5, metadata=auth.forwarded(authorization))
        )
        return str(who.key.id) if who.kind == "key" else EVERY_OWNER

    async def _live_orders(self, authorization: str | None) -> list[dict[str, Any]]:
        """The caller's live orders (as orders scopes them for its key), oldest first."""
        orders: list[dict[str, Any]] = []
        cursor = ""
        while len(orders) < MAX_SNAPSHOTS:
            page = await self.orders.ListOrders(
                orders_pb2.ListOrdersRequest(live=True, limit=200, cursor=cursor),
                timeout=5,
                metadata=auth.forwarded(authorization),
            )
            orders.extend(codec.order_to_view(o) for o in page.orders)
            cursor = page.next_cursor
            if not cursor:
                break
        return orders[::-1]

    async def WatchMine(
        self, request: notifier_pb2.WatchMineRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.OrderEvent]:
        async with answering(context):
            authorization = self._authorization(context)
            owner = await self._owner(authorization)
        queue = self.hub.subscribe_owner(owner)
        metrics.WATCHERS.inc()
        follower = _Follower()
        try:
            try:
                live = await self._live_orders(authorization)  # read after subscribing: nothing falls between
            except grpc.aio.AioRpcError as err:
                await abort(context, parse_rpc_error(err))
            # Live: an order created from now on was not in that read, so it begins with its pending event.
            await context.send_initial_metadata(())
            for order in live:
                for event in follower.snapshot(order):
                    yield codec.event_from_view(event)
            while True:
                item = await _next_or_none(queue) or RESYNC
                checked = time.monotonic()
                try:
                    if item is RESYNC:
                        events = await self._resync_mine(follower, authorization, checked)
                    else:
                        events = await self._follow(follower, item, checked)
                except grpc.aio.AioRpcError as err:
                    log.warning("WatchMine resync failed, will retry: %s", err.details())
                    continue
                for event in events:
                    yield codec.event_from_view(event)
        finally:
            metrics.WATCHERS.dec()
            self.hub.unsubscribe_owner(owner, queue)

    async def _follow(self, follower: _Follower, event: dict[str, Any], checked: float) -> list[dict[str, Any]]:
        """What one live event means for the stream: itself, nothing (a duplicate), or a repair from history."""
        order_id = event["orderId"]
        if follower.seen(order_id, event["seq"]):
            return []
        last = follower.last.get(order_id)
        if (last is None and event["seq"] == 1) or (last is not None and event["seq"] == last + 1):
            return follower.take([event])
        order, history = await self._history(order_id, checked)
        if last is None:  # an order met mid-way (its first events went by before we subscribed)
            return follower.snapshot(order)
        return follower.take([e for e in history if e["seq"] > last])

    async def _resync_mine(
        self, follower: _Follower, authorization: str | None, checked: float
    ) -> list[dict[str, Any]]:
        """A backstop (quiet period, broker reconnect): repair every followed order, pick up missed ones."""
        events: list[dict[str, Any]] = []
        for order_id in list(follower.last):
            _, history = await self._history(order_id, checked)
            last = follower.last.get(order_id, 0)
            events.extend(follower.take([e for e in history if e["seq"] > last]))
        for order in await self._live_orders(authorization):
            if order["orderId"] not in follower.last:
                events.extend(follower.snapshot(order))
        return events


async def _next_or_none(queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any] | None:
    """The next item of a watcher's queue; None after a quiet period (time to check the history).

    One ready is taken at once: the events of one commit go out together, without a timer each."""
    if not queue.empty():
        return queue.get_nowait()
    try:
        async with asyncio.timeout(RESYNC_AFTER_S * random.uniform(0.8, 1.2)):
            return await queue.get()
    except TimeoutError:
        return None


class ServicesOnly(DomainError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"

    def __init__(self) -> None:
        super().__init__("WatchMany is for the services of the mesh; a client watches an order with Watch")


def _requests_in(message: notifier_pb2.WatchManyRequest) -> Iterator[notifier_pb2.WatchManyRequest]:
    """A WatchMany message's requests in order: its own (unless it only carries ``more``), then those of ``more``."""
    pending = [message]
    while pending:
        request = pending.pop()
        if request.order_id or request.stop or not request.more:
            yield request
        pending.extend(reversed(request.more))


class _Subscription:
    """One order followed on a WatchMany stream."""

    def __init__(self, ref: int) -> None:
        self.ref = ref
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self.stopped = True
        if self.task is not None:
            self.task.cancel()


class _ManyWatches:
    """The subscriptions of one WatchMany stream and the messages they queue for it, in the order produced."""

    def __init__(self, watch: Callable[[str, common_pb2.Order | None], AsyncIterator[common_pb2.OrderEvent]]) -> None:
        self.watch = watch
        self.subscriptions: dict[int, _Subscription] = {}
        self.outbox: asyncio.Queue[tuple[_Subscription, notifier_pb2.WatchManyMessage] | None] = asyncio.Queue()
        self.ended = False  # the caller ended its side

    async def read_requests(self, requests: AsyncIterator[notifier_pb2.WatchManyRequest]) -> None:
        try:
            async for message in requests:
                for request in _requests_in(message):
                    self._handle(request)
        finally:
            self.outbox.put_nowait(None)  # the caller ended its side (or the call ended): so does the stream

    def _handle(self, request: notifier_pb2.WatchManyRequest) -> None:
        running = self.subscriptions.pop(request.ref, None)
        if running is not None:  # stopped, or its ref reused: nothing more of the old one is sent
            running.stop()
        if not request.stop:
            subscription = self.subscriptions[request.ref] = _Subscription(request.ref)
            known = request.known if request.HasField("known") else None
            subscription.task = asyncio.create_task(self._follow(subscription, request.order_id, known))

    async def next_batch(self) -> notifier_pb2.WatchManyBatch | None:
        """Every message ready now of the subscriptions not stopped (waiting for the first); None once the caller
        ended its side."""
        batch = notifier_pb2.WatchManyBatch()
        while not batch.messages and not self.ended:
            item = await self.outbox.get()
            while True:
                if item is None:
                    self.ended = True
                    break
                if not item[0].stopped:
                    batch.messages.append(item[1])
                if self.outbox.empty():
                    break
                item = self.outbox.get_nowait()
        return batch if batch.messages else None

    def stop_all(self) -> None:
        for subscription in list(self.subscriptions.values()):
            subscription.stop()

    async def _follow(self, subscription: _Subscription, order_id: str, known: common_pb2.Order | None) -> None:
        ref = subscription.ref
        try:
            async for event in self.watch(str(validate_order_id(order_id)), known):
                self.outbox.put_nowait((subscription, notifier_pb2.WatchManyMessage(ref=ref, event=event)))
        except Exception as exc:
            info = status_of(exc)
            if info is None:
                log.exception("WatchMany subscription failed", extra={"orderId": order_id})
                info = RpcErrorInfo(grpc.StatusCode.INTERNAL, "the order's stream failed")
            refused = status_message(info).SerializeToString()
            self.outbox.put_nowait((subscription, notifier_pb2.WatchManyMessage(ref=ref, refused=refused)))
        finally:
            if self.subscriptions.get(ref) is subscription:
                del self.subscriptions[ref]


class _Follower:
    """Per WatchMine stream: the last seq sent of each live order, and the orders that finished."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.finished: dict[str, int] = {}  # insertion-ordered: the oldest are forgotten first

    def seen(self, order_id: str, seq: int) -> bool:
        if order_id in self.finished:
            return True  # nothing follows a terminal event
        last = self.last.get(order_id)
        return last is not None and seq <= last

    def snapshot(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        if self.seen(order["orderId"], order["seq"]):
            return []
        return self.take([snapshot_event(order)])

    def take(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record ``events`` (in seq order) as sent; return them, up to a terminal one."""
        sent = []
        for event in events:
            order_id = event["orderId"]
            if self.seen(order_id, event["seq"]):
                continue
            sent.append(event)
            self.last[order_id] = event["seq"]
            if event["status"] in states.TERMINAL:
                del self.last[order_id]
                self.finished[order_id] = event["seq"]
                if len(self.finished) > FINISHED_MEMORY:
                    del self.finished[next(iter(self.finished))]
        return sent
