"""Python client of the DEX order execution engine, and the ``dexctl`` CLI (``dexclient.cli``).

``Client`` (blocking) and ``AsyncClient`` (asyncio) call the gRPC API: orders,
their status streams, quotes and, with the internal token, API keys. Both are
typed, give every call a deadline, make an idempotency key for every order
and retry only what is safe to repeat. See the README's "Clients".
"""

from dexclient._common import NO_RETRY, RetryPolicy
from dexclient.aio import AsyncClient, MineStream
from dexclient.errors import (
    Conflict,
    DexError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Violation,
)
from dexclient.models import (
    ApiKey,
    Caller,
    CreatedOrder,
    NewApiKey,
    Order,
    OrderEvent,
    OrderPage,
    Quote,
    Quotes,
    RouteLeg,
)
from dexclient.sync import Client

__all__ = [
    "NO_RETRY",
    "ApiKey",
    "AsyncClient",
    "Caller",
    "Client",
    "Conflict",
    "CreatedOrder",
    "DexError",
    "InvalidArgument",
    "MineStream",
    "NewApiKey",
    "NotFound",
    "Order",
    "OrderEvent",
    "OrderPage",
    "PermissionDenied",
    "Quote",
    "Quotes",
    "RateLimited",
    "RetryPolicy",
    "RouteLeg",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Violation",
]
