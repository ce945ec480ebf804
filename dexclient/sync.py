"""The blocking client of the engine's gRPC API.

    from dexclient import Client

    with Client.connect(api_key="dex_…") as client:
        placed = client.create_order("SOL", "USDC", "1.5", slippage="0.01")
        for event in client.watch(placed.order.id):
            print(event.seq, event.status)

Every call has a deadline (``timeout``, 10 s by default, across its retries).
Calls that are safe to repeat are retried on UNAVAILABLE with exponential
backoff and jitter: reads, and CreateOrder, which always carries an
idempotency key (one is made when none is given), so a retry after a lost
answer returns the same order. ``watch`` reconnects the same way and skips
what it already yielded (by ``seq``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from dexclient import _common
from dexclient._common import DEFAULT_TIMEOUT_S, SAFE, Amount, Metadata, RetryPolicy
from dexclient.errors import DexError, from_rpc_error
from dexclient.models import ApiKey, Caller, CreatedOrder, NewApiKey, Order, OrderEvent, OrderPage, Quotes
from dexengine.v1 import notifier_pb2, notifier_pb2_grpc, orders_pb2, orders_pb2_grpc, router_pb2_grpc

T = TypeVar("T")


class Client:
    def __init__(
        self,
        orders: grpc.Channel,
        notifier: grpc.Channel | None = None,
        router: grpc.Channel | None = None,
        *,
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
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
    ) -> Client:
        return cls(
            grpc.insecure_channel(orders),
            grpc.insecure_channel(notifier),
            grpc.insecure_channel(router),
            **options,
        )

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the engine's calls

    def _call(self, method: str, call: Callable[[float, Metadata], T], metadata: Metadata, timeout: float | None) -> T:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        delays = self.retry.delays() if method in SAFE else iter(())
        while True:
            remaining = deadline - time.monotonic()
            try:
                return call(max(remaining, 0.001), metadata)
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                delay = next(delays, None) if err.code() in self.retry.retryable else None
                if delay is None or time.monotonic() + delay >= deadline:
                    raise error from None
                self._sleep(delay)

    def create_order(
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
        resp = self._call(
            "CreateOrder",
            lambda t, md: self.orders.CreateOrder(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return CreatedOrder(Order.from_proto(resp.order), resp.created, request.idempotency_key)

    def get_order(self, order_id: str, *, events: bool = True, timeout: float | None = None) -> Order:
        request = orders_pb2.GetOrderRequest(order_id=order_id, include_events=events)
        resp = self._call(
            "GetOrder",
            lambda t, md: self.orders.GetOrder(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return Order.from_proto(resp.order, resp.events)

    def list_orders(
        self,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        live: bool = False,
        timeout: float | None = None,
    ) -> OrderPage:
        request = _common.list_request(status, limit, cursor, live)
        resp = self._call(
            "ListOrders",
            lambda t, md: self.orders.ListOrders(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return OrderPage(tuple(Order.from_proto(o) for o in resp.orders), resp.next_cursor or None)

    def cancel_order(self, order_id: str, *, timeout: float | None = None) -> Order:
        """Cancel while pending or waiting; Conflict (NOT_CANCELLABLE) once routing. Never retried."""
        request = orders_pb2.CancelOrderRequest(order_id=order_id)
        resp = self._call(
            "CancelOrder",
            lambda t, md: self.orders.CancelOrder(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return Order.from_proto(resp.order)

    def watch(self, order_id: str) -> Iterator[OrderEvent]:
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
                for message in call:
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
                self._sleep(delay)
            finally:
                call.cancel()

    def watch_mine(self) -> Iterator[OrderEvent]:
        """Every event of the key's orders (every order with AUTH=off), new ones included; never ends by itself."""
        call = self.notifier.WatchMine(notifier_pb2.WatchMineRequest(), metadata=_common.key_metadata(self.api_key))
        try:
            for message in call:
                yield OrderEvent.from_proto(message)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

    def quote(
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
        resp = self._call(
            "GetQuotes",
            lambda t, md: self.router.GetQuotes(request, timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return Quotes.from_proto(resp)

    def whoami(self, *, timeout: float | None = None) -> Caller:
        resp = self._call(
            "WhoAmI",
            lambda t, md: self.orders.WhoAmI(orders_pb2.WhoAmIRequest(), timeout=t, metadata=md),
            _common.key_metadata(self.api_key),
            timeout,
        )
        return Caller(resp.kind, resp.auth, ApiKey.from_proto(resp.key) if resp.HasField("key") else None)

    # -- admin (the internal token, ``admin_token``)

    def create_key(self, name: str, *, quota_per_min: int = 0, timeout: float | None = None) -> NewApiKey:
        """A new API key; its secret is in the answer only. Never retried (a retry would make a second key)."""
        request = orders_pb2.CreateApiKeyRequest(name=name, quota_per_min=quota_per_min)
        resp = self._call(
            "CreateApiKey",
            lambda t, md: self.orders.CreateApiKey(request, timeout=t, metadata=md),
            _common.admin_metadata(self.admin_token),
            timeout,
        )
        return NewApiKey(ApiKey.from_proto(resp.key), resp.secret)

    def list_keys(self, *, include_revoked: bool = False, timeout: float | None = None) -> list[ApiKey]:
        request = orders_pb2.ListApiKeysRequest(include_revoked=include_revoked)
        resp = self._call(
            "ListApiKeys",
            lambda t, md: self.orders.ListApiKeys(request, timeout=t, metadata=md),
            _common.admin_metadata(self.admin_token),
            timeout,
        )
        return [ApiKey.from_proto(k) for k in resp.keys]

    def revoke_key(self, key: str, *, timeout: float | None = None) -> ApiKey:
        """Revoke by id or by the name of an active key (idempotent by id)."""
        request = orders_pb2.RevokeApiKeyRequest(key=key)
        resp = self._call(
            "RevokeApiKey",
            lambda t, md: self.orders.RevokeApiKey(request, timeout=t, metadata=md),
            _common.admin_metadata(self.admin_token),
            timeout,
        )
        return ApiKey.from_proto(resp.key)


__all__ = ["Client", "DexError"]
