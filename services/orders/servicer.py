"""gRPC Orders service: validation, CAS transitions, cache read-through."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
import orjson
from opentelemetry import trace

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import codec, metrics, states, telemetry
from services.common.db import UNAVAILABLE_ERRORS
from services.common.decimals import parse_decimal
from services.common.errors import FieldViolation, ValidationFailed, abort
from services.common.logs import order_id_var
from services.common.validation import validate_idempotency_key, validate_order, validate_order_id
from services.orders.admission import Admission, BacklogFull
from services.orders.cache import OrderCache
from services.orders.store import SETTABLE, IdempotencyConflict, NotFound, OrderStore, StaleTransition
from services.orders.views import event_view, order_view

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def _encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([codec.iso(created_at), str(order_id)])).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, oid = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return codec.parse_iso(created), uuid.UUID(oid)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationFailed([FieldViolation("cursor", "is not a cursor returned by a previous page")]) from None


def _transition_fields(raw: dict[str, Any]) -> dict[str, Any]:
    violations = [
        FieldViolation(f"fields.{key}", "cannot be set by a transition") for key in raw if key not in SETTABLE
    ]
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("amount_out", "expected_price", "executed_price"):
            number = parse_decimal(value)
            if number is None or number < 0:
                violations.append(FieldViolation(f"fields.{key}", "must be a non-negative decimal string"))
            fields[key] = number
        elif key in SETTABLE:
            fields[key] = value
    if violations:
        raise ValidationFailed(violations)
    return fields


class OrdersServicer(orders_pb2_grpc.OrdersServicer):
    def __init__(self, store: OrderStore, cache: OrderCache, admission: Admission) -> None:
        self.store = store
        self.cache = cache
        self.admission = admission

    async def _guard(self, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
        """Map domain and infrastructure errors to gRPC status codes."""
        try:
            return await call()
        except ValidationFailed as exc:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), reason=exc.reason, violations=exc.violations
            )
        except NotFound:
            await abort(context, grpc.StatusCode.NOT_FOUND, "order not found", reason="ORDER_NOT_FOUND")
        except StaleTransition as exc:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"stale transition: order is {exc.current}",
                reason="STALE_TRANSITION",
            )
        except IdempotencyConflict:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "idempotency key was already used with a different request",
                reason="IDEMPOTENCY_KEY_REUSED",
                violations=[FieldViolation("idempotency_key", "was already used with a different request body")],
            )
        except BacklogFull as exc:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), reason="BACKLOG_FULL")
        except UNAVAILABLE_ERRORS as exc:
            log.warning("database unavailable: %s", exc)
            await abort(context, grpc.StatusCode.UNAVAILABLE, "database unavailable", reason="DATABASE_UNAVAILABLE")
        raise AssertionError("unreachable")  # pragma: no cover

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.CreateOrderResponse:
        async def run() -> orders_pb2.CreateOrderResponse:
            order = validate_order(
                {
                    "token_in": request.token_in,
                    "token_out": request.token_out,
                    "amount_in": request.amount_in,
                    "slippage": request.slippage,
                    "type": request.type,
                }
            )
            key = validate_idempotency_key(request.idempotency_key) if request.idempotency_key else None
            # A full backlog still answers the replay of an existing key.
            created = await self.store.replay(order, key) if key and self.admission.full else None
            if created is None:
                self.admission.check()
                # Shielded: a client that goes away must not cut the work between commit and cache update.
                created = await asyncio.shield(self.store.create(order, key, telemetry.inject_headers()))
            view = order_view(created.row)
            order_id_var.set(view["orderId"])
            trace.get_current_span().set_attributes({"order.id": view["orderId"], "order.status": view["status"]})
            if created.created:
                self.admission.accepted()
                metrics.ORDERS_CREATED.inc()
                await asyncio.shield(self.cache.append(view, self._first_event(view), terminal=False))
                log.info("order created", extra={"status": "pending"})
            return orders_pb2.CreateOrderResponse(order=codec.order_from_view(view), created=created.created)

        return await self._guard(context, run)

    @staticmethod
    def _first_event(view: dict[str, Any]) -> dict[str, Any]:
        return {
            "orderId": view["orderId"],
            "status": "pending",
            "seq": 1,
            "timestamp": view["createdAt"],
            "data": {"tokenIn": view["tokenIn"], "tokenOut": view["tokenOut"], "amountIn": view["amountIn"]},
        }

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.GetOrderResponse:
        async def run() -> orders_pb2.GetOrderResponse:
            order_id = validate_order_id(request.order_id)
            order, events = await self.read(order_id, fresh=request.fresh)
            response = orders_pb2.GetOrderResponse(order=codec.order_from_view(order))
            if request.include_events:
                response.events.extend(codec.event_from_view(e) for e in events)
            return response

        return await self._guard(context, run)

    async def read(self, order_id: uuid.UUID, fresh: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The order and its history: from Redis when cached (unless fresh), else PostgreSQL (then cached)."""
        cached = None if fresh else await self.cache.get(str(order_id))
        if cached is not None:
            return cached
        row, rows = await self.store.get_with_events(order_id)
        order, events = order_view(row), [event_view(r) for r in rows]
        await self.cache.fill(order, events, terminal=order["status"] in states.TERMINAL)
        return order, events

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        async def run() -> orders_pb2.ListOrdersResponse:
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
            rows = await self.store.list(status, limit + 1, before)
            response = orders_pb2.ListOrdersResponse(
                orders=[codec.order_from_view(order_view(row)) for row in rows[:limit]]
            )
            if len(rows) > limit:
                last = rows[limit - 1]
                response.next_cursor = _encode_cursor(last["created_at"], last["id"])
            return response

        return await self._guard(context, run)

    async def Transition(
        self, request: orders_pb2.TransitionRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.TransitionResponse:
        async def run() -> orders_pb2.TransitionResponse:
            order_id = validate_order_id(request.order_id)
            order_id_var.set(str(order_id))
            expected = states.from_proto(request.expected_status)
            new = states.from_proto(request.new_status)
            violations = []
            if not expected:
                violations.append(FieldViolation("expected_status", "is required"))
            if not new:
                violations.append(FieldViolation("new_status", "is required"))
            if expected and new and not states.is_legal(expected, new):
                violations.append(FieldViolation("new_status", f"{expected} -> {new} is not a legal transition"))
            if violations:
                raise ValidationFailed(violations)
            fields = _transition_fields(codec.struct_to_dict(request.fields))
            event_data = codec.struct_to_dict(request.event_data)
            try:
                row = await asyncio.shield(
                    self.store.transition(order_id, expected, new, fields, event_data, telemetry.inject_headers())
                )
            except StaleTransition:
                await self.cache.drop(str(order_id))  # whoever read the stale status may have read it here
                raise
            order = order_view(row)
            trace.get_current_span().set_attributes({"order.id": order["orderId"], "order.status": new})
            event = {
                "orderId": order["orderId"],
                "status": new,
                "seq": order["seq"],
                "timestamp": order["updatedAt"],
                "data": event_data,
            }
            await asyncio.shield(self.cache.append(order, event, terminal=new in states.TERMINAL))
            if new in states.TERMINAL:
                reason = (order["errorMessage"] or "").split(":", 1)[0] if new == states.FAILED else "ok"
                metrics.ORDERS_FINISHED.labels(new, order["dexProvider"] or "none", reason or "unknown").inc()
            log.info("order %s", new, extra={"status": new, "seq": order["seq"]})
            return orders_pb2.TransitionResponse(order=codec.order_from_view(order), event=codec.event_from_view(event))

        return await self._guard(context, run)
