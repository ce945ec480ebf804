"""The public HTTP + WebSocket API (aiohttp), bridged to the gRPC services.

Holds no state: orders are created and read through orders, status streams
come from notifier.Watch. Every bad input is a 4xx with the error body of
DESIGN.md naming the field; never a 500 with a driver message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import orjson
from aiohttp import WSCloseCode, web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dexengine.v1 import common_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc, router_pb2, router_pb2_grpc
from services.common import auth, codec, grpc_client, metrics, states
from services.common.auth import AuthSettings
from services.common.config import Settings
from services.common.errors import FieldViolation, RpcErrorInfo, ValidationFailed, parse_rpc_error
from services.common.logs import order_id_var
from services.common.mesh_calls import OrdersCalls
from services.common.validation import ORDER_FIELDS, validate_idempotency_key, validate_order, validate_order_id
from services.gateway.http_errors import AUTHENTICATE, HTTP_FIELD_NAMES, error_response, from_rpc
from services.gateway.multiplex import MuxSocket
from services.gateway.openapi import DOCUMENT
from services.gateway.order_feeds import CLIENT_GONE, FeedEnd, Item, OrderFeeds
from services.gateway.route_checks import RouteChecks
from venues.tokens import TOKENS

log = logging.getLogger(__name__)
RPC_TIMEOUT_S = 5.0
# The key the gateway gives a request that came without an Idempotency-Key.
INTERNAL_KEY_PREFIX = "gateway:"
BODY_FIELDS = {HTTP_FIELD_NAMES[name]: name for name in ORDER_FIELDS}
_JSON = "application/json"
STATIC = Path(__file__).parent / "static"
# A browser cannot set headers on a WebSocket: it offers its key as a subprotocol instead.
WS_PROTOCOL = "dexengine.v1"
WS_BEARER_PROTOCOL = "dexengine.bearer."
# Each socket pings its client after this many seconds without a frame from it (a dead client is found and
# a proxy's idle timeout, often 60 s, never fires), each with its own period drawn from the range: sockets
# opened together (every client reconnecting after a restart) would otherwise ping together forever, a wave
# of timers, frames and pongs that the collector then has to walk at once.
HEARTBEAT_S = (15.0, 25.0)
# aiohttp rounds these timers up to whole seconds, so each second's pings fire together. Firing each when due
# (timeout_ceil_threshold above the period) was measured: the gateway's CPU in the fan-out profile rose by half,
# one wake-up per ping instead of one per second, with no gain in delivery (docs/benchmark.md, tuning log).


def heartbeat_s() -> float:
    return random.uniform(*HEARTBEAT_S)


def release_socket(request: web.Request) -> None:
    """Let a finished WebSocket's objects go when its handler returns, not at the next full collection.

    aiohttp (3.14) gives the connection's protocol a callback bound to the ``WebSocketResponse`` and
    never clears it, so response -> request -> protocol -> callback -> response is a cycle: every
    socket's ~40 objects (transport, parser, queues, headers) waited for the cyclic collector, whose
    passes then walked them and whose arenas held them (the gateway's RSS crept up ~1 MB/min at
    50 sockets/s). Nothing reads the callback once the handler is done.
    """
    protocol = request.protocol
    if getattr(protocol, "_data_received_cb", None) is not None:
        protocol._data_received_cb = None


PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
TOKENS_BODY = orjson.dumps(
    {"tokens": [{"symbol": t.symbol, "mint": t.mint, "decimals": t.decimals} for t in TOKENS.values()]}
)


class AuthFailed(Exception):
    """The request presents no usable API key (AUTH=apikey)."""

    def __init__(self, reason: str, message: str, issue: str) -> None:
        self.reason = reason
        self.issue = issue
        super().__init__(message)

    def response(self) -> web.Response:
        return error_response(
            401, self.reason, str(self), [FieldViolation("authorization", self.issue)], headers=AUTHENTICATE
        )


def is_json(content_type: str) -> bool:
    """application/json, or a JSON-based type (application/problem+json ...)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == _JSON or (media.startswith("application/") and media.endswith("+json"))


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON, headers=headers)


def _invalid(exc: ValidationFailed) -> web.Response:
    return error_response(400, exc.reason, "request validation failed", exc.violations)


def parse_order_body(raw: bytes) -> dict[str, object]:
    """JSON body -> canonical field values; numbers become Decimal (never float)."""
    try:
        body = json.loads(raw, parse_float=Decimal, parse_constant=lambda c: c) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed([FieldViolation("body", "must be valid JSON")], reason="MALFORMED_JSON") from None
    if not isinstance(body, dict):
        raise ValidationFailed([FieldViolation("body", "must be a JSON object")])
    unknown = [FieldViolation(key, "is not a known field") for key in body if key not in BODY_FIELDS]
    if unknown:
        raise ValidationFailed(unknown)
    values = {BODY_FIELDS[key]: value for key, value in body.items()}
    # A JSON number arrives as int or Decimal; pass it on as a decimal string.
    for key in ("amount_in", "slippage", "limit_price", "min_liquidity"):
        value = values.get(key)
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            values[key] = str(value)
    return values


class Gateway:
    def __init__(self, settings: Settings, auth_settings: AuthSettings | None = None) -> None:
        self.settings = settings
        self.auth = auth_settings or auth.load()
        # Calls carry the internal token; a client's key is forwarded per call (orders applies it).
        # Every CreateOrder from here carries an idempotency key (the client's, or one of ours), so the
        # channel may resend it after an ambiguous failure: the resend replays, it never duplicates.
        self.orders_channel = grpc_client.channel(
            settings.orders_target, self.auth.internal_token, create_order_keyed=True
        )
        self.notifier_channel = grpc_client.channel(settings.notifier_target, self.auth.internal_token)
        self.router_channel = grpc_client.channel(settings.router_target, self.auth.internal_token)
        self.router = router_pb2_grpc.RouterStub(self.router_channel)
        self.orders = orders_pb2_grpc.OrdersStub(self.orders_channel)
        # CreateOrder and GetOrder, the calls of every order, on one Calls stream (services.common.call_stream).
        self.order_calls = OrdersCalls(self.orders_channel, create_order_keyed=True)
        self.notifier = notifier_pb2_grpc.NotifierStub(self.notifier_channel)
        self.feeds = OrderFeeds(self.notifier)
        self.sockets: set[MuxSocket] = set()
        self.submits_in_flight = 0
        self.route_checks = RouteChecks()
        self.health = {
            "orders": health_pb2_grpc.HealthStub(self.orders_channel),
            "notifier": health_pb2_grpc.HealthStub(self.notifier_channel),
        }

    def websocket_url(self, request: web.Request, order_id: str) -> str:
        if self.settings.public_base_url:
            base = self.settings.public_base_url
            base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        else:
            # Behind a TLS-terminating proxy the request arrives as http; the proxy says what the client used.
            proto = request.headers.get("X-Forwarded-Proto", "").split(",", 1)[0].strip().lower()
            secure = proto == "https" if proto else request.secure
            base = f"{'wss' if secure else 'ws'}://{request.host}"
        return f"{base}/ws/orders/{order_id}"

    def _caller_and_order(self, request: web.Request, websocket: bool = False) -> tuple[str | None, str] | web.Response:
        """The client's ``Authorization`` (see :meth:`authorization`) and the path's order id, or the error answer."""
        try:
            return self.authorization(request, websocket), str(validate_order_id(request.match_info["order_id"]))
        except AuthFailed as exc:
            return exc.response()
        except ValidationFailed as exc:
            return _invalid(exc)

    def authorization(self, request: web.Request, websocket: bool = False) -> str | None:
        """The client's ``Authorization`` value to forward to orders; None with AUTH=off.

        Raises AuthFailed when AUTH=apikey and the request carries no Bearer key. Orders checks the key
        itself on every call (unknown and revoked keys are its 401s). A WebSocket may offer the key as the
        subprotocol ``dexengine.bearer.<key>`` (browsers cannot set headers on a WebSocket).
        """
        if not self.auth.enabled:
            return None
        value = request.headers.get("Authorization")
        if value is not None:
            if auth.bearer(value) is None:
                raise AuthFailed("API_KEY_MALFORMED", "Authorization must be 'Bearer <key>'", "must be 'Bearer <key>'")
            return value
        if websocket:
            for offered in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
                protocol = offered.strip()
                if protocol.startswith(WS_BEARER_PROTOCOL) and len(protocol) > len(WS_BEARER_PROTOCOL):
                    return f"Bearer {protocol.removeprefix(WS_BEARER_PROTOCOL)}"
        raise AuthFailed("API_KEY_MISSING", "an API key is required: send 'Authorization: Bearer <key>'", "is required")

    async def check_key(self, authorization: str | None) -> RpcErrorInfo | None:
        """None when the key is valid (or AUTH=off); else orders' answer (unknown or revoked key)."""
        if authorization is None:
            return None
        try:
            await self.orders.WhoAmI(
                orders_pb2.WhoAmIRequest(), timeout=RPC_TIMEOUT_S, metadata=auth.forwarded(authorization)
            )
        except grpc.aio.AioRpcError as err:
            return parse_rpc_error(err)
        return None

    async def check_order(self, order_id: str, authorization: str | None) -> RpcErrorInfo | None:
        """None when the caller may watch the order; else why not (unknown, another key's, bad key)."""
        try:
            await self.order_calls.GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id),
                timeout=RPC_TIMEOUT_S,
                metadata=auth.forwarded(authorization),
            )
        except grpc.aio.AioRpcError as err:
            return parse_rpc_error(err)
        return None

    async def execute(self, request: web.Request) -> web.Response:
        try:
            authorization = self.authorization(request)
        except AuthFailed as exc:
            return exc.response()
        if not is_json(request.headers.get("Content-Type", "")):
            return error_response(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be JSON: send 'Content-Type: application/json'",
                [FieldViolation("Content-Type", "must be application/json")],
            )
        try:
            values = parse_order_body(await request.read())
            order = validate_order(
                values, default_ttl_s=self.settings.order_default_ttl_s, max_ttl_s=self.settings.order_max_ttl_s
            )
            key = request.headers.get("Idempotency-Key", "")
            if "Idempotency-Key" in request.headers:
                validate_idempotency_key(key)
                if not key:
                    raise ValidationFailed([FieldViolation("idempotency_key", "must not be empty")])
        except ValidationFailed as exc:
            return _invalid(exc)
        limit = self.settings.max_submits_in_flight
        if limit and self.submits_in_flight >= limit:
            # Orders is behind: refuse now, with nothing written, rather than queue this submit until its
            # deadline and answer "outcome unknown".
            return error_response(
                429,
                "OVERLOADED",
                f"{limit} submits are already waiting on the engine; retry shortly",
                headers={"Retry-After": "1"},
            )
        self.submits_in_flight += 1
        try:
            return await self._submit(request, authorization, values, order, key)
        finally:
            self.submits_in_flight -= 1

    async def _submit(
        self, request: web.Request, authorization: str | None, values: dict[str, Any], order: Any, key: str
    ) -> web.Response:
        refused = await self.check_route(order)
        if refused is not None:
            return refused
        client_key = key
        key = key or f"{INTERNAL_KEY_PREFIX}{uuid.uuid4().hex}"
        try:
            resp = await self.order_calls.CreateOrder(
                orders_pb2.CreateOrderRequest(
                    token_in=order.token_in,
                    token_out=order.token_out,
                    amount_in=str(order.amount_in),
                    slippage=str(order.slippage),
                    type=order.type,
                    idempotency_key=key,
                    limit_price=str(order.limit_price) if order.limit_price is not None else "",
                    min_liquidity=str(order.min_liquidity) if order.min_liquidity is not None else "",
                    # As the client sent it: orders applies the default itself, and the idempotency
                    # hash must see the request, not a default computed at some instant.
                    expires_at=str(values.get("expires_at") or ""),
                ),
                timeout=RPC_TIMEOUT_S,
                metadata=auth.forwarded(authorization),
            )
        except grpc.aio.AioRpcError as err:
            return from_rpc(parse_rpc_error(err))
        order_id_var.set(resp.order.id)
        if resp.created:
            self.feeds.remember(resp.order)  # its WebSocket usually follows: the feed starts from it
        body = {
            "orderId": resp.order.id,
            "status": states.from_proto(resp.order.status) if not resp.created else "pending",
            "websocketUrl": self.websocket_url(request, resp.order.id),
        }
        headers = {"Location": f"/api/orders/{resp.order.id}"}
        if not resp.created and client_key:
            headers["Idempotent-Replayed"] = "true"
        elif not resp.created:  # our own resend after an ambiguous failure: the client sees its one order
            body["status"] = "pending"
        return _json(body, 201, headers)

    async def check_route(self, order: Any) -> web.Response | None:
        """Market and limit orders need an open pool for the pair and at least one base unit of tokenIn.

        Asked of the router (its pool accounts, no quote latency). A sniper may name a mint with no pool
        yet. If the router cannot answer, the order is accepted: execution decides, as before this check.
        """
        if order.type == "sniper" or self.route_checks.known_open(order.token_in, order.token_out, order.amount_in):
            return None
        try:
            checked = await self.router.CheckRoute(
                router_pb2.CheckRouteRequest(
                    token_in=order.token_in, token_out=order.token_out, amount_in=str(order.amount_in)
                ),
                timeout=RPC_TIMEOUT_S,
            )
            self.route_checks.remember(order.token_in, order.token_out, checked.decimals_in)
        except grpc.aio.AioRpcError as err:
            info = parse_rpc_error(err)
            if info.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                violations = info.violations or [FieldViolation("token_out", info.message)]
                return _invalid(ValidationFailed(violations))
            log.warning("route check unavailable, order accepted unchecked: %s", info.message)
        return None

    async def get_order(self, request: web.Request) -> web.Response:
        caller = self._caller_and_order(request)
        if isinstance(caller, web.Response):
            return caller
        authorization, order_id = caller
        try:
            resp = await self.order_calls.GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id, include_events=True),
                timeout=RPC_TIMEOUT_S,
                metadata=auth.forwarded(authorization),
            )
        except grpc.aio.AioRpcError as err:
            return from_rpc(parse_rpc_error(err))
        view = codec.order_to_view(resp.order)
        view["history"] = [codec.event_to_view(e) for e in resp.events]
        return _json(view)

    async def list_orders(self, request: web.Request) -> web.Response:
        try:
            authorization = self.authorization(request)
        except AuthFailed as exc:
            return exc.response()
        violations = []
        status_name = request.query.get("status", "")
        if "status" in request.query and status_name not in states.ORDERED:
            violations.append(FieldViolation("status", f"must be one of {', '.join(states.ORDERED)}"))
        limit_raw = request.query.get("limit", "50")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 200:
            violations.append(FieldViolation("limit", "must be an integer between 1 and 200"))
        if violations:
            return _invalid(ValidationFailed(violations))
        try:
            resp = await self.orders.ListOrders(
                orders_pb2.ListOrdersRequest(
                    status=states.to_proto(status_name) if status_name else common_pb2.ORDER_STATUS_UNSPECIFIED,
                    limit=int(limit_raw),
                    cursor=request.query.get("cursor", ""),
                ),
                timeout=RPC_TIMEOUT_S,
                metadata=auth.forwarded(authorization),
            )
        except grpc.aio.AioRpcError as err:
            return from_rpc(parse_rpc_error(err))
        return _json({"orders": [codec.order_to_view(o) for o in resp.orders], "nextCursor": resp.next_cursor or None})

    async def cancel(self, request: web.Request) -> web.Response:
        caller = self._caller_and_order(request)
        if isinstance(caller, web.Response):
            return caller
        authorization, order_id = caller
        try:
            resp = await self.orders.CancelOrder(
                orders_pb2.CancelOrderRequest(order_id=order_id),
                timeout=RPC_TIMEOUT_S,
                metadata=auth.forwarded(authorization),
            )
        except grpc.aio.AioRpcError as err:
            info = parse_rpc_error(err)
            if info.reason == "NOT_CANCELLABLE":  # 409 naming the status the order is in now
                current = next((v.issue for v in info.violations if v.field == "status"), "")
                body = {"error": {"code": info.reason, "message": info.message, "details": [], "status": current}}
                return _json(body, 409)
            return from_rpc(info)
        return _json(codec.order_to_view(resp.order))

    async def tokens(self, request: web.Request) -> web.Response:
        try:
            authorization = self.authorization(request)
        except AuthFailed as exc:
            return exc.response()
        refused = await self.check_key(authorization)
        if refused is not None:
            return from_rpc(refused)
        return web.Response(body=TOKENS_BODY, content_type=_JSON)

    @staticmethod
    def _upgrade_required() -> web.Response:
        return error_response(
            426,
            "UPGRADE_REQUIRED",
            "this is a WebSocket endpoint: connect with a WebSocket client",
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )

    async def multiplex(self, request: web.Request) -> web.StreamResponse:
        """``/ws/orders``: one socket, many orders (see services/gateway/multiplex.py)."""
        try:
            authorization = self.authorization(request, websocket=True)
        except AuthFailed as exc:
            return exc.response()
        ws = web.WebSocketResponse(heartbeat=heartbeat_s(), protocols=(WS_PROTOCOL,))
        if not ws.can_prepare(request).ok:
            return self._upgrade_required()
        refused = await self.check_key(authorization)  # a bad key is refused before the upgrade, like on /api
        if refused is not None:
            return from_rpc(refused)
        await ws.prepare(request)
        socket = MuxSocket(self, ws, authorization)
        self.sockets.add(socket)
        metrics.WEBSOCKETS.inc()
        try:
            await socket.run()
        finally:
            metrics.WEBSOCKETS.dec()
            self.sockets.discard(socket)
            release_socket(request)
        return ws

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        caller = self._caller_and_order(request, websocket=True)
        if isinstance(caller, web.Response):
            return caller
        authorization, order_id = caller
        if authorization is not None:  # the shared feed is the gateway's: ownership is checked per socket
            refused = await self.check_order(order_id, authorization)
            if refused is not None:
                return from_rpc(refused)
        feed, queue = self.feeds.join(order_id)
        try:
            first = await queue.get()
            if isinstance(first, FeedEnd):
                if first.error is not None:
                    return from_rpc(first.error)
                return error_response(503, "NOTIFIER_UNAVAILABLE", "the status stream ended before it began")
            ws = web.WebSocketResponse(heartbeat=heartbeat_s(), protocols=(WS_PROTOCOL,))
            if not ws.can_prepare(request).ok:  # after the order's own checks: an unknown one is still a 404
                return self._upgrade_required()
            await ws.prepare(request)
            metrics.WEBSOCKETS.inc()
            reader = asyncio.create_task(self._drain_client(ws, queue))
            try:
                await self._stream(ws, first, queue, order_id)
            finally:
                reader.cancel()
                metrics.WEBSOCKETS.dec()
                release_socket(request)
            return ws
        finally:
            feed.leave(queue)

    @staticmethod
    async def _stream(ws: web.WebSocketResponse, first: str, queue: asyncio.Queue[Item], order_id: str) -> None:
        """Send the feed's frames until it ends or the client leaves; close with a code saying which."""
        item: Item = first
        try:
            while isinstance(item, str):
                await ws.send_str(item)
                item = await queue.get()
        except ConnectionResetError:
            return  # the client vanished mid-send
        if item is CLIENT_GONE or ws.closed:
            return
        if item.terminal:
            await ws.close(code=WSCloseCode.OK, message=b"terminal status")
        elif item.error is not None:
            log.warning("watch stream failed: %s", item.error.message, extra={"orderId": order_id})
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"status stream unavailable; reconnect")
        else:
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"status stream interrupted; reconnect")

    @staticmethod
    async def _drain_client(ws: web.WebSocketResponse, queue: asyncio.Queue[Item]) -> None:
        """Read (and ignore) client frames so pings and close frames are handled; say when the client left."""
        try:
            async for _ in ws:
                pass
        finally:
            queue.put_nowait(CLIENT_GONE)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        async def check(stub: health_pb2_grpc.HealthStub) -> str:
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError as err:
                return err.code().name
            return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

        results = dict(zip(self.health, await asyncio.gather(*(check(s) for s in self.health.values())), strict=True))
        ready = all(v == "SERVING" for v in results.values())
        if ready:
            return _json({"status": "ready", "dependencies": results})
        return error_response(
            503,
            "NOT_READY",
            "dependencies not ready: " + ", ".join(f"{k}={v}" for k, v in results.items() if v != "SERVING"),
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(DOCUMENT)

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def close_sockets(self) -> None:
        """Close every multiplexed socket with 1013 (reconnect), as the per-order ones on shutdown."""
        await asyncio.gather(*(socket.shutdown() for socket in list(self.sockets)), return_exceptions=True)

    async def close(self) -> None:
        await self.close_sockets()
        await self.feeds.close()
        await self.order_calls.aclose()
        await self.orders_channel.close()
        await self.notifier_channel.close()
        await self.router_channel.close()


GATEWAY = web.AppKey("gateway", Gateway)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown routes and methods get the JSON error body; a bug gets a bare 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason.upper().replace(" ", "_"), exc.reason)
        raise
    except Exception:
        log.exception("unhandled error")
        return error_response(500, "INTERNAL", "internal error")


def build_app(settings: Settings, auth_settings: AuthSettings | None = None) -> web.Application:
    gateway = Gateway(settings, auth_settings)
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    app.add_routes(
        [
            web.get("/", gateway.page),
            web.static("/static", STATIC),
            web.post("/api/orders/execute", gateway.execute),
            web.get("/api/orders", gateway.list_orders),
            web.get("/api/orders/{order_id}", gateway.get_order),
            web.post("/api/orders/{order_id}/cancel", gateway.cancel),
            web.get("/api/tokens", gateway.tokens),
            web.get("/ws/orders", gateway.multiplex),
            web.get("/ws/orders/{order_id}", gateway.websocket),
            web.get("/healthz", gateway.healthz),
            web.get("/readyz", gateway.readyz),
            web.get("/metrics", gateway.metrics),
            web.get("/openapi.json", gateway.openapi),
        ]
    )

    async def on_shutdown(_: web.Application) -> None:
        # Open WebSockets close now with 1013 "reconnect", not at the grace's end.
        await gateway.close_sockets()
        await gateway.feeds.close()

    async def on_cleanup(_: web.Application) -> None:
        await gateway.close()

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app[GATEWAY] = gateway
    return app
