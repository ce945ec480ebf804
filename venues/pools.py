"""The seeded pools each venue starts with.

SOL/USDC is the worked example of the domain notes (mid 150): Raydium CPMM
with 100,000 SOL / 15M USDC in the 0.25 % tier (2,500 ppm: the same quotes as
AMM v4 at 25 bps) against a Meteora DLMM with bin step 10,
base fee 0.10 %, active bin -1898 and Gaussian liquidity (3,000 USDC at the
peak, sigma 25 bins). Raydium's deep constant-product curve wins large orders,
DLMM's lower fee wins small ones; the crossover is near 150 SOL.

Every Raydium pool is a CPMM pool (the one Raydium program the localnet
emulates). Each pool's ``pool_id`` is its on-chain address (the program's PDA),
so a seeded pool and the same pool decoded from the localnet's accounts carry
the same id.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Protocol, TypeVar

from venues.dlmm import DlmmPool, FeeParams, bin_for_price, gaussian_bins
from venues.fills import Fill
from venues.onchain import pool_address_of
from venues.programs import METEORA, RAYDIUM
from venues.raydium import ConstantProductPool
from venues.tokens import BONK, JUP, MSOL, SOL, USDC, USDT, Token

VENUES = (RAYDIUM, METEORA)


class Pool(Protocol):
    @property
    def pool_id(self) -> str: ...  # read-only: the pools are frozen dataclasses

    @property
    def mints(self) -> tuple[str, str]: ...

    def spot_price(self, mint_in: str) -> Decimal: ...

    def swap(self, mint_in: str, amount_in: int, now: float = 0.0) -> Fill: ...

    def check_min_out(self, fill: Fill, min_out: int) -> None: ...


def _raw(amount: int | str, token: Token) -> int:
    return int(Decimal(amount) * 10**token.decimals)


def _raw_price(price: str, base: Token, quote: Token) -> Decimal:
    """Whole-token price (quote per base) as raw quote units per raw base unit."""
    return Decimal(price).scaleb(quote.decimals - base.decimals)


def _dlmm(base: Token, quote: Token, price: str, bin_step: int, peak_quote: int, sigma: float, width: int) -> DlmmPool:
    active = bin_for_price(_raw_price(price, base, quote), bin_step)
    bins = gaussian_bins(active, bin_step, _raw(peak_quote, quote), sigma, width)
    return _on_chain(DlmmPool.create("", base.mint, quote.mint, bin_step, active, bins, FeeParams()))


def _cpmm(base: Token, quote: Token, base_amount: int, quote_amount: int, fee_ppm: int = 2_500) -> ConstantProductPool:
    pool = ConstantProductPool.cpmm(
        "", base.mint, quote.mint, _raw(base_amount, base), _raw(quote_amount, quote), fee_ppm
    )
    return _on_chain(pool)


P = TypeVar("P", ConstantProductPool, DlmmPool)


def _on_chain(pool: P) -> P:
    return replace(pool, pool_id=str(pool_address_of(pool)))


def seed_pools() -> dict[tuple[str, frozenset[str]], Pool]:
    """Every venue's pools keyed by (venue, {mint, mint})."""
    pools: list[tuple[str, Pool]] = [
        (RAYDIUM, _cpmm(SOL, USDC, 100_000, 15_000_000)),
        (METEORA, _dlmm(SOL, USDC, "150", 10, 3_000, 25, 150)),
        (RAYDIUM, _cpmm(SOL, USDT, 60_000, 9_000_000)),
        (METEORA, _dlmm(SOL, USDT, "150", 10, 2_000, 25, 150)),
        (RAYDIUM, _cpmm(USDC, USDT, 20_000_000, 20_000_000, 100)),
        (METEORA, _dlmm(USDC, USDT, "1", 1, 400_000, 8, 60)),
        (RAYDIUM, _cpmm(JUP, USDC, 10_000_000, 8_000_000)),
        (METEORA, _dlmm(JUP, USDC, "0.8", 20, 15_000, 20, 120)),
        (RAYDIUM, _cpmm(BONK, USDC, 200_000_000_000, 4_000_000)),
        (METEORA, _dlmm(MSOL, SOL, "1.17", 1, 5_000, 10, 60)),
    ]
    return {(venue, frozenset(pool.mints)): pool for venue, pool in pools}
