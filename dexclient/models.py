"""Typed values of the engine's API: orders, events, quotes, keys. Money is ``Decimal``, never float.

Each converts from the gRPC message and from the HTTP API's JSON, and back to
that JSON (``to_json``), so both transports print the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from google.protobuf import message, timestamp_pb2

from dexclient import records
from dexengine.v1 import common_pb2, orders_pb2, router_pb2

TERMINAL = frozenset({"confirmed", "failed", "expired", "cancelled"})
STATUSES = ("pending", "waiting", "routing", "building", "submitted", "confirmed", "failed", "expired", "cancelled")


def status_name(value: int) -> str:
    """``ORDER_STATUS_CONFIRMED`` (5) -> ``"confirmed"``; "" for UNSPECIFIED or a number this client does not know."""
    try:
        name = common_pb2.OrderStatus.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return ""
    return "" if value == 0 else name.removeprefix("ORDER_STATUS_").lower()


def status_value(name: str) -> common_pb2.OrderStatus.ValueType:
    return common_pb2.OrderStatus.Value(f"ORDER_STATUS_{name.upper()}")


def _dec(text: str | None) -> Decimal | None:
    return Decimal(text) if text else None


def _time(ts: timestamp_pb2.Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z") if value else None


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def record_json(value: message.Message) -> dict[str, Any]:
    """A typed record (routing, execution, event data) as the HTTP API's JSON shows it: the proto3 JSON mapping,
    every field without presence printed, ``optional`` ones only when set, 64-bit integers as numbers. The
    services write their JSON with this same function."""
    return records.to_json(value)


def _event_data(data: common_pb2.EventData) -> dict[str, Any]:
    kind = data.WhichOneof("detail")
    if kind is None:
        return {}
    if kind == "snapshot":
        return {"snapshot": True, "order": Order.from_proto(data.snapshot.order).to_json()}
    detail: message.Message = getattr(data, kind)
    return record_json(detail)


def _num(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


@dataclass(frozen=True)
class OrderEvent:
    order_id: str
    status: str
    seq: int
    timestamp: datetime | None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def snapshot(self) -> bool:
        """True for the first message of a stream: the order's current state (``data["order"]``)."""
        return bool(self.data.get("snapshot"))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_proto(cls, event: common_pb2.OrderEvent) -> OrderEvent:
        return cls(
            event.order_id, status_name(event.status), event.seq, _time(event.timestamp), _event_data(event.data)
        )

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> OrderEvent:
        return cls(
            str(body["orderId"]), str(body["status"]), int(body["seq"]), _parse_iso(body.get("timestamp")), body["data"]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "status": self.status,
            "seq": self.seq,
            "timestamp": _iso(self.timestamp),
            "data": self.data,
        }


@dataclass(frozen=True)
class Order:
    id: str
    type: str
    status: str
    token_in: str
    token_out: str
    amount_in: Decimal
    slippage: Decimal
    amount_out: Decimal | None = None
    expected_price: Decimal | None = None
    executed_price: Decimal | None = None
    dex_provider: str | None = None
    tx_hash: str | None = None
    error_message: str | None = None
    retry_count: int = 0
    seq: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    routing: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    # limit: the least token_out per token_in; sniper: the least token_in reserve; both: when it expires.
    limit_price: Decimal | None = None
    min_liquidity: Decimal | None = None
    expires_at: datetime | None = None
    history: tuple[OrderEvent, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_proto(cls, order: common_pb2.Order, events: Any = ()) -> Order:
        return cls(
            id=order.id,
            type=order.type,
            status=status_name(order.status),
            token_in=order.token_in,
            token_out=order.token_out,
            amount_in=Decimal(order.amount_in or "0"),
            slippage=Decimal(order.slippage or "0"),
            amount_out=_dec(order.amount_out),
            expected_price=_dec(order.expected_price),
            executed_price=_dec(order.executed_price),
            dex_provider=order.dex_provider or None,
            tx_hash=order.tx_hash or None,
            error_message=order.error_message or None,
            retry_count=order.retry_count,
            seq=order.seq,
            created_at=_time(order.created_at),
            updated_at=_time(order.updated_at),
            completed_at=_time(order.completed_at),
            routing=record_json(order.routing) if order.HasField("routing") else None,
            execution=record_json(order.execution) if order.HasField("execution") else None,
            limit_price=_dec(order.limit_price),
            min_liquidity=_dec(order.min_liquidity),
            expires_at=_time(order.expires_at),
            history=tuple(OrderEvent.from_proto(e) for e in events),
        )

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Order:
        return cls(
            id=body["orderId"],
            type=body.get("type") or "market",
            status=body["status"],
            token_in=body["tokenIn"],
            token_out=body["tokenOut"],
            amount_in=Decimal(body["amountIn"]),
            slippage=Decimal(body["slippage"]),
            amount_out=_dec(body.get("amountOut")),
            expected_price=_dec(body.get("expectedPrice")),
            executed_price=_dec(body.get("executedPrice")),
            dex_provider=body.get("dexProvider"),
            tx_hash=body.get("txHash"),
            error_message=body.get("errorMessage"),
            retry_count=int(body.get("retryCount") or 0),
            seq=int(body.get("seq") or 0),
            created_at=_parse_iso(body.get("createdAt")),
            updated_at=_parse_iso(body.get("updatedAt")),
            completed_at=_parse_iso(body.get("completedAt")),
            routing=body.get("routing"),
            execution=body.get("execution"),
            limit_price=_dec(body.get("limitPrice")),
            min_liquidity=_dec(body.get("minLiquidity")),
            expires_at=_parse_iso(body.get("expiresAt")),
            history=tuple(OrderEvent.from_json(e) for e in body.get("history") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        """The HTTP API's view of the order (with ``history`` when it was read with its events)."""
        view: dict[str, Any] = {
            "orderId": self.id,
            "status": self.status,
            "type": self.type,
            "tokenIn": self.token_in,
            "tokenOut": self.token_out,
            "amountIn": _num(self.amount_in),
            "slippage": _num(self.slippage),
            "amountOut": _num(self.amount_out),
            "expectedPrice": _num(self.expected_price),
            "executedPrice": _num(self.executed_price),
            "dexProvider": self.dex_provider,
            "txHash": self.tx_hash,
            "errorMessage": self.error_message,
            "retryCount": self.retry_count,
            "seq": self.seq,
            "routing": self.routing,
            "execution": self.execution,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
            "completedAt": _iso(self.completed_at),
            "limitPrice": _num(self.limit_price),
            "minLiquidity": _num(self.min_liquidity),
            "expiresAt": _iso(self.expires_at),
        }
        if self.history:
            view["history"] = [e.to_json() for e in self.history]
        return view


@dataclass(frozen=True)
class CreatedOrder:
    order: Order
    created: bool  # False: the idempotency key matched an earlier order, which this is
    idempotency_key: str


@dataclass(frozen=True)
class OrderPage:
    orders: tuple[Order, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class Quote:
    venue: str
    amount_in: Decimal
    amount_out: Decimal
    price: Decimal
    fee: Decimal
    price_impact: Decimal
    min_amount_out: Decimal
    quote_id: str
    expires_at_ms: int
    spot_price: Decimal | None
    latency_ms: int


@dataclass(frozen=True)
class RouteLeg:
    venue: str
    amount_in: Decimal
    amount_out: Decimal
    min_amount_out: Decimal


@dataclass(frozen=True)
class Quotes:
    """Every venue's quote and the router's decision (a venue, or ``split`` across ``legs``)."""

    quotes: tuple[Quote, ...]
    venue: str
    legs: tuple[RouteLeg, ...]
    amount_out: Decimal
    min_amount_out: Decimal
    expected_price: Decimal
    reason: str
    excluded: dict[str, str]
    simulated_ms: int

    @classmethod
    def from_proto(cls, resp: router_pb2.GetQuotesResponse) -> Quotes:
        decision = resp.decision
        return cls(
            quotes=tuple(
                Quote(
                    q.venue,
                    Decimal(q.amount_in or "0"),
                    Decimal(q.amount_out or "0"),
                    Decimal(q.price or "0"),
                    Decimal(q.fee or "0"),
                    Decimal(q.price_impact or "0"),
                    Decimal(q.min_amount_out or "0"),
                    q.quote_id,
                    q.expires_at_ms,
                    _dec(q.spot_price),
                    q.latency_ms,
                )
                for q in resp.quotes
            ),
            venue=decision.venue,
            legs=tuple(
                RouteLeg(leg.venue, Decimal(leg.amount_in), Decimal(leg.amount_out), Decimal(leg.min_amount_out))
                for leg in decision.legs
            ),
            amount_out=Decimal(decision.amount_out or "0"),
            min_amount_out=Decimal(decision.min_amount_out or "0"),
            expected_price=Decimal(decision.expected_price or "0"),
            reason=decision.reason,
            excluded=dict(resp.excluded),
            simulated_ms=resp.simulated_ms,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "quotes": [
                {
                    "venue": q.venue,
                    "amountIn": _num(q.amount_in),
                    "amountOut": _num(q.amount_out),
                    "price": _num(q.price),
                    "fee": _num(q.fee),
                    "priceImpact": _num(q.price_impact),
                    "minAmountOut": _num(q.min_amount_out),
                    "quoteId": q.quote_id,
                    "expiresAtMs": q.expires_at_ms,
                    "spotPrice": _num(q.spot_price),
                    "latencyMs": q.latency_ms,
                }
                for q in self.quotes
            ],
            "venue": self.venue,
            "legs": [
                {
                    "venue": leg.venue,
                    "amountIn": _num(leg.amount_in),
                    "amountOut": _num(leg.amount_out),
                    "minAmountOut": _num(leg.min_amount_out),
                }
                for leg in self.legs
            ],
            "amountOut": _num(self.amount_out),
            "minAmountOut": _num(self.min_amount_out),
            "expectedPrice": _num(self.expected_price),
            "reason": self.reason,
            "excluded": self.excluded,
            "simulatedMs": self.simulated_ms,
        }


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    quota_per_min: int  # 0: the engine's default
    created_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def from_proto(cls, key: orders_pb2.ApiKey) -> ApiKey:
        return cls(key.id, key.name, key.prefix, key.quota_per_min, _time(key.created_at), _time(key.revoked_at))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "quotaPerMin": self.quota_per_min or None,
            "createdAt": _iso(self.created_at),
            "revokedAt": _iso(self.revoked_at),
        }


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    secret: str  # shown once: send it as ``Authorization: Bearer <secret>``


@dataclass(frozen=True)
class Caller:
    kind: str  # "key", "anonymous" (AUTH=off) or "service"
    auth: str  # "off" or "apikey"
    key: ApiKey | None
