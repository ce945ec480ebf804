"""One representation of an order and its events outside the database.

The *view* is the public JSON shape (camelCase keys, decimals as strings,
ISO-8601 UTC timestamps, status names in lower case): what the HTTP API
returns, what the Redis cache holds and what WebSocket clients receive.
Protobuf messages convert to and from it here and nowhere else.

The typed parts (the routing decision, the execution record, each event's
data) take the proto3 JSON mapping of their message: lowerCamelCase names,
every field without presence printed (so a shape never depends on a value),
fields with presence (``optional``, messages) only when set, and 64-bit
integers as JSON numbers.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from google.protobuf import message, timestamp_pb2

from dexclient import records
from dexclient.models import record_json as to_json
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
_ORDER_RECORDS: tuple[tuple[Literal["routing", "execution"], str], ...] = (
    ("routing", "routing"),
    ("execution", "execution"),
)


# Every stored status has its own message in EventData, under the status's name.
_EVENT_KINDS = frozenset(field.name for field in common_pb2.EventData.DESCRIPTOR.oneofs_by_name["detail"].fields) - {
    "snapshot"
}


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Timestamps convert without protobuf's helpers, which go through calendar.timegm and a naive datetime
# (several µs each; an order's events and views convert a few dozen per order across the services).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_YEAR_10000 = 253_402_300_800  # seconds: gmtime's %Y is four digits from year 1000 to 9999, as isoformat's
_YEAR_1000 = -30_610_224_000


def _ts_to_view(ts: timestamp_pb2.Timestamp) -> str | None:
    """``iso`` of the timestamp (microseconds), None when unset."""
    seconds, nanos = ts.seconds, ts.nanos
    if seconds == 0 and nanos == 0:
        return None
    if not _YEAR_1000 <= seconds < _YEAR_10000:
        return iso(ts.ToDatetime(tzinfo=UTC))
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{nanos // 1000:06d}Z"


def _ts_from_view(text: str | None, target: timestamp_pb2.Timestamp) -> None:
    if text:
        moment = parse_iso(text)
        if moment.tzinfo is None:  # as protobuf's FromDatetime reads a naive datetime: UTC
            moment = moment.replace(tzinfo=UTC)
        seconds, micros = divmod((moment - _EPOCH) // _MICROSECOND, 1_000_000)
        target.seconds = seconds
        target.nanos = micros * 1000


def from_json(value: dict[str, Any] | None, target: message.Message) -> None:
    """Fill ``target`` from its JSON object; keys it does not know (older records) are ignored."""
    if value:
        records.parse(value, target)


def order_from_view(view: dict[str, Any]) -> common_pb2.Order:
    order = common_pb2.Order(
        status=states.to_proto(view["status"]), retry_count=view.get("retryCount", 0), seq=view["seq"]
    )
    for field, key in _ORDER_STRINGS:
        setattr(order, field, view.get(key) or "")
    for field, key in _ORDER_TIMES:
        _ts_from_view(view.get(key), getattr(order, field))
    for field, key in _ORDER_RECORDS:
        if view.get(key):
            from_json(view[key], getattr(order, field))
    return order


def order_to_view(order: common_pb2.Order) -> dict[str, Any]:
    view: dict[str, Any] = {"orderId": order.id, "status": states.from_proto(order.status)}
    for field, key in _ORDER_STRINGS[1:]:
        view[key] = getattr(order, field) or None
    view["retryCount"] = order.retry_count
    view["seq"] = order.seq
    for field, key in _ORDER_RECORDS:
        view[key] = to_json(getattr(order, field)) if order.HasField(field) else None
    for field, key in _ORDER_TIMES:
        view[key] = _ts_to_view(getattr(order, field))
    return view


def event_data(status: str, data: dict[str, Any] | None) -> common_pb2.EventData:
    """An event's JSON ``data`` as its typed message: the one of its status, or a watch's snapshot."""
    typed = common_pb2.EventData()
    if data and data.get("snapshot"):
        typed.snapshot.snapshot = True
        typed.snapshot.order.CopyFrom(order_from_view(data["order"]))
    elif status in _EVENT_KINDS:
        detail = getattr(typed, status)
        detail.SetInParent()
        from_json(data, detail)
    return typed


def event_data_to_json(data: common_pb2.EventData) -> dict[str, Any]:
    kind = data.WhichOneof("detail")
    if kind is None:
        return {}
    if kind == "snapshot":
        return {"snapshot": True, "order": order_to_view(data.snapshot.order)}
    return to_json(getattr(data, kind))


def event_from_view(view: dict[str, Any]) -> common_pb2.OrderEvent:
    event = common_pb2.OrderEvent(order_id=view["orderId"], status=states.to_proto(view["status"]), seq=view["seq"])
    _ts_from_view(view.get("timestamp"), event.timestamp)
    event.data.CopyFrom(event_data(view["status"], view.get("data")))
    return event


def event_to_view(event: common_pb2.OrderEvent) -> dict[str, Any]:
    return {
        "orderId": event.order_id,
        "status": states.from_proto(event.status),
        "seq": event.seq,
        "timestamp": _ts_to_view(event.timestamp),
        "data": event_data_to_json(event.data),
    }
