"""The asyncio client of the engine's gRPC API (grpc.aio), the same calls as ``dexclient.Client``.

    from dexclient import AsyncClient

    async with AsyncClient.connect(api_key="dex_…") as client:
        placed = await client.create_order("SOL", "USDC", "1.5", slippage="0.01")
        async for event in client.watch(placed.order.id):
            print(event.seq, event.status)

Deadlines, retries and reconnecting watches behave as in ``dexclient.Client``;
both clients run the calls described once in ``dexclient._common``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dexclient import _common
from dexclient._common import DEFAULT_TIMEOUT_S, SAFE, Amount, RetryPolicy
from dexclient.errors import DexError, from_rpc_error
from dexclient.models import ApiKey, Caller, CreatedOrder, NewApiKey, Order, OrderEvent, OrderPage, Quotes
from dexengine.v1 import notifier_pb2, notifier_pb2_grpc, orders_pb2_grpc, router_pb2_grpc

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

    async def _run(self, call: _common.Call[T], timeout: float | None) -> T:
        """Make ``call``, retrying a safe one on a retryable status within its deadline; read its answer."""
        stub = self.orders if call.service == "orders" else self.router
        method = getattr(stub, call.method)
        metadata = _common.admin_metadata(self.admin_token) if call.admin else _common.key_metadata(self.api_key)
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        delays = self.retry.delays() if call.method in SAFE else iter(())
        while True:
            remaining = deadline - time.monotonic()
            try:
                return call.read(await method(call.request, timeout=max(remaining, 0.001), metadata=metadata))
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
        return await self._run(
            _common.create_order(token_in, token_out, amount_in, slippage, type, idempotency_key, extra), timeout
        )

    async def get_order(self, order_id: str, *, events: bool = True, timeout: float | None = None) -> Order:
        return await self._run(_common.get_order(order_id, events), timeout)

    async def list_orders(
        self,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        live: bool = False,
        timeout: float | None = None,
    ) -> OrderPage:
        return await self._run(_common.list_orders(status, limit, cursor, live), timeout)

    async def cancel_order(self, order_id: str, *, timeout: float | None = None) -> Order:
        """Cancel while pending or waiting; Conflict (NOT_CANCELLABLE) once routing. Never retried."""
        return await self._run(_common.cancel_order(order_id), timeout)

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
        return await self._run(_common.quote(token_in, token_out, amount_in, slippage), timeout)

    async def whoami(self, *, timeout: float | None = None) -> Caller:
        return await self._run(_common.whoami(), timeout)

    async def create_key(self, name: str, *, quota_per_min: int = 0, timeout: float | None = None) -> NewApiKey:
        """A new API key; its secret is in the answer only. Never retried (a retry would make a second key)."""
        return await self._run(_common.create_key(name, quota_per_min), timeout)

    async def list_keys(self, *, include_revoked: bool = False, timeout: float | None = None) -> list[ApiKey]:
        return await self._run(_common.list_keys(include_revoked), timeout)

    async def revoke_key(self, key: str, *, timeout: float | None = None) -> ApiKey:
        """Revoke by id or by the name of an active key (idempotent by id)."""
        return await self._run(_common.revoke_key(key), timeout)


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
