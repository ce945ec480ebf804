"""Routing over the seeded pools (still): crossover, splits, reasons, minimums.

The market's motion (random walk, background flow, arbitrage) lives in the
localnet now and is tested there (tests/localnet).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.amm import (
    AmmError,
    Decision,
    InsufficientLiquidityError,
    NoPoolError,
    SlippageExceededError,
    VenueQuote,
    decide,
    min_amount_out,
)
from venues.pools import VENUES, Pool, seed_pools
from venues.quote import venue_quote
from venues.tokens import BONK, MSOL, SOL, TOKENS, USDC, USDT, Token


class Market:
    """The seeded pools, standing still: quotes change nothing, swaps replace a pool's state."""

    def __init__(self) -> None:
        self.pools = seed_pools()

    def venues(self) -> list[str]:
        return list(VENUES)

    def has_pair(self, a: str, b: str) -> bool:
        return a != b and any((v, frozenset((a, b))) in self.pools for v in VENUES)

    def pool(self, venue: str, a: str, b: str) -> Pool:
        found = self.pools.get((venue, frozenset((a, b))))
        if found is None or a == b:
            raise NoPoolError(f"{venue} has no pool for this pair")
        return found

    def quote(self, venue: str, mint_in: str, mint_out: str, amount: int) -> VenueQuote:
        return venue_quote(venue, self.pool(venue, mint_in, mint_out).swap(mint_in, amount))

    def swap(self, venue: str, mint_in: str, mint_out: str, amount: int, min_out: int) -> VenueQuote:
        pool = self.pool(venue, mint_in, mint_out)
        fill = pool.swap(mint_in, amount)
        pool.check_min_out(fill, min_out)
        self.pools[(venue, frozenset((mint_in, mint_out)))] = fill.state
        return venue_quote(venue, fill)


def still_market() -> Market:
    return Market()


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
    assert err.value.code == "RAYDIUM_CPMM_EXCEEDED_SLIPPAGE_0x1775"
    assert market.quote("raydium", SOL.mint, USDC.mint, sol("10")) == q1  # a failed swap moves nothing
    done = market.swap("raydium", SOL.mint, USDC.mint, sol("10"), min_amount_out(q1.amount_out, Decimal("0.01")))
    assert done.amount_out == q1.amount_out
    assert market.quote("raydium", SOL.mint, USDC.mint, sol("10")).amount_out < q1.amount_out  # price moved


def test_min_amount_out_floors() -> None:
    assert min_amount_out(10392472, Decimal("0.01")) == 10288547  # floor(10392472 * 0.99)
    assert min_amount_out(1000, Decimal(0)) == 1000


def every_grid_split(market: Market, tin: Token, tout: Token, amount: int) -> tuple[int, int] | None:
    """The oracle: (best total, share to the best single venue) over every grid point, by brute force."""
    outs = {}
    for venue in market.venues():
        try:
            outs[venue] = market.quote(venue, tin.mint, tout.mint, amount).amount_out
        except AmmError:
            continue
    # the best venue alone first, then the next; venues that cannot fill alone after them
    first, second = [*sorted(outs, key=lambda v: (-outs[v], v)), *(v for v in market.venues() if v not in outs)][:2]
    best: tuple[int, int] | None = None
    for pct in range(10, 100, 10):
        a = amount * pct // 100
        try:
            total = (
                market.quote(first, tin.mint, tout.mint, a).amount_out
                + market.quote(second, tin.mint, tout.mint, amount - a).amount_out
            )
        except AmmError:
            continue
        if best is None or total > best[0]:
            best = (total, a)
    return best


def test_the_concave_walk_finds_the_grids_best_split_with_fewer_quotes() -> None:
    """One pool per venue: walking the grid from the best venue's side and stopping at the first fall gives the
    decision trying every grid point gives (checked against a brute-force oracle over sizes from dust to more
    than a venue holds), and takes fewer quotes."""
    market = still_market()
    pairs = [
        (TOKENS[a], TOKENS[b])
        for (venue, pair) in market.pools
        if venue == "raydium"
        for a, b in (sorted(pair), sorted(pair)[::-1])
        if ("meteora", pair) in market.pools
    ]
    assert len(pairs) >= 4
    quotes = {"walk": 0, "grid": 0}
    splits = 0
    for tin, tout in pairs:
        for exponent in range(-2, 5):
            for mantissa in (1, 2, 3, 5, 7):
                amount = max(1, int(Decimal(mantissa) * Decimal(10) ** exponent * 10**tin.decimals))
                decisions: dict[str, Decision | None] = {}
                for how, concave in (("walk", True), ("grid", False)):

                    def counted(venue: str, a: int, how: str = how, tin: Token = tin, tout: Token = tout) -> VenueQuote:
                        quotes[how] += 1
                        return market.quote(venue, tin.mint, tout.mint, a)

                    try:
                        decisions[how] = decide(counted, market.venues(), amount, tin, tout, concave=concave)
                    except InsufficientLiquidityError:
                        decisions[how] = None
                assert decisions["walk"] == decisions["grid"], (tin.symbol, tout.symbol, amount)
                oracle = every_grid_split(market, tin, tout, amount)
                walked = decisions["walk"]
                if walked is not None and walked.kind == "split":
                    splits += 1
                    assert oracle is not None and walked.amount_out == oracle[0]
                    assert walked.legs[0].amount_in == oracle[1]
    assert splits >= 3  # the sweep reaches sizes a split serves
    assert quotes["walk"] * 2 < quotes["grid"], quotes
