"""The hot methods of Orders and Router as calls on one ``Calls`` stream per client (services.common.call_stream).

Each class has the unary stub's signature for its methods (``request, timeout=, metadata=``), answers with
the same response and fails with the same ``grpc.aio.AioRpcError``, so a caller swaps one for the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from dexengine.v1 import orders_pb2, orders_pb2_grpc, router_pb2, router_pb2_grpc
from services.common.call_stream import CallStream

# Initial metadata of a WatchMany stream whose notifier reads requests carried in ``WatchManyRequest.more``.
WATCH_MANY_MORE = "dex-watch-many-more"
ORDERS = "dexengine.v1.Orders"
ROUTER = "dexengine.v1.Router"
Metadata = Sequence[tuple[str, str]]


class OrdersCalls:
    """Orders' CreateOrder, GetOrder and Transition over one stream.

    ``create_order_keyed``: every CreateOrder carries an idempotency key, so it may be sent again on
    UNAVAILABLE (as the channel's retry policy says for unary calls, services.common.grpc_client)."""

    def __init__(self, channel: grpc.aio.Channel, *, create_order_keyed: bool = False) -> None:
        stub = orders_pb2_grpc.OrdersStub(channel)
        self.stream = CallStream(
            ORDERS,
            stub.Calls,
            orders_pb2.OrdersCall,
            orders_pb2.OrdersCalls,
            unary={"create_order": stub.CreateOrder, "get_order": stub.GetOrder, "transition": stub.Transition},
            retryable=frozenset({"get_order", *(("create_order",) if create_order_keyed else ())}),
        )

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, timeout: float | None = None, metadata: Metadata = ()
    ) -> orders_pb2.CreateOrderResponse:
        response: orders_pb2.CreateOrderResponse = await self.stream.call("create_order", request, timeout, metadata)
        return response

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, timeout: float | None = None, metadata: Metadata = ()
    ) -> orders_pb2.GetOrderResponse:
        response: orders_pb2.GetOrderResponse = await self.stream.call("get_order", request, timeout, metadata)
        return response

    async def Transition(
        self, request: orders_pb2.TransitionRequest, timeout: float | None = None, metadata: Metadata = ()
    ) -> orders_pb2.TransitionResponse:
        response: orders_pb2.TransitionResponse = await self.stream.call("transition", request, timeout, metadata)
        return response

    async def aclose(self) -> None:
        await self.stream.aclose()


class RouterCalls:
    """Router's GetQuotes and CheckRoute over one stream (both reads: sent again on UNAVAILABLE)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub = router_pb2_grpc.RouterStub(channel)
        self.stream = CallStream(
            ROUTER,
            stub.Calls,
            router_pb2.RouterCall,
            router_pb2.RouterCalls,
            unary={"get_quotes": stub.GetQuotes, "check_route": stub.CheckRoute},
            retryable=frozenset({"get_quotes", "check_route"}),
        )

    async def GetQuotes(
        self, request: router_pb2.GetQuotesRequest, timeout: float | None = None, metadata: Metadata = ()
    ) -> router_pb2.GetQuotesResponse:
        response: router_pb2.GetQuotesResponse = await self.stream.call("get_quotes", request, timeout, metadata)
        return response

    async def CheckRoute(
        self, request: router_pb2.CheckRouteRequest, timeout: float | None = None, metadata: Metadata = ()
    ) -> router_pb2.CheckRouteResponse:
        response: router_pb2.CheckRouteResponse = await self.stream.call("check_route", request, timeout, metadata)
        return response

    async def aclose(self) -> None:
        await self.stream.aclose()
