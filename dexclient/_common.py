"""What the sync and async clients share: each unary call (its request, credentials and reading of the
answer), metadata, and which calls may be retried. A client only runs a ``Call``, blocking or awaiting."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, Literal, TypeVar

import grpc

from dexclient import tokens
from dexclient.errors import InvalidArgument, Violation
from dexclient.models import (
    ApiKey,
    Caller,
    CreatedOrder,
    NewApiKey,
    Order,
    OrderPage,
    Quotes,
    status_value,
)
from dexengine.v1 import common_pb2, orders_pb2, router_pb2

AUTHORIZATION = "authorization"
INTERNAL = "x-dexengine-internal"
DEFAULT_TIMEOUT_S = 10.0

Amount = Decimal | str | int
Metadata = tuple[tuple[str, str], ...]
R = TypeVar("R")

# Calls that change nothing, or that the server deduplicates: retried on UNAVAILABLE.
# CreateOrder always carries an idempotency key (the client makes one), so a retry
# after a lost answer returns the same order. CancelOrder and CreateApiKey are not.
SAFE = frozenset(
    {"CreateOrder", "GetOrder", "ListOrders", "WhoAmI", "GetQuotes", "ListApiKeys", "RevokeApiKey", "Watch"}
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, within the call's deadline."""

    attempts: int = 4  # the first included
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    retryable: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})

    def delays(self) -> Iterator[float]:
        """The waits before attempts 2, 3, …"""
        backoff = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield random.uniform(0, backoff)
            backoff = min(backoff * self.multiplier, self.max_backoff_s)


NO_RETRY = RetryPolicy(attempts=1)


def decimal_text(value: Amount, name: str) -> str:
    """A decimal as the API's string; floats are refused (money is never a float)."""
    if isinstance(value, float | bool):
        raise TypeError(f"{name} must be a Decimal, str or int, not {type(value).__name__}: money is never a float")
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        raise InvalidArgument(
            "INVALID_ARGUMENT", f"{name} is not a decimal", violations=[Violation(name, "must be a decimal")]
        ) from None
    return format(number, "f")


def key_metadata(api_key: str | None) -> Metadata:
    return ((AUTHORIZATION, f"Bearer {api_key}"),) if api_key else ()


def admin_metadata(admin_token: str | None) -> Metadata:
    return ((INTERNAL, admin_token),) if admin_token else ()


@dataclass(frozen=True)
class Call(Generic[R]):
    """One unary call of the engine: the stub and method, the request, whose credentials, how the answer reads."""

    service: Literal["orders", "router"]
    method: str
    request: Any
    admin: bool  # the internal token (``admin_token``) rather than the API key
    read: Callable[[Any], R]


def _mints(token_in: str, token_out: str) -> tuple[str, str]:
    """Both tokens as mints (symbols are resolved); InvalidArgument for an unknown symbol."""
    try:
        return tokens.resolve(token_in), tokens.resolve(token_out)
    except ValueError as exc:
        raise InvalidArgument("INVALID_ARGUMENT", str(exc)) from None


def create_order(
    token_in: str,
    token_out: str,
    amount_in: Amount,
    slippage: Amount,
    order_type: str,
    idempotency_key: str | None,
    extra: dict[str, Amount | str],
) -> Call[CreatedOrder]:
    """CreateOrder; tokens may be symbols. ``extra`` sets fields of other order types when the
    engine's protos have them (limit_price, min_liquidity, expires_at …)."""
    mint_in, mint_out = _mints(token_in, token_out)
    request = orders_pb2.CreateOrderRequest(
        token_in=mint_in,
        token_out=mint_out,
        amount_in=decimal_text(amount_in, "amount_in"),
        slippage=decimal_text(slippage, "slippage"),
        type=order_type,
        idempotency_key=idempotency_key or str(uuid.uuid4()),
    )
    fields = orders_pb2.CreateOrderRequest.DESCRIPTOR.fields_by_name
    for name, value in extra.items():
        if name not in fields:
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                f"this engine does not take {name} yet",
                violations=[Violation(name, "is not a field of CreateOrderRequest in this version")],
            )
        setattr(request, name, value if isinstance(value, str) else decimal_text(value, name))
    return Call(
        "orders",
        "CreateOrder",
        request,
        False,
        lambda resp: CreatedOrder(Order.from_proto(resp.order), resp.created, request.idempotency_key),
    )


def get_order(order_id: str, events: bool) -> Call[Order]:
    request = orders_pb2.GetOrderRequest(order_id=order_id, include_events=events)
    return Call("orders", "GetOrder", request, False, lambda resp: Order.from_proto(resp.order, resp.events))


def list_orders(status: str | None, limit: int, cursor: str | None, live: bool) -> Call[OrderPage]:
    request = orders_pb2.ListOrdersRequest(
        status=status_value(status) if status else common_pb2.ORDER_STATUS_UNSPECIFIED,
        limit=limit,
        cursor=cursor or "",
        live=live,
    )
    return Call(
        "orders",
        "ListOrders",
        request,
        False,
        lambda resp: OrderPage(tuple(Order.from_proto(o) for o in resp.orders), resp.next_cursor or None),
    )


def cancel_order(order_id: str) -> Call[Order]:
    request = orders_pb2.CancelOrderRequest(order_id=order_id)
    return Call("orders", "CancelOrder", request, False, lambda resp: Order.from_proto(resp.order))


def quote(token_in: str, token_out: str, amount_in: Amount, slippage: Amount) -> Call[Quotes]:
    mint_in, mint_out = _mints(token_in, token_out)
    request = router_pb2.GetQuotesRequest(
        token_in=mint_in,
        token_out=mint_out,
        amount_in=decimal_text(amount_in, "amount_in"),
        slippage=decimal_text(slippage, "slippage"),
    )
    return Call("router", "GetQuotes", request, False, Quotes.from_proto)


def whoami() -> Call[Caller]:
    return Call(
        "orders",
        "WhoAmI",
        orders_pb2.WhoAmIRequest(),
        False,
        lambda resp: Caller(resp.kind, resp.auth, ApiKey.from_proto(resp.key) if resp.HasField("key") else None),
    )


def create_key(name: str, quota_per_min: int) -> Call[NewApiKey]:
    request = orders_pb2.CreateApiKeyRequest(name=name, quota_per_min=quota_per_min)
    return Call(
        "orders", "CreateApiKey", request, True, lambda resp: NewApiKey(ApiKey.from_proto(resp.key), resp.secret)
    )


def list_keys(include_revoked: bool) -> Call[list[ApiKey]]:
    request = orders_pb2.ListApiKeysRequest(include_revoked=include_revoked)
    return Call("orders", "ListApiKeys", request, True, lambda resp: [ApiKey.from_proto(k) for k in resp.keys])


def revoke_key(key: str) -> Call[ApiKey]:
    request = orders_pb2.RevokeApiKeyRequest(key=key)
    return Call("orders", "RevokeApiKey", request, True, lambda resp: ApiKey.from_proto(resp.key))
