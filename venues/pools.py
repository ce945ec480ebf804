"""The seeded pools each venue starts with.

SOL/USDC is the worked example of the domain notes (mid 150): Raydium AMM v4
with 100,000 SOL / 15M USDC at 25 bps against a Meteora DLMM with bin step 10,
base fee 0.10 %, active bin -1898 and Gaussian liquidity (3,000 USDC at the
peak, sigma 25 bins). Raydium's deep constant-product curve wins large orders,
DLMM's lower fee wins small ones; the crossover is near 150 SOL.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from venues.dlmm import DlmmPool, FeeParams, bin_for_price, gaussian_bins
from venues.fills import Fill
from venues.raydium import ConstantProductPool
from venues.tokens import BONK, JUP, MSOL, SOL, USDC, USDT, Token

RAYDIUM = "raydium"
METEORA = "meteora"
VENUES = (RAYDIUM, METEORA)


class Pool(Protocol):
    pool_id: str

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


def _dlmm(
    pool_id: str, base: Token, quote: Token, price: str, bin_step: int, peak_quote: int, sigma: float, width: int
) -> DlmmPool:
    active = bin_for_price(_raw_price(price, base, quote), bin_step)
    bins = gaussian_bins(active, bin_step, _raw(peak_quote, quote), sigma, width)
    return DlmmPool.create(pool_id, base.mint, quote.mint, bin_step, active, bins, FeeParams())


def seed_pools() -> dict[tuple[str, frozenset[str]], Pool]:
    """Every venue's pools keyed by (venue, {mint, mint})."""
    pools: list[tuple[str, Pool]] = [
        (
            RAYDIUM,
            ConstantProductPool.amm_v4(
                "ray-v4-SOL-USDC", SOL.mint, USDC.mint, _raw(100_000, SOL), _raw(15_000_000, USDC)
            ),
        ),
        (METEORA, _dlmm("met-dlmm-SOL-USDC", SOL, USDC, "150", 10, 3_000, 25, 150)),
        (
            RAYDIUM,
            ConstantProductPool.cpmm(
                "ray-cpmm-SOL-USDT", SOL.mint, USDT.mint, _raw(60_000, SOL), _raw(9_000_000, USDT), 2_500
            ),
        ),
        (METEORA, _dlmm("met-dlmm-SOL-USDT", SOL, USDT, "150", 10, 2_000, 25, 150)),
        (
            RAYDIUM,
            ConstantProductPool.cpmm(
                "ray-cpmm-USDC-USDT", USDC.mint, USDT.mint, _raw(20_000_000, USDC), _raw(20_000_000, USDT), 100
            ),
        ),
        (METEORA, _dlmm("met-dlmm-USDC-USDT", USDC, USDT, "1", 1, 400_000, 8, 60)),
        (
            RAYDIUM,
            ConstantProductPool.amm_v4(
                "ray-v4-JUP-USDC", JUP.mint, USDC.mint, _raw(10_000_000, JUP), _raw(8_000_000, USDC)
            ),
        ),
        (METEORA, _dlmm("met-dlmm-JUP-USDC", JUP, USDC, "0.8", 20, 15_000, 20, 120)),
        (
            RAYDIUM,
            ConstantProductPool.amm_v4(
                "ray-v4-BONK-USDC", BONK.mint, USDC.mint, _raw(200_000_000_000, BONK), _raw(4_000_000, USDC)
            ),
        ),
        (METEORA, _dlmm("met-dlmm-mSOL-SOL", MSOL, SOL, "1.17", 1, 5_000, 10, 60)),
    ]
    return {(venue, frozenset(pool.mints)): pool for venue, pool in pools}
