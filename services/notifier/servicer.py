"""Watch: snapshot first, then every later event in seq order, no gaps, no duplicates.

The watcher subscribes to the hub *before* reading the snapshot, so an event
committed while the snapshot is read is either in the snapshot (seq <= the
snapshot's, dropped as a duplicate) or buffered (seq > it, delivered). A gap
in seq (an event that never reached this replica) is filled from the order's
history in orders; so is a quiet period, in case the broker lost events.

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
from collections.abc import AsyncIterator
from typing import Any

import grpc

from dexengine.v1 import common_pb2, notifier_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc
from services.common import codec, metrics, states
from services.common.errors import ValidationFailed, abort, parse_rpc_error
from services.common.validation import validate_order_id
from services.notifier.hub import RESYNC, Hub

log = logging.getLogger(__name__)
RESYNC_AFTER_S = 30.0  # a backstop: gaps are repaired as soon as a later event arrives
HistoryResult = tuple[dict[str, Any], list[dict[str, Any]]]


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
    def __init__(self, hub: Hub, orders: orders_pb2_grpc.OrdersStub) -> None:
        self.hub = hub
        self.orders = orders
        self._reads: dict[str, tuple[float, asyncio.Future[HistoryResult]]] = {}

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
        resp = await self.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, include_events=True), timeout=5)
        return codec.order_to_view(resp.order), [codec.event_to_view(e) for e in resp.events]

    async def Watch(
        self, request: notifier_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.OrderEvent]:
        try:
            order_id = str(validate_order_id(request.order_id))
        except ValidationFailed as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), violations=exc.violations)
            return
        subscribed = time.monotonic()
        queue = self.hub.subscribe(order_id)
        metrics.WATCHERS.inc()
        try:
            try:
                order, _ = await self._history(order_id, subscribed)
            except grpc.aio.AioRpcError as err:
                info = parse_rpc_error(err)
                await abort(context, info.code, info.message, reason=info.reason)
                return
            yield codec.event_from_view(snapshot_event(order))
            last = order["seq"]
            if order["status"] in states.TERMINAL:
                return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=RESYNC_AFTER_S * random.uniform(0.8, 1.2))
                except TimeoutError:
                    event = None
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
