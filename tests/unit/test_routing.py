"""Routing over the seeded market: crossover, splits, determinism, a moving market."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.amm import (
    InsufficientLiquidityError,
    Market,
    NoPoolError,
    SlippageExceededError,
    decide,
    min_amount_out,
)
from venues.tokens import BONK, MSOL, SOL, USDC, USDT, Token


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def still_market(seed: int = 42) -> Market:
    return Market(seed=seed, clock=FakeClock(), drift=False)


def sol(n: str) -> int:
    return int(Decimal(n) * 10**9)


def route(market: Market, amount: int, tin: Token = SOL, tout: Token = USDC, venues: list[str] | None = None):
    return decide(
        lambda venue, a: market.quote(venue, tin.mint, tout.mint, a), venues or market.venues(), amount, tin, tout
    )


def test_the_better_venue_depends_on_size() -> None:
    """Small orders win on DLMM (lower fee), large on Raydium (deeper curve): the crossover."""
    market = still_market()

    def winner(amount: int) -> str:
        quotes = {v: market.quote(v, SOL.mint, USDC.mint, amount).amount_out for v in market.venues()}
        return max(quotes, key=lambda v: quotes[v])

    assert winner(sol("1")) == "meteora"
    assert winner(sol("100")) == "meteora"
    assert winner(sol("200")) == "raydium"
    assert winner(sol("400")) == "raydium"
    crossover = next(n for n in range(100, 201, 5) if winner(sol(str(n))) == "raydium")
    assert 100 < crossover < 200  # the domain notes: about 150 SOL


def test_small_order_goes_to_one_venue_with_a_reason() -> None:
    decision = route(still_market(), sol("1"))
    assert decision.kind == "single"
    assert [leg.venue for leg in decision.legs] == ["meteora"]
    assert decision.reason == "meteora: +0.16 % net vs raydium at 1 SOL"


def test_split_beats_the_best_single_venue_when_it_should() -> None:
    market = still_market()
    decision = route(market, sol("300"))
    best_single = max(market.quote(v, SOL.mint, USDC.mint, sol("300")).amount_out for v in market.venues())
    assert decision.kind == "split"
    assert decision.amount_out > best_single
    assert sum(leg.amount_in for leg in decision.legs) == sol("300")
    assert all(leg.amount_in % sol("30") == 0 for leg in decision.legs)  # the 10 % grid
    assert decision.reason.startswith("split ") and "net vs raydium alone at 300 SOL" in decision.reason


def test_no_split_when_one_venue_is_left_or_the_gain_is_tiny() -> None:
    market = still_market()
    alone = route(market, sol("300"), venues=["raydium"])
    assert alone.kind == "single" and alone.legs[0].venue == "raydium"
    stable = route(market, 1_000 * 10**6, USDC, USDT)
    assert stable.kind == "single"


def test_excluded_venues_are_named_in_the_reason() -> None:
    market = still_market()
    decision = decide(
        lambda v, a: market.quote(v, SOL.mint, USDC.mint, a),
        ["raydium"],
        sol("1"),
        SOL,
        USDC,
        {"meteora": "timed out after 1500 ms"},
    )
    assert decision.reason == "raydium: the only venue quoting 1 SOL; meteora excluded: timed out after 1500 ms"


def test_a_size_no_single_venue_can_fill_is_split_or_refused() -> None:
    market = still_market()
    big = route(market, sol("2000"))  # beyond the DLMM bins, within Raydium's reserves
    assert (big.kind == "single" and big.legs[0].venue == "raydium") or big.kind == "split"
    with pytest.raises(InsufficientLiquidityError):
        route(market, sol("5000"), venues=["meteora"])


def test_pairs_and_missing_pools() -> None:
    market = still_market()
    assert market.has_pair(SOL.mint, USDC.mint) and market.has_pair(USDC.mint, SOL.mint)
    assert market.has_pair(BONK.mint, USDC.mint)  # Raydium only
    assert not market.has_pair(BONK.mint, MSOL.mint)
    assert not market.has_pair(SOL.mint, SOL.mint)
    with pytest.raises(NoPoolError):
        market.quote("meteora", BONK.mint, USDC.mint, 10**5)
    only = route(market, 10**10, BONK, USDC)
    assert only.legs[0].venue == "raydium"


def test_quotes_change_nothing_and_swaps_respect_the_minimum() -> None:
    market = still_market()
    q1 = market.quote("raydium", SOL.mint, USDC.mint, sol("10"))
    q2 = market.quote("raydium", SOL.mint, USDC.mint, sol("10"))
    assert q1 == q2
    with pytest.raises(SlippageExceededError) as err:
        market.swap("raydium", SOL.mint, USDC.mint, sol("10"), q1.amount_out + 1)
    assert err.value.code == "RAYDIUM_EXCEEDED_SLIPPAGE_0x1e"
    assert market.quote("raydium", SOL.mint, USDC.mint, sol("10")) == q1  # a failed swap moves nothing
    done = market.swap("raydium", SOL.mint, USDC.mint, sol("10"), min_amount_out(q1.amount_out, Decimal("0.01")))
    assert done.amount_out == q1.amount_out
    assert market.quote("raydium", SOL.mint, USDC.mint, sol("10")).amount_out < q1.amount_out  # price moved


def test_min_amount_out_floors() -> None:
    assert min_amount_out(10392472, Decimal("0.01")) == 10288547  # floor(10392472 * 0.99)
    assert min_amount_out(1000, Decimal(0)) == 1000


def test_a_seeded_market_replays_exactly() -> None:
    def run() -> list[tuple[str, tuple, int]]:
        clock = FakeClock()
        market = Market(seed=7, clock=clock)
        seen = []
        for size in ("1", "150", "300", "50", "800"):
            clock.now += 3.7
            market.advance()
            d = route(market, sol(size))
            seen.append((d.kind, tuple((leg.venue, leg.amount_in) for leg in d.legs), d.amount_out))
            market.swap(d.legs[0].venue, SOL.mint, USDC.mint, d.legs[0].amount_in, 0)
        return seen

    assert run() == run()
    other = Market(seed=8, clock=FakeClock())
    assert other.mids == Market(seed=7, clock=FakeClock()).mids  # same start, different path


def test_the_market_moves_and_executes_at_execution_time() -> None:
    clock = FakeClock()
    market = Market(seed=42, clock=clock)
    quoted = market.quote("raydium", SOL.mint, USDC.mint, sol("10"))
    clock.now += 60
    market.advance()
    later = market.quote("raydium", SOL.mint, USDC.mint, sol("10"))
    assert later.amount_out != quoted.amount_out
    executed = market.swap("raydium", SOL.mint, USDC.mint, sol("10"), 0)
    assert executed.amount_out == later.amount_out


def test_arbitrage_keeps_venues_near_the_mid() -> None:
    clock = FakeClock()
    market = Market(seed=3, clock=clock)
    for _ in range(20):
        clock.now += 30
        market.advance()
        mid = market.mids[frozenset((SOL.mint, USDC.mint))]
        for venue in market.venues():
            spot = market.pool(venue, SOL.mint, USDC.mint).spot_price(SOL.mint)
            assert abs(spot / mid - 1) < Decimal("0.006"), (venue, spot, mid)


def test_a_trend_moves_the_price_against_the_seller() -> None:
    clock = FakeClock()
    market = Market(seed=42, clock=clock, trend_bps_per_s=Decimal(-100))
    before = market.quote("raydium", SOL.mint, USDC.mint, sol("1")).amount_out
    clock.now += 5
    market.advance()
    after = market.quote("raydium", SOL.mint, USDC.mint, sol("1")).amount_out
    assert after < before * Decimal("0.97")
