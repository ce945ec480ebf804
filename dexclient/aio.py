"""The asyncio client of the engine's gRPC API (grpc.aio), the same calls as ``dexclient.Client``.

    from dexclient import AsyncClient

    async with AsyncClient.connect(api_key="dex_…") as client:
        placed = await client.create_order("SOL", "USDC", "1.5", slippage="0.01")
        async for event in client.watch(placed.order.id):
            print(event.seq, event.status)

Every call has a deadline (``timeout``, 10 s by default, across its retries).
Calls that are safe to repeat are retried on UNAVAILABLE with exponential
backoff and jitter: reads, and CreateOrder, which always carries an
idempotency key (one is made when none is given), so a retry after a lost
answer returns the same order. ``watch`` reconnects the same way and skips
what it already yielded (by ``seq``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dexclient import _common
from dexclient._common import DEFAULT_TIMEOUT_S, SAFE, Amount, Metadata, RetryPolicy
from dexclient.errors import DexError, from_rpc_error
from dexclient.models import ApiKey, Caller, CreatedOrder, NewApiKey, Order, OrderEvent, OrderPage, Quotes
from dexengine.v1 import notifier_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc, router_pb2_grpc

T = TypeVar("T")


class AsyncClient:
    def __init__(
        self,
        orders: grpc.aio.Channel,
        notifier: grpc.aio.Channel | None = None,
        router: grpc.aio.Channel | None = None,
        *,
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """A client over channels you made (``Client.connect`` makes them); one channel may serve all three."""
        self._channels = [c for c in (orders, notifier, router) if c is not None]
        self.orders = orders_pb2_grpc.OrdersStub(orders)
        self.notifier = notifier_pb2_grpc.NotifierStub(notifier or orders)
        self.router = router_pb2_grpc.RouterStub(router or orders)
        self.api_key = api_key
        self.admin_token = admin_token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    @classmethod
    def connect(
        cls,
        orders: str = "127.0.0.1:50051",
        notifier: str = "127.0.0.1:50054",
        router: str = "127.0.0.1:50052",
        **options: Any,
    ) -> AsyncClient:
        """Channels to each service (made here; call inside a running event loop)."""
        return cls(
            grpc.aio.insecure_channel(orders),
            grpc.aio.insecure_channel(notifier),
            grpc.aio.insecure_channel(router),
            **options,
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the engine's calls

    async def _call(
        self, method: str, call: Callable[[float, Metadata], Awaitable[T]], metadata: Metadata, timeout: float | None
    ) -> T:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        delays = self.retry.delays() if method in SAFE else iter(())
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await call(max(remaining, 0.001), metadata)
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                delay = next(delays, None) if err.code() in self.retry.retryable else None
                if delay is None or time.monotonic() + delay >= deadline:
                    raise error from None
                await self._sleep(delay)

    async def create_order(
        self,
        token_in: str,
        token_out: str,
        amount_in: Amount,
        slippage: Amount = "0.01",
        *,
        type: str = "market",
        idempotency_key: str | None = None,
        timeout: float | None = None,
        **extra: Amount | str,
    ) -> CreatedOrder:
        """Submit an order (tokens as mints or symbols). The same idempotency key returns the same order."""
        request = _common.create_request(token_in, token_out, amount_in, slippage, type, idempotency_key, extra)
        resp = await self._call(
            "CreateOrder",
            lambda t, md: self.orders.CreateOrder(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return CreatedOrder(Order.from_proto(resp.order), resp.created, request.idempotency_key)

    async def get_order(self, order_id: str, *, events: bool = True, timeout: float | None = None) -> Order:
        request = orders_pb2.GetOrderRequest(order_id=order_id, include_events=events)
        resp = await self._call(
            "GetOrder",
            lambda t, md: self.orders.GetOrder(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return Order.from_proto(resp.order, resp.events)

    async def list_orders(
        self,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        live: bool = False,
        timeout: float | None = None,
    ) -> OrderPage:
        request = _common.list_request(status, limit, cursor, live)
        resp = await self._call(
            "ListOrders",
            lambda t, md: self.orders.ListOrders(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return OrderPage(tuple(Order.from_proto(o) for o in resp.orders), resp.next_cursor or None)

    async def cancel_order(self, order_id: str, *, timeout: float | None = None) -> Order:
        """Cancel while pending or waiting; Conflict (NOT_CANCELLABLE) once routing. Never retried."""
        request = orders_pb2.CancelOrderRequest(order_id=order_id)
        resp = await self._call(
            "CancelOrder",
            lambda t, md: self.orders.CancelOrder(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return Order.from_proto(resp.order)

    async def watch(self, order_id: str) -> AsyncIterator[OrderEvent]:
        """The order's current state (a snapshot), then every later event, until the terminal one.

        A broken stream is reopened (UNAVAILABLE, with the retry policy); events already yielded are skipped,
        so the sequence has no duplicate (a snapshot may stand in for events missed meanwhile).
        """
        last = 0
        delays = self.retry.delays()
        while True:
            call = self.notifier.Watch(
                notifier_pb2.WatchRequest(order_id=order_id), metadata=_common.key_metadata(self.api_key)
            )
            try:
                async for message in call:
                    event = OrderEvent.from_proto(message)
                    if event.seq <= last:
                        continue
                    last = event.seq
                    delays = self.retry.delays()
                    yield event
                    if event.terminal:
                        return
                return
            except grpc.RpcError as err:
                delay = next(delays, None) if err.code() in self.retry.retryable else None
                if delay is None:
                    raise from_rpc_error(err) from None
                await self._sleep(delay)
            finally:
                call.cancel()

    async def open_mine(self) -> MineStream:
        """Like ``watch_mine``, but returns once the stream is live: an order created after it is in the stream."""
        call = self.notifier.WatchMine(notifier_pb2.WatchMineRequest(), metadata=_common.key_metadata(self.api_key))
        await call.initial_metadata()
        if call.done() and await call.code() != grpc.StatusCode.OK:
            try:
                await call.read()
            except grpc.RpcError as err:
                raise from_rpc_error(err) from None
        return MineStream(call)

    async def watch_mine(self) -> AsyncIterator[OrderEvent]:
        """Every event of the key's orders (every order with AUTH=off), new ones included; never ends by itself.

        The first ``__anext__`` returns once the stream is live: an order created after it is in the stream.
        """
        call = self.notifier.WatchMine(notifier_pb2.WatchMineRequest(), metadata=_common.key_metadata(self.api_key))
        try:
            async for message in call:
                yield OrderEvent.from_proto(message)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

    async def quote(
        self,
        token_in: str,
        token_out: str,
        amount_in: Amount,
        slippage: Amount = "0.01",
        *,
        timeout: float | None = None,
    ) -> Quotes:
        """Both venues' quotes and the route the router would choose now (Router/GetQuotes)."""
        request = _common.quote_request(token_in, token_out, amount_in, slippage)
        resp = await self._call(
            "GetQuotes",
            lambda t, md: self.router.GetQuotes(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return Quotes.from_proto(resp)

    async def whoami(self, *, timeout: float | None = None) -> Caller:
        resp = await self._call(
            "WhoAmI",
            lambda t, md: self.orders.WhoAmI(orders_pb2.WhoAmIRequest(), timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return Caller(resp.kind, resp.auth, ApiKey.from_proto(resp.key) if resp.HasField("key") else None)

    # -- admin (the internal token, ``admin_token``)

    async def create_key(self, name: str, *, quota_per_min: int = 0, timeout: float | None = None) -> NewApiKey:
        """A new API key; its secret is in the answer only. Never retried (a retry would make a second key)."""
        request = orders_pb2.CreateApiKeyRequest(name=name, quota_per_min=quota_per_min)
        resp = await self._call(
            "CreateApiKey",
            lambda t, md: self.orders.CreateApiKey(request, timeout=t, metadata=md),
            _common.admin_metadata(self.admin_token),
            timeout,
        )
        return NewApiKey(ApiKey.from_proto(resp.key), resp.secret)

    async def list_keys(self, *, include_revoked: bool = False, timeout: float | None = None) -> list[ApiKey]:
        request = orders_pb2.ListApiKeysRequest(include_revoked=include_revoked)
        resp = await self._call(
            "ListApiKeys",
            lambda t, md: self.orders.ListApiKeys(request, timeout=t, metadata=md),
            _common.admin_metadata(self.admin_token),
            timeout,
        )
        return [ApiKey.from_proto(k) for k in resp.keys]

    async def revoke_key(self, key: str, *, timeout: float | None = None) -> ApiKey:
        """Revoke by id or by the name of an active key (idempotent by id)."""
        request = orders_pb2.RevokeApiKeyRequest(key=key)
        resp = await self._call(
            "RevokeApiKey",
            lambda t, md: self.orders.RevokeApiKey(request, timeout=t, metadata=md),
            _common.admin_metadata(self.admin_token),
            timeout,
        )
        return ApiKey.from_proto(resp.key)


class MineStream:
    """Every event of the key's orders, from a stream already live (``AsyncClient.open_mine``)."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> MineStream:
        return self

    async def __anext__(self) -> OrderEvent:
        try:
            message = await self._call.read()
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return OrderEvent.from_proto(message)

    async def aclose(self) -> None:
        self._call.cancel()


__all__ = ["AsyncClient", "DexError", "MineStream"]
