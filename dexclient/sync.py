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
from dexclient._common import DEFAULT_TIMEOUT_S, SAFE, Amount, RetryPolicy
from dexclient.errors import DexError, from_rpc_error
from dexclient.models import ApiKey, Caller, CreatedOrder, NewApiKey, Order, OrderEvent, OrderPage, Quotes
from dexengine.v1 import notifier_pb2, notifier_pb2_grpc, orders_pb2_grpc, router_pb2_grpc

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

    def _run(self, call: _common.Call[T], timeout: float | None) -> T:
        """Make ``call``, retrying a safe one on a retryable status within its deadline; read its answer."""
        stub = self.orders if call.service == "orders" else self.router
        method = getattr(stub, call.method)
        metadata = _common.admin_metadata(self.admin_token) if call.admin else _common.key_metadata(self.api_key)
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        delays = self.retry.delays() if call.method in SAFE else iter(())
        while True:
            remaining = deadline - time.monotonic()
            try:
                return call.read(method(call.request, timeout=max(remaining, 0.001), metadata=metadata))
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
        return self._run(
            _common.create_order(token_in, token_out, amount_in, slippage, type, idempotency_key, extra), timeout
        )

    def get_order(self, order_id: str, *, events: bool = True, timeout: float | None = None) -> Order:
        return self._run(_common.get_order(order_id, events), timeout)

    def list_orders(
        self,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        live: bool = False,
        timeout: float | None = None,
    ) -> OrderPage:
        return self._run(_common.list_orders(status, limit, cursor, live), timeout)

    def cancel_order(self, order_id: str, *, timeout: float | None = None) -> Order:
        """Cancel while pending or waiting; Conflict (NOT_CANCELLABLE) once routing. Never retried."""
        return self._run(_common.cancel_order(order_id), timeout)

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
        return self._run(_common.quote(token_in, token_out, amount_in, slippage), timeout)

    def whoami(self, *, timeout: float | None = None) -> Caller:
        return self._run(_common.whoami(), timeout)

    def create_key(self, name: str, *, quota_per_min: int = 0, timeout: float | None = None) -> NewApiKey:
        """A new API key; its secret is in the answer only. Never retried (a retry would make a second key)."""
        return self._run(_common.create_key(name, quota_per_min), timeout)

    def list_keys(self, *, include_revoked: bool = False, timeout: float | None = None) -> list[ApiKey]:
        return self._run(_common.list_keys(include_revoked), timeout)

    def revoke_key(self, key: str, *, timeout: float | None = None) -> ApiKey:
        """Revoke by id or by the name of an active key (idempotent by id)."""
        return self._run(_common.revoke_key(key), timeout)


__all__ = ["Client", "DexError"]
