"""router over real gRPC against a real localnet: pools read from accounts, quotes under a deadline, decisions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import grpc
import pytest

from dexengine.v1 import router_pb2, router_pb2_grpc
from services.common import config
from services.common.errors import parse_rpc_error
from services.router.__main__ import RouterComponent
from tests.support.client import SOL, USDC
from tests.support.inprocess import serve
from tests.support.mesh import Mesh, detached

BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"
MSOL = "mSoLzYCxHdYgdzU16g5QSh3i5K3z3KZK7ytfqcJm7So"


async def router_stub(settings: config.Settings) -> AsyncIterator[router_pb2_grpc.RouterAsyncStub]:
    async with serve(RouterComponent(settings)) as target, grpc.aio.insecure_channel(target) as channel:
        yield router_pb2_grpc.RouterStub(channel)


@pytest.fixture
def still(localnet: Mesh) -> config.Settings:
    return replace(
        detached(config.Settings()),
        quote_latency_ms=(1, 3),
        solana_rpc_url=localnet.rpc_url,
        solana_ws_url=localnet.ws_url,
    )


@pytest.fixture
async def router(still: config.Settings) -> AsyncIterator[router_pb2_grpc.RouterAsyncStub]:
    async for stub in router_stub(still):
        yield stub


@pytest.fixture
async def slow_meteora(still: config.Settings) -> AsyncIterator[router_pb2_grpc.RouterAsyncStub]:
    async for stub in router_stub(replace(still, venue_latency_ms={"meteora": (900, 900)}, quote_deadline_ms=200)):
        yield stub


def quotes_request(amount: str, token_in: str = SOL, token_out: str = USDC) -> router_pb2.GetQuotesRequest:
    return router_pb2.GetQuotesRequest(token_in=token_in, token_out=token_out, amount_in=amount, slippage="0.01")


async def test_each_venue_quoted_with_impact_minimum_and_expiry(router: router_pb2_grpc.RouterAsyncStub) -> None:
    resp = await router.GetQuotes(quotes_request("1"), timeout=5)
    by_venue = {q.venue: q for q in resp.quotes}
    assert set(by_venue) == {"raydium", "meteora"}
    ray, met = by_venue["raydium"], by_venue["meteora"]
    assert ray.amount_out == "149.623507" and ray.fee == "0.0025"
    assert met.amount_out == "149.860243" and met.fee == "0.001"
    assert Decimal(ray.min_amount_out) == Decimal("148.127271")  # floor(149.623507 * 0.99) in base units
    assert Decimal(ray.price_impact) > 0 and Decimal(ray.spot_price) == Decimal(150)
    assert ray.quote_id != met.quote_id and ray.expires_at_ms > 0
    assert resp.decision.venue == "meteora" and len(resp.decision.legs) == 1
    assert resp.decision.reason == "meteora: +0.16 % net vs raydium at 1 SOL"
    assert resp.decision.amount_out == met.amount_out


async def test_a_large_order_is_split(router: router_pb2_grpc.RouterAsyncStub) -> None:
    resp = await router.GetQuotes(quotes_request("300"), timeout=5)
    d = resp.decision
    assert d.venue == "split" and {leg.venue for leg in d.legs} == {"raydium", "meteora"}
    assert sum(Decimal(leg.amount_in) for leg in d.legs) == 300
    assert Decimal(d.amount_out) > max(Decimal(q.amount_out) for q in resp.quotes)
    assert d.reason.startswith("split ")


async def test_a_venue_missing_the_deadline_is_excluded_and_named(
    slow_meteora: router_pb2_grpc.RouterAsyncStub,
) -> None:
    resp = await slow_meteora.GetQuotes(quotes_request("1"), timeout=5)
    assert [q.venue for q in resp.quotes] == ["raydium"]
    assert resp.excluded["meteora"] == "timed out after 200 ms"
    assert resp.decision.venue == "raydium"
    assert resp.decision.reason.endswith("; meteora excluded: timed out after 200 ms")
    assert 200 <= resp.simulated_ms < 900


async def test_no_pool_is_a_final_no_route(router: router_pb2_grpc.RouterAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.GetQuotes(quotes_request("1", BONK, MSOL), timeout=5)
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.NOT_FOUND and info.reason == "NO_ROUTE"


async def test_a_size_no_pool_can_fill_is_final(router: router_pb2_grpc.RouterAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.GetQuotes(quotes_request("10000000", MSOL, SOL), timeout=5)  # one DLMM pool only
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "INSUFFICIENT_LIQUIDITY"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (router_pb2.GetQuotesRequest(token_in=SOL, token_out=USDC, amount_in="-1"), "amount_in"),
        (router_pb2.GetQuotesRequest(token_in=SOL, token_out=USDC, amount_in="1e-12"), "amount_in"),
        (router_pb2.GetQuotesRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="2"), "slippage"),
    ],
)
async def test_bad_input_names_the_field(
    router: router_pb2_grpc.RouterAsyncStub, request_: router_pb2.GetQuotesRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.GetQuotes(request_, timeout=5)
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.violations] == [field]


async def test_two_replicas_quote_the_same_pools_identically(still: config.Settings) -> None:
    """The router holds no market: two replicas fed by one cluster give the same answer."""
    answers = []
    for _ in range(2):
        async for stub in router_stub(still):
            resp = await stub.GetQuotes(quotes_request("300"), timeout=5)
            answers.append(([(q.venue, q.amount_out, q.pool) for q in resp.quotes], resp.decision.amount_out))
    assert answers[0] == answers[1]
    assert all(pool for quotes, _ in answers for _, _, pool in quotes), "every quote names its pool account"


async def test_check_route_answers_from_the_pool_accounts(router: router_pb2_grpc.RouterAsyncStub) -> None:
    ok = await router.CheckRoute(router_pb2.CheckRouteRequest(token_in=SOL, token_out=USDC, amount_in="1"), timeout=5)
    assert len(ok.pools) == 2 and (ok.decimals_in, ok.decimals_out) == (9, 6)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.CheckRoute(router_pb2.CheckRouteRequest(token_in=BONK, token_out=MSOL, amount_in="1"), timeout=5)
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.NOT_FOUND and [v.field for v in info.violations] == ["token_out"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.CheckRoute(
            router_pb2.CheckRouteRequest(token_in=USDC, token_out=SOL, amount_in="0.0000001"), timeout=5
        )
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT and [v.field for v in info.violations] == ["amount_in"]
