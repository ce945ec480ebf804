"""One representation of an order and its events outside the database.

The *view* is the public JSON shape (camelCase keys, decimals as strings,
ISO-8601 UTC timestamps, status names in lower case): what the HTTP API
returns, what the Redis cache holds and what WebSocket clients receive.
Protobuf messages convert to and from it here and nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf import struct_pb2, timestamp_pb2

from dexengine.v1 import common_pb2
from services.common import states

# (proto field, view key) for the plain string fields of Order.
_ORDER_STRINGS = (
    ("id", "orderId"),
    ("type", "type"),
    ("token_in", "tokenIn"),
    ("token_out", "tokenOut"),
    ("amount_in", "amountIn"),
    ("slippage", "slippage"),
    ("amount_out", "amountOut"),
    ("expected_price", "expectedPrice"),
    ("executed_price", "executedPrice"),
    ("dex_provider", "dexProvider"),
    ("tx_hash", "txHash"),
    ("error_message", "errorMessage"),
    ("limit_price", "limitPrice"),
    ("min_liquidity", "minLiquidity"),
)
_ORDER_TIMES = (
    ("created_at", "createdAt"),
    ("updated_at", "updatedAt"),
    ("completed_at", "completedAt"),
    ("expires_at", "expiresAt"),
)
_ORDER_STRUCTS: tuple[tuple[Literal["routing", "execution"], str], ...] = (
    ("routing", "routing"),
    ("execution", "execution"),
)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ts_to_view(ts: timestamp_pb2.Timestamp) -> str | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return iso(ts.ToDatetime(tzinfo=UTC))


def _ts_from_view(text: str | None, target: timestamp_pb2.Timestamp) -> None:
    if text:
        target.FromDatetime(parse_iso(text))


def struct_from(value: dict[str, Any] | None, target: struct_pb2.Struct) -> None:
    if value:
        target.update(value)


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _plain(item) for key, item in value.items()}


def _plain(value: Any) -> Any:
    """Struct numbers come back as floats; give whole numbers back as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, struct_pb2.Struct):
        return struct_to_dict(value)
    if isinstance(value, struct_pb2.ListValue):
        return [_plain(item) for item in value]
    return value


def order_from_view(view: dict[str, Any]) -> common_pb2.Order:
    order = common_pb2.Order(
        status=states.to_proto(view["status"]), retry_count=view.get("retryCount", 0), seq=view["seq"]
    )
    for field, key in _ORDER_STRINGS:
        setattr(order, field, view.get(key) or "")
    for field, key in _ORDER_TIMES:
        _ts_from_view(view.get(key), getattr(order, field))
    for field, key in _ORDER_STRUCTS:
        struct_from(view.get(key), getattr(order, field))
    return order


def order_to_view(order: common_pb2.Order) -> dict[str, Any]:
    view: dict[str, Any] = {"orderId": order.id, "status": states.from_proto(order.status)}
    for field, key in _ORDER_STRINGS[1:]:
        view[key] = getattr(order, field) or None
    view["retryCount"] = order.retry_count
    view["seq"] = order.seq
    for field, key in _ORDER_STRUCTS:
        view[key] = struct_to_dict(getattr(order, field)) if order.HasField(field) else None
    for field, key in _ORDER_TIMES:
        view[key] = _ts_to_view(getattr(order, field))
    return view


def event_from_view(view: dict[str, Any]) -> common_pb2.OrderEvent:
    event = common_pb2.OrderEvent(order_id=view["orderId"], status=states.to_proto(view["status"]), seq=view["seq"])
    _ts_from_view(view.get("timestamp"), event.timestamp)
    struct_from(view.get("data"), event.data)
    return event


def event_to_view(event: common_pb2.OrderEvent) -> dict[str, Any]:
    return {
        "orderId": event.order_id,
        "status": states.from_proto(event.status),
        "seq": event.seq,
        "timestamp": _ts_to_view(event.timestamp),
        "data": struct_to_dict(event.data),
    }
