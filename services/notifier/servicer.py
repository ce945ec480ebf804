"""Watch: snapshot first, then every later event in seq order, no gaps, no duplicates.

The watcher subscribes to the hub *before* reading the snapshot, so an event
committed while the snapshot is read is either in the snapshot (seq <= the
snapshot's, dropped as a duplicate) or buffered (seq > it, delivered). A gap
in seq (an event that never reached this replica) is filled from the order's
history in orders; so is a quiet period, in case the broker lost events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from dexengine.v1 import common_pb2, notifier_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc
from services.common import codec, metrics, states
from services.common.errors import ValidationFailed, abort, parse_rpc_error
from services.common.validation import validate_order_id
from services.notifier.hub import Hub

log = logging.getLogger(__name__)
RESYNC_AFTER_S = 5.0


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

    async def _history(self, order_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
        queue = self.hub.subscribe(order_id)
        metrics.WATCHERS.inc()
        try:
            try:
                order, _ = await self._history(order_id)
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
                    event = await asyncio.wait_for(queue.get(), timeout=RESYNC_AFTER_S)
                except TimeoutError:
                    event = None
                if event is not None and event["seq"] <= last:
                    continue
                if event is None or event["seq"] > last + 1:
                    try:
                        _, history = await self._history(order_id)
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
