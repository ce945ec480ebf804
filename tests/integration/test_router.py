"""router over real gRPC: quotes in parallel under a deadline, decisions, swaps."""

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

BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"
MSOL = "mSoLzYCxHdYgdzU16g5QSh3i5K3z3KZK7ytfqcJm7So"


async def router_stub(settings: config.Settings) -> AsyncIterator[router_pb2_grpc.RouterStub]:
    async with serve(RouterComponent(settings)) as target, grpc.aio.insecure_channel(target) as channel:
        yield router_pb2_grpc.RouterStub(channel)


STILL = replace(config.Settings(), quote_latency_ms=(1, 3), market_drift=False)


@pytest.fixture
async def router() -> AsyncIterator[router_pb2_grpc.RouterStub]:
    async for stub in router_stub(STILL):
        yield stub


@pytest.fixture
async def slow_meteora() -> AsyncIterator[router_pb2_grpc.RouterStub]:
    async for stub in router_stub(replace(STILL, venue_latency_ms={"meteora": (900, 900)}, quote_deadline_ms=200)):
        yield stub


def quotes_request(amount: str, token_in: str = SOL, token_out: str = USDC) -> router_pb2.GetQuotesRequest:
    return router_pb2.GetQuotesRequest(token_in=token_in, token_out=token_out, amount_in=amount, slippage="0.01")


async def test_each_venue_quoted_with_impact_minimum_and_expiry(router: router_pb2_grpc.RouterStub) -> None:
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


async def test_a_large_order_is_split(router: router_pb2_grpc.RouterStub) -> None:
    resp = await router.GetQuotes(quotes_request("300"), timeout=5)
    d = resp.decision
    assert d.venue == "split" and {leg.venue for leg in d.legs} == {"raydium", "meteora"}
    assert sum(Decimal(leg.amount_in) for leg in d.legs) == 300
    assert Decimal(d.amount_out) > max(Decimal(q.amount_out) for q in resp.quotes)
    assert d.reason.startswith("split ")


async def test_a_venue_missing_the_deadline_is_excluded_and_named(slow_meteora: router_pb2_grpc.RouterStub) -> None:
    resp = await slow_meteora.GetQuotes(quotes_request("1"), timeout=5)
    assert [q.venue for q in resp.quotes] == ["raydium"]
    assert resp.excluded["meteora"] == "timed out after 200 ms"
    assert resp.decision.venue == "raydium"
    assert resp.decision.reason.endswith("; meteora excluded: timed out after 200 ms")
    assert 200 <= resp.simulated_ms < 900


async def test_no_pool_is_a_final_no_route(router: router_pb2_grpc.RouterStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.GetQuotes(quotes_request("1", BONK, MSOL), timeout=5)
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.NOT_FOUND and info.reason == "NO_ROUTE"


async def test_a_size_no_pool_can_fill_is_final(router: router_pb2_grpc.RouterStub) -> None:
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
    router: router_pb2_grpc.RouterStub, request_: router_pb2.GetQuotesRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.GetQuotes(request_, timeout=5)
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.violations] == [field]


def swap_request(*legs: tuple[str, str, str]) -> router_pb2.ExecuteSwapRequest:
    return router_pb2.ExecuteSwapRequest(
        token_in=SOL,
        token_out=USDC,
        legs=[router_pb2.SwapLeg(venue=v, amount_in=a, min_amount_out=m) for v, a, m in legs],
    )


async def test_a_swap_below_its_minimum_fails_with_the_venue_code(router: router_pb2_grpc.RouterStub) -> None:
    quote = (await router.GetQuotes(quotes_request("1"), timeout=5)).quotes[0]
    too_much = str(Decimal(quote.amount_out) + Decimal("0.000001"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.ExecuteSwap(swap_request((quote.venue, "1", too_much)), timeout=5)
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason.endswith(("0x1e", "0x1773"))
    done = await router.ExecuteSwap(swap_request((quote.venue, "1", quote.min_amount_out)), timeout=5)
    assert Decimal(done.amount_out) == Decimal(quote.amount_out)  # nothing moved in between
    assert [f.venue for f in done.fills] == [quote.venue]


async def test_a_split_executes_all_legs_or_none(router: router_pb2_grpc.RouterStub) -> None:
    """Like one Solana transaction: a leg below its minimum undoes the legs before it."""
    d = (await router.GetQuotes(quotes_request("300"), timeout=5)).decision
    first, second = d.legs
    failing = swap_request(
        (first.venue, first.amount_in, first.min_amount_out),
        (second.venue, second.amount_in, str(Decimal(second.amount_out) + 1)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.ExecuteSwap(failing, timeout=5)
    assert parse_rpc_error(err.value).code == grpc.StatusCode.FAILED_PRECONDITION
    again = (await router.GetQuotes(quotes_request("300"), timeout=5)).decision
    assert again.amount_out == d.amount_out, "the first leg did not move its pool"
    done = await router.ExecuteSwap(
        swap_request(*((leg.venue, leg.amount_in, leg.min_amount_out) for leg in d.legs)), timeout=5
    )
    assert Decimal(done.amount_out) == Decimal(d.amount_out)
    assert [(f.venue, f.amount_out) for f in done.fills] == [(leg.venue, leg.amount_out) for leg in d.legs]


async def test_bad_legs_are_named(router: router_pb2_grpc.RouterStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.ExecuteSwap(swap_request(("orca", "1", "0"), ("raydium", "-2", "0")), timeout=5)
    info = parse_rpc_error(err.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.violations] == ["legs[0].venue", "legs[1].amount_in"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.ExecuteSwap(router_pb2.ExecuteSwapRequest(token_in=SOL, token_out=USDC), timeout=5)
    assert [v.field for v in parse_rpc_error(err.value).violations] == ["legs"]
