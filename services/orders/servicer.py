"""gRPC Orders service: validation, CAS transitions, cache read-through."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import grpc
import orjson
from opentelemetry import trace

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import call_stream, codec, faults, metrics, states, telemetry
from services.common.auth import AuthSettings
from services.common.decimals import fmt
from services.common.errors import DomainError, FieldViolation, ValidationFailed, guarded
from services.common.logs import order_id_var
from services.common.mesh_calls import ORDERS
from services.common.validation import (
    DEFAULT_TTL_S,
    MAX_TTL_S,
    OrderInput,
    validate_idempotency_key,
    validate_order,
    validate_order_id,
)
from services.orders import steps
from services.orders.admission import Admission
from services.orders.cache import OrderCache
from services.orders.keys import (
    Authenticator,
    KeyStore,
    OwnerCache,
    PermissionDenied,
    Principal,
)
from services.orders.quota import Quota, QuotaExceeded
from services.orders.store import NotFound, OrderStore, StaleTransition
from services.orders.views import attach_signed, order_view
from venues.tokens import token_by_mint

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
CANCELLABLE = states.CANCELLABLE


class NotCancellable(DomainError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "NOT_CANCELLABLE"

    def __init__(self, status: str) -> None:
        self.violations = (FieldViolation("status", status),)
        self.status = status
        super().__init__(f"order is {status}; only pending or waiting orders can be cancelled")


def check_amount(order: OrderInput) -> None:
    """The door check that needs the token: an amount must be at least one base unit of token_in."""
    token = token_by_mint(order.token_in)
    if token is None:
        return  # unknown mint: no decimals to check against here (its pool, if any, decides)
    unit = Decimal(1).scaleb(-token.decimals)
    if order.amount_in < unit:
        raise ValidationFailed(
            [FieldViolation("amount_in", f"is below one base unit of {token.symbol} ({fmt(unit)})")],
            reason="AMOUNT_TOO_SMALL",
        )


def api_key_message(row: Any) -> orders_pb2.ApiKey:
    key = orders_pb2.ApiKey(
        id=str(row["id"]), name=row["name"], prefix=row["prefix"], quota_per_min=row["quota_per_min"] or 0
    )
    key.created_at.FromDatetime(row["created_at"])
    if row["revoked_at"] is not None:
        key.revoked_at.FromDatetime(row["revoked_at"])
    return key


def _encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([codec.iso(created_at), str(order_id)])).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, oid = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return codec.parse_iso(created), uuid.UUID(oid)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationFailed([FieldViolation("cursor", "is not a cursor returned by a previous page")]) from None


class OrdersServicer(orders_pb2_grpc.OrdersServicer):
    def __init__(
        self,
        store: OrderStore,
        cache: OrderCache,
        admission: Admission,
        auth_settings: AuthSettings | None = None,
        keys: KeyStore | None = None,
        order_ttl_s: tuple[int, int] = (DEFAULT_TTL_S, MAX_TTL_S),
    ) -> None:
        self.order_ttl_s = order_ttl_s  # (default, maximum) life of a waiting limit/sniper order
        self.store = store
        self.cache = cache
        self.admission = admission
        self.auth_settings = auth_settings or AuthSettings()
        self.keys = keys or KeyStore(store.pool, self.auth_settings.quota_per_min)
        self.auth = Authenticator(self.auth_settings, self.keys)
        self.quota = Quota(cache.redis)
        self.owners = OwnerCache()
        self.draining = asyncio.Event()  # set when the server stops: Calls streams end (call_stream.serve)

    async def _check_owner(self, principal: Principal, order_id: uuid.UUID) -> None:
        """NotFound unless the caller may see the order (another key's order does not exist for it)."""
        if not principal.scoped:
            return
        known, owner = self.owners.get(order_id)
        if not known:
            owner = await self.store.owner(order_id)
            self.owners.put(order_id, owner)
        if not principal.owns(owner):
            raise NotFound(str(order_id))

    async def _guard(self, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
        """Map domain and infrastructure errors to gRPC statuses (the one table: services.common.errors)."""
        return await guarded(context, call)

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.CreateOrderResponse:
        async def run() -> orders_pb2.CreateOrderResponse:
            principal = await self.auth.principal(context)
            owner = principal.key_id
            order = validate_order(
                {
                    "token_in": request.token_in,
                    "token_out": request.token_out,
                    "amount_in": request.amount_in,
                    "slippage": request.slippage,
                    "type": request.type,
                    "limit_price": request.limit_price,
                    "min_liquidity": request.min_liquidity,
                    "expires_at": request.expires_at,
                },
                default_ttl_s=self.order_ttl_s[0],
                max_ttl_s=self.order_ttl_s[1],
            )
            check_amount(order)
            key = validate_idempotency_key(request.idempotency_key) if request.idempotency_key else None
            # A full backlog or a spent quota still answers the replay of an existing key.
            created = await self.store.replay(order, key, owner) if key and self.admission.full else None
            if created is None:
                self.admission.check()
                if principal.key_id is not None:
                    try:
                        await self.quota.take(principal.key_id, principal.quota_per_min)
                    except QuotaExceeded:
                        created = await self.store.replay(order, key, owner) if key else None
                        if created is None:
                            raise
            if created is None:
                # Shielded: a client that goes away must not cut the work between commit and what follows it.
                created = await asyncio.shield(self.store.create(order, key, telemetry.inject_headers(), owner))
                faults.fail_point("after_create_commit")
            view = order_view(created.row)
            order_id_var.set(view["orderId"])
            trace.get_current_span().set_attributes({"order.id": view["orderId"], "order.status": view["status"]})
            if created.created:
                if owner is not None:  # its key will read it; an order of no key is looked up if ever asked for
                    self.owners.put(created.row["id"], owner)
                self.admission.accepted()
                metrics.ORDERS_CREATED.inc()
                # No cache entry yet: nothing on an order's path reads a new order (a WebSocket starts from the
                # order its gateway created), so the first read fills it, and the appends keep it from then on.
                log.info("order created", extra={"status": view["status"]})
            return orders_pb2.CreateOrderResponse(order=codec.order_from_view(view), created=created.created)

        return await self._guard(context, run)

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.GetOrderResponse:
        async def run() -> orders_pb2.GetOrderResponse:
            principal = await self.auth.principal(context)
            order_id = validate_order_id(request.order_id)
            await self._check_owner(principal, order_id)
            if request.include_signed and principal.scoped:
                raise PermissionDenied("include_signed is for the services of the mesh, not API keys")
            order, events, row = await self.read(order_id, fresh=request.fresh or request.include_signed)
            response = orders_pb2.GetOrderResponse(order=codec.order_from_view(order))
            if request.include_signed and row is not None:
                attach_signed(response.order, row, order)
            if request.include_events:
                response.events.extend(codec.event_from_view(e) for e in events)
            return response

        return await self._guard(context, run)

    async def read(
        self, order_id: uuid.UUID, fresh: bool = False
    ) -> tuple[dict[str, Any], list[dict[str, Any]], asyncpg.Record | None]:
        """The order and its history: from Redis when cached (unless fresh), else PostgreSQL (then cached, which
        also repairs an entry left behind); the row when it was read from PostgreSQL."""
        cached = None if fresh else await self.cache.get(str(order_id))
        if cached is not None:
            return *cached, None
        row, events = await self.store.get_with_events(order_id)
        order = order_view(row)
        await self.cache.fill(order, events, terminal=order["status"] in states.TERMINAL)
        return order, events, row

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        async def run() -> orders_pb2.ListOrdersResponse:
            principal = await self.auth.principal(context)
            violations = []
            status = states.from_proto(request.status) if request.status else ""
            if request.status and not status:
                violations.append(FieldViolation("status", "is not a known order status"))
            if not 0 <= request.limit <= MAX_LIMIT:
                violations.append(FieldViolation("limit", f"must be between 1 and {MAX_LIMIT}"))
            if violations:
                raise ValidationFailed(violations)
            limit = request.limit or DEFAULT_LIMIT
            before = _decode_cursor(request.cursor) if request.cursor else None
            rows = await self.store.list(status, limit + 1, before, owner=principal.key_id, live=request.live)
            response = orders_pb2.ListOrdersResponse(
                orders=[codec.order_from_view(order_view(row)) for row in rows[:limit]]
            )
            if len(rows) > limit:
                last = rows[limit - 1]
                response.next_cursor = _encode_cursor(last["created_at"], last["id"])
            return response

        return await self._guard(context, run)

    async def Calls(
        self, request_iterator: AsyncIterator[orders_pb2.OrdersCalls], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orders_pb2.OrdersAnswers]:
        """CreateOrder, GetOrder and Transition as messages of one stream (services.common.call_stream)."""
        handlers: dict[str, call_stream.Handler] = {
            "create_order": self.CreateOrder,
            "get_order": self.GetOrder,
            "transition": self.Transition,
        }
        answers = call_stream.serve(
            ORDERS,
            request_iterator,
            context,
            handlers,
            orders_pb2.OrdersAnswer,
            orders_pb2.OrdersAnswers,
            self.draining,
        )
        async for batch in answers:
            yield batch

    async def Transition(
        self, request: orders_pb2.TransitionRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.TransitionResponse:
        async def run() -> orders_pb2.TransitionResponse:
            await self.auth.service(context)
            order_id = validate_order_id(request.order_id)
            order_id_var.set(str(order_id))
            expected = states.from_proto(request.expected_status)
            if not expected:
                raise ValidationFailed([FieldViolation("expected_status", "is required")])
            step = steps.effect(request, expected)
            new = step.new
            order, events, row = await self._commit(order_id, expected, step)
            trace.get_current_span().set_attributes({"order.id": order["orderId"], "order.status": new})
            if new in states.TERMINAL:
                reason = (order["errorMessage"] or "").split(":", 1)[0] if new == states.FAILED else "ok"
                metrics.ORDERS_FINISHED.labels(new, order["dexProvider"] or "none", reason or "unknown").inc()
            # One record per transition is DEBUG: at INFO an order logs its creation and its outcome.
            log.log(
                logging.INFO if new == states.FAILED else logging.DEBUG,
                "order %s",
                new,
                extra={"status": new, "seq": order["seq"]},
            )
            appended = [codec.event_from_view(e) for e in events]
            response = orders_pb2.TransitionResponse(
                order=codec.order_from_view(order), event=appended[-1], events=appended
            )
            attach_signed(response.order, row, order)
            return response

        return await self._guard(context, run)

    async def _commit(
        self, order_id: uuid.UUID, expected: str, step: steps.Effect
    ) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
        """Commit a transition and append it to the cache: one unit, shielded, so a caller that goes away
        (an executor killed mid-call, a client that disconnects mid-cancel) cancels its handler, never the
        cache append after a commit that happened. The event cached is the one the outbox carries. The
        append is sent without waiting for it: until it lands, the marker sends reads to PostgreSQL."""

        async def commit_then_cache() -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
            # Before the commit: the relay may publish the event before the append below, and a client
            # who saw it must not read the state before it from the cache.
            token = await self.cache.begin(str(order_id))
            try:
                row = await self.store.transition(order_id, expected, step, telemetry.inject_headers())
            except StaleTransition:
                await self.cache.drop(str(order_id), token)  # whoever read the stale status may have read it here
                raise
            view = order_view(row)
            events = orjson.loads(row["events"])
            self.cache.append_soon(view, events, terminal=step.new in states.TERMINAL, token=token)
            return view, events, row

        unit = asyncio.ensure_future(commit_then_cache())
        # A caller that went away no longer awaits the unit: its outcome (a lost race) is not an unretrieved error.
        unit.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(unit)

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.CancelOrderResponse:
        async def run() -> orders_pb2.CancelOrderResponse:
            principal = await self.auth.principal(context)
            order_id = validate_order_id(request.order_id)
            await self._check_owner(principal, order_id)
            order, _, _ = await self.read(order_id, fresh=True)
            # A compare-and-set like every transition: a cancel racing the trigger (waiting -> routing)
            # or the executor (pending -> routing) has exactly one winner; the loser sees the new status.
            while order["status"] in CANCELLABLE:
                try:
                    view, _, _ = await self._commit(
                        order_id, order["status"], steps.single(states.CANCELLED, steps.cancelled())
                    )
                except StaleTransition as exc:
                    order["status"] = exc.current
                    continue
                metrics.ORDERS_FINISHED.labels(states.CANCELLED, "none", "ok").inc()
                log.info("order cancelled", extra={"status": states.CANCELLED, "seq": view["seq"]})
                return orders_pb2.CancelOrderResponse(order=codec.order_from_view(view))
            raise NotCancellable(order["status"])

        return await self._guard(context, run)

    async def WhoAmI(
        self, request: orders_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.WhoAmIResponse:
        async def run() -> orders_pb2.WhoAmIResponse:
            principal = await self.auth.principal(context)
            response = orders_pb2.WhoAmIResponse(kind=principal.kind, auth=self.auth_settings.mode)
            if principal.key_id is not None:
                response.key.CopyFrom(
                    orders_pb2.ApiKey(
                        id=str(principal.key_id), name=principal.name, quota_per_min=principal.quota_per_min
                    )
                )
            return response

        return await self._guard(context, run)

    async def CreateApiKey(
        self, request: orders_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.CreateApiKeyResponse:
        async def run() -> orders_pb2.CreateApiKeyResponse:
            await self.auth.service(context)
            row, secret = await self.keys.create(request.name, request.quota_per_min)
            log.info("api key created", extra={"keyId": str(row["id"]), "keyName": row["name"]})
            return orders_pb2.CreateApiKeyResponse(key=api_key_message(row), secret=secret)

        return await self._guard(context, run)

    async def ListApiKeys(
        self, request: orders_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListApiKeysResponse:
        async def run() -> orders_pb2.ListApiKeysResponse:
            await self.auth.service(context)
            rows = await self.keys.list(request.include_revoked)
            return orders_pb2.ListApiKeysResponse(keys=[api_key_message(row) for row in rows])

        return await self._guard(context, run)

    async def RevokeApiKey(
        self, request: orders_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.RevokeApiKeyResponse:
        async def run() -> orders_pb2.RevokeApiKeyResponse:
            await self.auth.service(context)
            if not request.key:
                raise ValidationFailed([FieldViolation("key", "is required (a key id or the name of an active key)")])
            row = await self.keys.revoke(request.key)
            log.info("api key revoked", extra={"keyId": str(row["id"]), "keyName": row["name"]})
            return orders_pb2.RevokeApiKeyResponse(key=api_key_message(row))

        return await self._guard(context, run)
