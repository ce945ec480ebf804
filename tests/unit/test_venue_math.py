"""Venue math: exact integer pricing, checked by properties and worked examples."""

from __future__ import annotations

from decimal import Decimal
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from venues.dlmm import FEE_PRECISION, DlmmPool
from venues.errors import InsufficientLiquidityError, SlippageExceededError
from venues.pools import METEORA, RAYDIUM, seed_pools
from venues.raydium import ConstantProductPool
from venues.tokens import SOL, USDC, USDT

POOLS = seed_pools()
RAY = cast(ConstantProductPool, POOLS[(RAYDIUM, frozenset((SOL.mint, USDC.mint)))])
DLMM = cast(DlmmPool, POOLS[(METEORA, frozenset((SOL.mint, USDC.mint)))])
CPMM = cast(ConstantProductPool, POOLS[(RAYDIUM, frozenset((SOL.mint, USDT.mint)))])
assert isinstance(RAY, ConstantProductPool) and isinstance(DLMM, DlmmPool) and isinstance(CPMM, ConstantProductPool)
# The seeded Raydium SOL/USDC pool is CPMM at 2,500 ppm: quotes identical to AMM v4 at 25 bps.
AMM_V4 = ConstantProductPool.amm_v4("v4", RAY.mint_a, RAY.mint_b, RAY.reserve_a, RAY.reserve_b)

sol_amounts = st.integers(min_value=1, max_value=400 * 10**9)
usdc_amounts = st.integers(min_value=1, max_value=60_000 * 10**6)
pools_and_sides = st.sampled_from(
    [(RAY, SOL.mint), (RAY, USDC.mint), (DLMM, SOL.mint), (DLMM, USDC.mint), (CPMM, SOL.mint), (CPMM, USDT.mint)]
)


def amount_for(mint: str, data: st.DataObject) -> int:
    return data.draw(sol_amounts if mint == SOL.mint else usdc_amounts)


@pytest.mark.parametrize(
    ("sol", "dlmm_out", "raydium_out"),
    [(1, "149.86", "149.62"), (100, "14955.7", "14947.6"), (200, "29832.9", "29865.4")],
)
def test_worked_examples_from_the_domain_notes(sol: int, dlmm_out: str, raydium_out: str) -> None:
    """SOL -> USDC at mid 150: the table of the domain notes, to its last printed digit."""
    places = Decimal(dlmm_out).as_tuple().exponent
    assert isinstance(places, int)
    dlmm = Decimal(DLMM.swap(SOL.mint, sol * 10**9).amount_out).scaleb(-6).quantize(Decimal(1).scaleb(places))
    ray = Decimal(RAY.swap(SOL.mint, sol * 10**9).amount_out).scaleb(-6).quantize(Decimal(1).scaleb(places))
    assert (dlmm, ray) == (Decimal(dlmm_out), Decimal(raydium_out))


def test_raydium_amm_v4_rounds_to_the_unit() -> None:
    fill = AMM_V4.swap(SOL.mint, 10**9)
    assert RAY.swap(SOL.mint, 10**9).amount_out == fill.amount_out  # the CPMM 0.25 % tier quotes the same
    assert fill.fee == 2_500_000  # ceil(1e9 * 25 / 10000)
    assert fill.amount_out == (15_000_000 * 10**6) * (10**9 - 2_500_000) // (100_000 * 10**9 + 10**9 - 2_500_000)
    assert RAY.fee_for(1) == 1  # ceil: even one lamport pays a fee
    with pytest.raises(InsufficientLiquidityError, match="buy nothing"):
        RAY.swap(SOL.mint, 1)
    assert fill.price_impact == Decimal(10**9 - 2_500_000) / Decimal(100_000 * 10**9 + 10**9 - 2_500_000)


@given(st.integers(min_value=1, max_value=10**15))
def test_raydium_fee_rounds_up(amount: int) -> None:
    fee = RAY.fee_for(amount)
    assert fee * 10_000 >= amount * 25 > (fee - 1) * 10_000


def test_cpmm_tiers_and_withheld_protocol_fee() -> None:
    with pytest.raises(ValueError, match="fee tier"):
        ConstantProductPool.cpmm("x", SOL.mint, USDT.mint, 10**12, 10**12, fee_ppm=3_000)
    fill = CPMM.swap(SOL.mint, 10**9)
    assert fill.fee == 2_500_000  # ceil(1e9 * 2500 / 1e6)
    withheld = fill.fee * 160_000 // 1_000_000  # protocol 12 % + fund 4 %, floor
    new_sol = fill.state.reserve_a if CPMM.mint_a == SOL.mint else fill.state.reserve_b
    old_sol = CPMM.reserve_a if CPMM.mint_a == SOL.mint else CPMM.reserve_b
    assert new_sol == old_sol + 10**9 - withheld


@settings(max_examples=150, deadline=None)
@given(pools_and_sides, st.data())
def test_output_never_exceeds_reserves(pool_side: tuple, data: st.DataObject) -> None:
    pool, mint_in = pool_side
    amount = amount_for(mint_in, data)
    try:
        fill = pool.swap(mint_in, amount)
    except InsufficientLiquidityError:
        return
    if isinstance(pool, ConstantProductPool):
        reserve_out = pool.reserve_b if mint_in == pool.mint_a else pool.reserve_a
    else:
        reserve_out = sum(y if mint_in == pool.mint_x else x for x, y in pool.bins.values())
    assert 0 < fill.amount_out < reserve_out
    assert fill.amount_out < amount * fill.spot_price  # never better than the spot price


@settings(max_examples=150, deadline=None)
@given(pools_and_sides, st.data())
def test_more_input_never_gives_less_output(pool_side: tuple, data: st.DataObject) -> None:
    pool, mint_in = pool_side
    a, b = sorted((amount_for(mint_in, data), amount_for(mint_in, data)))
    try:
        out_b = pool.swap(mint_in, b).amount_out
    except InsufficientLiquidityError:
        return
    try:
        out_a = pool.swap(mint_in, a).amount_out
    except InsufficientLiquidityError:
        out_a = 0  # too small to buy a single base unit
    assert out_a <= out_b


@settings(max_examples=150, deadline=None)
@given(pools_and_sides, st.data())
def test_a_round_trip_never_makes_money(pool_side: tuple, data: st.DataObject) -> None:
    pool, mint_in = pool_side
    amount = amount_for(mint_in, data)
    try:
        there = pool.swap(mint_in, amount)
        back = there.state.swap(there.mint_out, there.amount_out)
    except InsufficientLiquidityError:
        return
    assert back.amount_out < amount


def test_dlmm_fee_is_base_plus_variable() -> None:
    assert DLMM.base_fee_rate() == FEE_PRECISION // 1000  # 0.10 % = bin step 10 in bps
    assert DLMM.variable_fee_rate(10 * 10_000) == 400_000  # 10 bins crossed: +0.04 %
    assert DLMM.variable_fee_rate(350_000) == 4_900_000  # the cap of the accumulator: +0.49 %


def test_dlmm_volatility_decays_with_time() -> None:
    after = DLMM.swap(SOL.mint, 100 * 10**9, now=0.0).state
    assert after.active_id < DLMM.active_id
    accumulator = after.volatility.accumulator
    assert accumulator == (DLMM.active_id - after.active_id) * 10_000
    crossed_again = after.swap(SOL.mint, 10**9, now=10.0)  # within the filter period: reference unchanged
    assert crossed_again.fee > after.swap(SOL.mint, 10**9, now=700.0).fee  # past the decay period: reset
    halfway = after._references(60.0)
    assert halfway.reference == accumulator // 2 and halfway.index_reference == after.active_id


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=2, max_value=40), st.booleans())
def test_dlmm_walking_many_bins_equals_the_sum_of_single_bin_swaps(bins: int, sell_x: bool) -> None:
    mint_in = DLMM.mint_x if sell_x else DLMM.mint_y
    step = -1 if sell_x else 1
    pool, pieces, total_out = DLMM, [], 0
    start = DLMM.active_id + (0 if sell_x else 1)  # the active bin holds no X to sell for Y
    for k in range(bins):
        piece = pool.drain_input(mint_in, start + k * step, now=0.0)
        fill = pool.swap(mint_in, piece, now=0.0)
        pieces.append(piece)
        total_out += fill.amount_out
        pool = fill.state
    whole = DLMM.swap(mint_in, sum(pieces), now=0.0)
    assert whole.amount_out == total_out
    assert whole.state.bins == pool.bins


def test_dlmm_runs_out_of_bins() -> None:
    with pytest.raises(InsufficientLiquidityError, match="bins ran out"):
        DLMM.swap(SOL.mint, 5_000 * 10**9)


@pytest.mark.parametrize(
    ("pool", "code"),
    [
        (AMM_V4, "RAYDIUM_EXCEEDED_SLIPPAGE_0x1e"),
        (RAY, "RAYDIUM_CPMM_EXCEEDED_SLIPPAGE_0x1775"),
        (CPMM, "RAYDIUM_CPMM_EXCEEDED_SLIPPAGE_0x1775"),
        (DLMM, "METEORA_EXCEEDED_AMOUNT_SLIPPAGE_TOLERANCE_0x1773"),
    ],
)
def test_below_the_minimum_is_the_venues_slippage_error(pool: ConstantProductPool | DlmmPool, code: str) -> None:
    fill = pool.swap(SOL.mint, 10**9)
    pool.check_min_out(fill, fill.amount_out)  # exactly the minimum passes
    with pytest.raises(SlippageExceededError) as err:
        pool.check_min_out(fill, fill.amount_out + 1)
    assert err.value.code == code and err.value.retryable
