"""Orders/Calls and Router/Calls: unary calls as messages of one stream, against real servers.

The oracle is the unary method of the same server (the same answer, the same status) and PostgreSQL
(what a call created exists exactly once).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import asyncpg
import grpc
import pytest

from dexengine.v1 import orders_pb2, orders_pb2_grpc, router_pb2, router_pb2_grpc
from services.common import config
from services.common.errors import parse_rpc_error
from services.common.grpc_server import SERVER_OPTIONS
from services.common.mesh_calls import OrdersCalls, RouterCalls
from services.orders.__main__ import OrdersComponent
from services.router.__main__ import RouterComponent
from tests.support.client import SOL, USDC
from tests.support.grpc_tasks import request_readers
from tests.support.inprocess import serve
from tests.support.mesh import Mesh, detached, free_port
from tests.support.transitions import CHAIN, advance, request
from tests.support.waiting import bounded, eventually


def market(amount: str) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in=amount, slippage="0.01")


def unique_amounts(count: int) -> list[str]:
    """Amounts no other test uses: each names the one order a call created."""
    base = uuid.uuid4().int % 10**6
    return [f"1.{base:06d}{i:04d}" for i in range(count)]


@pytest.fixture
async def calls(orders_server: str) -> AsyncIterator[OrdersCalls]:
    async with grpc.aio.insecure_channel(orders_server) as channel:
        client = OrdersCalls(channel)
        yield client
        await client.aclose()


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_calls_answer_as_the_unary_methods(calls: OrdersCalls, orders: orders_pb2_grpc.OrdersAsyncStub) -> None:
    amounts = unique_amounts(30)
    created = await asyncio.gather(*(calls.CreateOrder(market(a), timeout=5) for a in amounts))
    assert [Decimal(c.order.amount_in) for c in created] == [Decimal(a) for a in amounts], "each call its own answer"
    for answer in created:
        assert answer.created
        unary = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=answer.order.id), timeout=5)
        assert unary.order == answer.order
    ids = [c.order.id for c in created[:10]]
    await asyncio.gather(*(advance(calls, order_id, 0) for order_id in ids))  # type: ignore[arg-type]
    for order_id in ids:
        read = await calls.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, include_events=True), timeout=5)
        unary = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id, include_events=True), timeout=5)
        assert read == unary
        assert [e.seq for e in read.events] == list(range(1, len(CHAIN) + 1))


async def test_a_refused_call_ends_as_the_unary_call(
    calls: OrdersCalls, orders: orders_pb2_grpc.OrdersAsyncStub
) -> None:
    pending = (await orders.CreateOrder(market(unique_amounts(1)[0]), timeout=5)).order
    cases: list[tuple[str, Any]] = [
        ("CreateOrder", market("-1")),
        ("CreateOrder", orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", type="stop")),
        ("GetOrder", orders_pb2.GetOrderRequest(order_id=str(uuid.uuid4()))),
        ("GetOrder", orders_pb2.GetOrderRequest(order_id="not-an-id")),
        ("Transition", request(pending.id, "routing", "building")),  # a lost compare-and-set
    ]
    for method, req in cases:
        unary = await failure(getattr(orders, method)(req, timeout=5))
        streamed = await failure(getattr(calls, method)(req, timeout=5))
        assert streamed.code() == unary.code(), method
        assert streamed.details() == unary.details(), method
        assert parse_rpc_error(streamed) == parse_rpc_error(unary), method
        assert parse_rpc_error(streamed).reason or parse_rpc_error(streamed).violations, "the rich details travel"
    read = await calls.GetOrder(orders_pb2.GetOrderRequest(order_id=pending.id), timeout=5)
    assert read.order.status == pending.status, "the stream goes on after refusals"


async def test_a_call_past_its_deadline_fails_alone(
    calls: OrdersCalls, orders: orders_pb2_grpc.OrdersAsyncStub
) -> None:
    order = (await calls.CreateOrder(market(unique_amounts(1)[0]), timeout=5)).order
    late = await failure(calls.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id), timeout=0.000001))
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    read = await calls.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id), timeout=5)
    assert read.order.id == order.id


class WithoutCalls:
    """What an orders server of an older version serves: every method but Calls."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The same methods come again through add_registered_method_handlers."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        older = {name: handler for name, handler in handlers.items() if name != "Calls"}
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, older),))


async def test_a_server_without_calls_gets_unary_calls(
    settings: config.Settings, orders_server: str, pg: asyncpg.Connection
) -> None:
    component = OrdersComponent(settings)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    try:
        async with bounded(30, "starting the server without Calls"):
            await component.start(WithoutCalls(server))  # type: ignore[arg-type]
            port = free_port()
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            async with bounded(30, "the refused Calls stream"):
                no_stream = await failure(orders_pb2_grpc.OrdersStub(channel).Calls(iter(()), timeout=10).read())
            assert no_stream.code() == grpc.StatusCode.UNIMPLEMENTED, "this server really has no Calls"
            calls = OrdersCalls(channel)
            amount = unique_amounts(1)[0]
            created = await calls.CreateOrder(market(amount), timeout=5)
            read = await calls.GetOrder(orders_pb2.GetOrderRequest(order_id=created.order.id), timeout=5)
            # The refused stream's request iterator ended with it: no grpc task is left waiting inside it.
            refused = calls.stream._stream
            assert refused is not None and refused.task.done()
            await eventually(lambda: not request_readers(refused), timeout=2)
            async with bounded(30, "closing the Calls client"):
                await calls.aclose()
        assert read.order == created.order
        assert await pg.fetchval("SELECT count(*) FROM orders WHERE amount_in = $1", Decimal(amount)) == 1
    finally:
        async with bounded(30, "stopping the server and its component"):
            await server.stop(None)
            await component.close()


async def test_a_stopping_server_hands_its_calls_on(settings: config.Settings, pg: asyncpg.Connection) -> None:
    """Replica A stops (SIGTERM's sequence) under a stream of CreateOrders without idempotency keys: every
    call is answered, by A before it stops or by B, and each created exactly one order."""
    first, second = OrdersComponent(settings), OrdersComponent(settings)
    servers = []
    try:
        ports = []
        for component in (first, second):
            server = grpc.aio.server(options=SERVER_OPTIONS)
            await component.start(server)
            ports.append(free_port())
            server.add_insecure_port(f"127.0.0.1:{ports[-1]}")
            await server.start()
            servers.append(server)
        amounts = unique_amounts(240)
        answers: list[orders_pb2.CreateOrderResponse] = []
        async with grpc.aio.insecure_channel(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}") as channel:
            calls = OrdersCalls(channel)

            under_way = asyncio.Event()

            async def client(share: list[str]) -> None:
                for amount in share:
                    answers.append(await calls.CreateOrder(market(amount), timeout=10))
                    if len(answers) >= 40:
                        under_way.set()
                    await asyncio.sleep(0.005)

            clients = [asyncio.create_task(client(amounts[i::12])) for i in range(12)]
            await asyncio.wait_for(under_way.wait(), 10)
            await first.stop_intake()  # as grpc_server.serve on SIGTERM: the streams drain, then the server stops
            await servers[0].stop(2)
            await asyncio.gather(*clients)
            await calls.aclose()
        assert len(answers) == len(amounts)
        assert len({a.order.id for a in answers}) == len(amounts)
        counts = await pg.fetch(
            "SELECT amount_in, count(*) AS n FROM orders WHERE amount_in = ANY($1::numeric[]) GROUP BY amount_in",
            [Decimal(a) for a in amounts],
        )
        assert sorted(Decimal(r["amount_in"]) for r in counts) == sorted(Decimal(a) for a in amounts)
        assert {r["n"] for r in counts} == {1}, "no call lost, none handled twice"
    finally:
        for server in servers:
            await server.stop(None)
        for component in (first, second):
            await component.close()


@pytest.fixture
async def slow_meteora(localnet: Mesh) -> AsyncIterator[tuple[RouterCalls, router_pb2_grpc.RouterAsyncStub]]:
    """A router whose Meteora answers in 900 ms (quote deadline 2 s): the calls' own deadlines decide."""
    settings = replace(
        detached(config.Settings()),
        quote_latency_ms=(1, 3),
        venue_latency_ms={"meteora": (900, 900)},
        quote_deadline_ms=2000,
        solana_rpc_url=localnet.rpc_url,
        solana_ws_url=localnet.ws_url,
    )
    async with serve(RouterComponent(settings)) as target, grpc.aio.insecure_channel(target) as channel:
        client = RouterCalls(channel)
        yield client, router_pb2_grpc.RouterStub(channel)
        await client.aclose()


async def test_the_router_sees_each_calls_deadline(
    slow_meteora: tuple[RouterCalls, router_pb2_grpc.RouterAsyncStub],
) -> None:
    """A call with 400 ms left gets Raydium alone (Meteora timed out at the call's deadline), as the unary call."""
    calls, stub = slow_meteora
    req = router_pb2.GetQuotesRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01")
    streamed = await calls.GetQuotes(req, timeout=0.4)
    unary = await stub.GetQuotes(req, timeout=0.4)
    for resp in (streamed, unary):
        assert [q.venue for q in resp.quotes] == ["raydium"]
        waited = re.fullmatch(r"timed out after (\d+) ms", resp.excluded["meteora"])
        assert waited is not None, resp.excluded
        # What the call had left when the router read it, less its 50-ms margin: never its own 2-s deadline.
        assert 0 < int(waited.group(1)) <= 350, resp.excluded
        assert resp.decision.venue == "raydium"
    open_pair = router_pb2.CheckRouteRequest(token_in=SOL, token_out=USDC, amount_in="1")
    assert await calls.CheckRoute(open_pair, timeout=5) == await stub.CheckRoute(open_pair, timeout=5)
    no_pair = router_pb2.CheckRouteRequest(token_in=SOL, token_out=SOL, amount_in="1")
    refused = await failure(calls.CheckRoute(no_pair, timeout=5))
    assert parse_rpc_error(refused) == parse_rpc_error(await failure(stub.CheckRoute(no_pair, timeout=5)))
