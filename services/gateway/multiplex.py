"""``/ws/orders``: one WebSocket, many orders.

The client sends JSON text frames:

- ``{"subscribe": ["<orderId>", ...]}`` — follow these orders (up to 100 per
  frame, 1,000 per socket). Each is checked first (an unknown order, or with
  API keys another key's, gets an error frame naming it, like a 404); the
  others are acknowledged with ``{"subscribed": [ids]}`` and then stream
  exactly as ``/ws/orders/{orderId}`` does: the current state (a snapshot)
  first, then every later event in ``seq`` order, until the terminal one.
- ``{"subscribe": "mine"}`` — every order of the caller's key (every order
  with AUTH=off), new ones included, until unsubscribed. Acknowledged with
  ``{"subscribed": "mine"}`` once it is live: an order created after the
  acknowledgement is in the stream. Each order that is live at that moment
  begins with a snapshot; a new order begins with its ``pending`` event.
- ``{"unsubscribe": [ids]}`` / ``{"unsubscribe": "mine"}`` — stop; answered
  with ``{"unsubscribed": ...}``.

The server sends each order's events as the per-order socket does
(``{orderId, status, seq, timestamp, data}``), at most once per ``(orderId,
seq)`` on a socket (an order followed both by id and by "mine" is not
doubled), and error frames with the HTTP API's body: ``{"error": {"code",
"message", "details": [{"field", "issue"}]}, "orderId"?}``. A bad frame is
answered with an error and changes nothing; the socket stays open. The
server closes with 1013 when a status stream broke off (a restart):
reconnect and subscribe again, the snapshots catch up. A client that falls
10,000 messages behind is closed with 1013 too.

Per-order subscriptions share the gateway's per-order feeds (services.gateway.
order_feeds); "mine" is one notifier ``WatchMine`` stream per socket, opened
with the client's key, so the notifier filters by owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from dexengine.v1 import common_pb2, notifier_pb2
from services.common import auth, codec
from services.common.errors import FieldViolation, RpcErrorInfo, parse_rpc_error
from services.gateway.order_feeds import Item, OrderFeed

if TYPE_CHECKING:
    from services.gateway.app import Gateway

log = logging.getLogger(__name__)
MINE = "mine"
MAX_IDS_PER_FRAME = 100
MAX_SUBSCRIPTIONS = 1000
MAX_BACKLOG = 10_000
MAX_FRAME_BYTES = 64 * 1024
DEDUPE_MEMORY = 50_000


@dataclass
class _Subscription:
    feed: OrderFeed
    queue: asyncio.Queue[Item]
    task: asyncio.Task[None] | None = None


def error_frame(
    code: str, message: str, violations: list[FieldViolation] | None = None, order_id: str | None = None
) -> str:
    body: dict[str, Any] = {
        "error": {
            "code": code,
            "message": message,
            "details": [{"field": v.field, "issue": v.issue} for v in violations or []],
        }
    }
    if order_id is not None:
        body["orderId"] = order_id
    return orjson.dumps(body).decode()


class BadFrame(Exception):
    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.issue}" for v in violations))


def parse_frame(text: str) -> tuple[str, list[str] | str]:
    """A client frame -> ("subscribe" | "unsubscribe", ids or "mine"); BadFrame naming the field otherwise."""
    if len(text) > MAX_FRAME_BYTES:
        raise BadFrame([FieldViolation("message", f"must be at most {MAX_FRAME_BYTES} bytes")])
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadFrame([FieldViolation("message", "must be valid JSON")]) from None
    if not isinstance(body, dict):
        raise BadFrame([FieldViolation("message", 'must be a JSON object: {"subscribe": [ids] | "mine"}')])
    unknown = [FieldViolation(key, "is not a known field") for key in body if key not in ("subscribe", "unsubscribe")]
    if unknown:
        raise BadFrame(unknown)
    if len(body) != 1:
        raise BadFrame([FieldViolation("message", "must hold exactly one of subscribe, unsubscribe")])
    op, target = next(iter(body.items()))
    if target == MINE:
        return op, MINE
    if not isinstance(target, list) or not target:
        raise BadFrame([FieldViolation(op, 'must be "mine" or a non-empty list of order ids')])
    if len(target) > MAX_IDS_PER_FRAME:
        raise BadFrame([FieldViolation(op, f"must list at most {MAX_IDS_PER_FRAME} order ids")])
    ids, violations = [], []
    for index, raw in enumerate(target):
        try:
            ids.append(str(uuid.UUID(raw)))
        except (ValueError, TypeError, AttributeError):
            violations.append(FieldViolation(f"{op}[{index}]", "must be a UUID"))
    if violations:
        raise BadFrame(violations)
    return op, list(dict.fromkeys(ids))


class MuxSocket:
    def __init__(self, gateway: Gateway, ws: web.WebSocketResponse, authorization: str | None) -> None:
        self.gateway = gateway
        self.ws = ws
        self.authorization = authorization
        self.subscriptions: dict[str, _Subscription] = {}
        self.mine: asyncio.Task[None] | None = None
        # Outgoing frames: (orderId, seq, text) for events, text for control frames.
        self.out: asyncio.Queue[tuple[str, int, str] | str] = asyncio.Queue(MAX_BACKLOG)
        self.sent: dict[str, int] = {}  # orderId -> last seq sent
        self.closing: asyncio.Task[bool] | None = None

    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name="mux-writer")
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._handle(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._send(error_frame("VALIDATION_FAILED", "frames must be JSON text", []))
        finally:
            writer.cancel()
            await self._stop_all()
            if self.closing is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self.closing

    async def shutdown(self) -> None:
        self.close(WSCloseCode.TRY_AGAIN_LATER, "gateway shutting down; reconnect")
        if self.closing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.closing

    # -- outgoing

    def _send(self, item: tuple[str, int, str] | str) -> None:
        if self.closing is not None:
            return
        try:
            self.out.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("multiplexed socket fell %d frames behind; closing it", MAX_BACKLOG)
            self.close(WSCloseCode.TRY_AGAIN_LATER, "too far behind; reconnect")

    async def _write(self) -> None:
        try:
            while True:
                item = await self.out.get()
                if isinstance(item, tuple):
                    order_id, seq, text = item
                    if self.sent.get(order_id, 0) >= seq:
                        continue  # already sent through the other subscription
                    self.sent[order_id] = seq
                    if len(self.sent) > DEDUPE_MEMORY:
                        del self.sent[next(iter(self.sent))]
                    await self.ws.send_str(text)
                else:
                    await self.ws.send_str(item)
        except ConnectionResetError:
            return  # the client vanished mid-send; the reader sees it too

    def close(self, code: int, message: str) -> None:
        if self.closing is None and not self.ws.closed:
            self.closing = asyncio.create_task(self.ws.close(code=code, message=message.encode()))

    # -- incoming

    async def _handle(self, text: str) -> None:
        try:
            op, target = parse_frame(text)
        except BadFrame as exc:
            self._send(error_frame("VALIDATION_FAILED", str(exc), exc.violations))
            return
        if target == MINE:
            if op == "subscribe":
                await self._subscribe_mine()
            else:
                await self._cancel(self.mine)
                self.mine = None
                self._send(orjson.dumps({"unsubscribed": MINE}).decode())
            return
        assert isinstance(target, list)
        if op == "subscribe":
            await self._subscribe(target)
        else:
            for order_id in target:
                await self._leave(order_id)
            self._send(orjson.dumps({"unsubscribed": target}).decode())

    async def _subscribe(self, ids: list[str]) -> None:
        new = [order_id for order_id in ids if order_id not in self.subscriptions]
        if len(self.subscriptions) + len(new) > MAX_SUBSCRIPTIONS:
            self._send(
                error_frame(
                    "TOO_MANY_SUBSCRIPTIONS",
                    f"a socket follows at most {MAX_SUBSCRIPTIONS} orders by id",
                    [FieldViolation("subscribe", f"would exceed {MAX_SUBSCRIPTIONS} subscriptions")],
                )
            )
            return
        refusals = await asyncio.gather(*(self.gateway.check_order(order_id, self.authorization) for order_id in new))
        accepted = []
        for order_id, refused in zip(new, refusals, strict=True):
            if refused is not None:
                self._refuse(refused, f"subscribe[{ids.index(order_id)}]", order_id)
                if refused.code == grpc.StatusCode.UNAUTHENTICATED:
                    self.close(WSCloseCode.POLICY_VIOLATION, "API key no longer valid")
                    return
                continue
            if order_id in self.subscriptions:
                continue
            feed, queue = self.gateway.feeds.join(order_id)
            subscription = _Subscription(feed, queue)
            self.subscriptions[order_id] = subscription
            subscription.task = asyncio.create_task(self._pump(order_id, subscription), name=f"mux-{order_id}")
            accepted.append(order_id)
        already = [order_id for order_id in ids if order_id not in new]
        if accepted or already:
            self._send(orjson.dumps({"subscribed": accepted + already}).decode())

    def _refuse(self, info: RpcErrorInfo, field: str, order_id: str) -> None:
        code = info.reason or info.code.name
        if info.code == grpc.StatusCode.NOT_FOUND:
            self._send(error_frame(code, "order not found", [FieldViolation(field, "is not a known order")], order_id))
        else:
            self._send(error_frame(code, info.message, info.violations, order_id))

    async def _pump(self, order_id: str, subscription: _Subscription) -> None:
        started = False
        try:
            while True:
                item = await subscription.queue.get()
                if isinstance(item, str):
                    started = True
                    self._send((order_id, int(orjson.loads(item)["seq"]), item))
                    continue
                if item.terminal:
                    return
                if item.error is not None and not started:
                    self._refuse(item.error, "subscribe", order_id)
                    return
                self.close(WSCloseCode.TRY_AGAIN_LATER, "status stream interrupted; reconnect")
                return
        finally:
            subscription.feed.leave(subscription.queue)
            if self.subscriptions.get(order_id) is subscription:
                del self.subscriptions[order_id]

    async def _leave(self, order_id: str) -> None:
        subscription = self.subscriptions.pop(order_id, None)
        if subscription is not None:
            await self._cancel(subscription.task)
            subscription.feed.leave(subscription.queue)

    async def _subscribe_mine(self) -> None:
        if self.mine is not None and not self.mine.done():
            self._send(orjson.dumps({"subscribed": MINE}).decode())
            return
        live: asyncio.Future[RpcErrorInfo | None] = asyncio.get_running_loop().create_future()
        self.mine = asyncio.create_task(self._pump_mine(live), name="mux-mine")
        error = await asyncio.shield(live)
        if error is None:
            self._send(orjson.dumps({"subscribed": MINE}).decode())
        else:
            self._send(error_frame(error.reason or error.code.name, error.message, error.violations))

    async def _pump_mine(self, live: asyncio.Future[RpcErrorInfo | None]) -> None:
        """Forward the notifier's WatchMine stream; ``live`` says when it is (None) or why it is not."""
        call = self.gateway.notifier.WatchMine(
            notifier_pb2.WatchMineRequest(), metadata=auth.forwarded(self.authorization)
        )
        try:
            await call.initial_metadata()
            if call.done() and await call.code() != grpc.StatusCode.OK:
                await call.read()  # raises the call's error
            live.set_result(None)
            while True:
                event = await call.read()
                if not isinstance(event, common_pb2.OrderEvent):  # grpc.aio.EOF: the stream ended
                    break
                self._send((event.order_id, event.seq, orjson.dumps(codec.event_to_view(event)).decode()))
        except grpc.aio.AioRpcError as err:
            if not live.done():
                live.set_result(parse_rpc_error(err))
                return
        finally:
            call.cancel()
            if not live.done():  # cancelled (unsubscribed, socket closed) before it was live
                live.set_result(
                    RpcErrorInfo(grpc.StatusCode.CANCELLED, "subscription cancelled", "SUBSCRIPTION_CANCELLED", [])
                )
        self.close(WSCloseCode.TRY_AGAIN_LATER, "status stream interrupted; reconnect")

    # -- teardown

    @staticmethod
    async def _cancel(task: asyncio.Task[Any] | None) -> None:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _stop_all(self) -> None:
        await self._cancel(self.mine)
        for order_id in list(self.subscriptions):
            await self._leave(order_id)
