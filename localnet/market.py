"""A moving, seeded market of venue pools with an injectable clock.

Between calls the market is brought forward to ``clock()`` in fixed ticks:
each pair's mid price random-walks (sigma 1.4 bps per sqrt second, plus an
optional trend), background swaps arrive as a Poisson process with lognormal
sizes, and arbitrage pulls every pool whose price strays beyond its fee back
to the mid. Quotes price against the state at quote time and change nothing;
swaps price against the state at execution time and fail with the venue's
slippage error when the output is below the minimum.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from venues.dlmm import DlmmPool, bin_for_price
from venues.errors import AmmError, NoPoolError
from venues.fills import Fill
from venues.pools import VENUES, Pool, seed_pools
from venues.raydium import ConstantProductPool
from venues.quote import VenueQuote, venue_quote
from venues.tokens import TOKENS

TICK_S = 0.5
MAX_CATCH_UP_S = 120.0
SIGMA_PER_SQRT_S = 0.00014
STABLE_SIGMA_PER_SQRT_S = 0.00001
BACKGROUND_SWAPS_PER_S = 2.0
BACKGROUND_MEDIAN_USD = 1_500.0
STABLES = {"USDC", "USDT"}



class Market:
    def __init__(
        self,
        seed: int = 42,
        clock: Callable[[], float] = time.monotonic,
        *,
        drift: bool = True,
        trend_bps_per_s: Decimal = Decimal(0),
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.drift = drift
        self.trend = float(trend_bps_per_s) / 10_000
        self.started = clock()
        self.now = 0.0
        self.pools: dict[tuple[str, frozenset[str]], Pool] = seed_pools()
        # Per pair: the base token (the first of its seeded pools) and the mid
        # price in raw quote units per raw base unit. A negative trend makes
        # the base cheaper.
        self.bases: dict[frozenset[str], str] = {}
        self.mids: dict[frozenset[str], Decimal] = {}
        for (_, pair), pool in sorted(self.pools.items(), key=lambda kv: kv[1].pool_id):
            base = self.bases.setdefault(pair, pool.mints[0])
            self.mids.setdefault(pair, pool.spot_price(base))

    def venues(self) -> list[str]:
        return list(VENUES)

    def has_pair(self, mint_a: str, mint_b: str) -> bool:
        pair = frozenset((mint_a, mint_b))
        return mint_a != mint_b and any((venue, pair) in self.pools for venue in VENUES)

    def pool(self, venue: str, mint_a: str, mint_b: str) -> Pool:
        pool = self.pools.get((venue, frozenset((mint_a, mint_b))))
        if pool is None or mint_a == mint_b:
            raise NoPoolError(f"{venue} has no pool for this pair")
        return pool

    def _venue_quote(self, venue: str, fill: Fill) -> VenueQuote:
        tin, tout = TOKENS[fill.mint_in], TOKENS[fill.mint_out]
        return VenueQuote(
            venue=venue,
            token_in=fill.mint_in,
            token_out=fill.mint_out,
            amount_in=fill.amount_in,
            amount_out=fill.amount_out,
            fee=fill.fee,
            price_impact=fill.price_impact,
            spot_price=fill.spot_price.scaleb(tin.decimals - tout.decimals),
            pool_id=fill.pool_id,
        )

    def quote(self, venue: str, mint_in: str, mint_out: str, amount_in: int) -> VenueQuote:
        """Price an exact-in swap against the current state; nothing changes."""
        pool = self.pool(venue, mint_in, mint_out)
        return self._venue_quote(venue, pool.swap(mint_in, amount_in, self.now))

    def swap(self, venue: str, mint_in: str, mint_out: str, amount_in: int, min_out: int) -> VenueQuote:
        """Execute: the pool changes only when the output meets ``min_out``."""
        key = (venue, frozenset((mint_in, mint_out)))
        pool = self.pool(venue, mint_in, mint_out)
        fill = pool.swap(mint_in, amount_in, self.now)
        pool.check_min_out(fill, min_out)
        self.pools[key] = fill.state
        return self._venue_quote(venue, fill)

    def swap_legs(self, mint_in: str, mint_out: str, legs: list[tuple[str, int, int]]) -> list[VenueQuote]:
        """Execute ``(venue, amount_in, min_out)`` legs as one transaction: all or nothing."""
        staged: dict[tuple[str, frozenset[str]], Pool] = {}
        done = []
        for venue, amount_in, min_out in legs:
            key = (venue, frozenset((mint_in, mint_out)))
            pool = staged.get(key) or self.pool(venue, mint_in, mint_out)
            fill = pool.swap(mint_in, amount_in, self.now)
            pool.check_min_out(fill, min_out)
            staged[key] = fill.state
            done.append(self._venue_quote(venue, fill))
        self.pools.update(staged)
        return done

    # -- time -------------------------------------------------------------

    def advance(self) -> None:
        """Bring the market forward to ``clock()``."""
        target = self.clock() - self.started
        if not self.drift:
            self.now = target
            return
        if target - self.now > MAX_CATCH_UP_S:
            self.now = target - MAX_CATCH_UP_S
        while self.now < target:  # whole ticks, then the remainder: any elapsed time moves the market
            dt = min(TICK_S, target - self.now)
            self.now += dt
            self._tick(dt)

    def _tick(self, dt: float) -> None:
        for pair in sorted(self.mids, key=sorted):
            sigma = STABLE_SIGMA_PER_SQRT_S if self._stable(pair) else SIGMA_PER_SQRT_S
            trend = 0.0 if self._stable(pair) else self.trend
            step = sigma * math.sqrt(dt) * self.rng.gauss(0.0, 1.0) + trend * dt
            self.mids[pair] = self.mids[pair] * Decimal(repr(math.exp(step)))
        arrivals = self._poisson(BACKGROUND_SWAPS_PER_S * dt)
        keys = sorted(self.pools, key=lambda k: self.pools[k].pool_id)
        for _ in range(arrivals):
            self._background_swap(keys[self.rng.randrange(len(keys))])
        for key in keys:
            self._arbitrage(key)

    @staticmethod
    def _stable(pair: frozenset[str]) -> bool:
        return all(TOKENS[m].symbol in STABLES for m in pair)

    def _poisson(self, lam: float) -> int:
        threshold, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= threshold:
                return k
            k += 1

    def _usd_value_raw(self, mint: str, usd: float) -> int:
        """Raw units of ``mint`` worth about ``usd``, from the mids."""
        token = TOKENS[mint]
        if token.symbol in STABLES:
            return int(usd * 10**token.decimals)
        for pair, mid in self.mids.items():
            if mint in pair:
                other = next(iter(pair - {mint}))
                if TOKENS[other].symbol in STABLES:
                    per_raw = mid if mint == self.bases[pair] else 1 / mid  # raw stable per raw token
                    return int(Decimal(usd * 10 ** TOKENS[other].decimals) / per_raw)
        return int(usd / 150 * 10**token.decimals)  # priced via SOL

    def _background_swap(self, key: tuple[str, frozenset[str]]) -> None:
        pool = self.pools[key]
        mint_in = sorted(key[1])[self.rng.randrange(2)]
        usd = self.rng.lognormvariate(math.log(BACKGROUND_MEDIAN_USD), 1.0)
        amount = self._usd_value_raw(mint_in, usd)
        if amount <= 0:
            return
        with contextlib.suppress(AmmError):  # a size the pool cannot fill just does not trade
            self.pools[key] = pool.swap(mint_in, amount, self.now).state

    def _arbitrage(self, key: tuple[str, frozenset[str]]) -> None:
        pool = self.pools[key]
        base = self.bases[key[1]]
        quote_mint = next(iter(key[1] - {base}))
        mid = self.mids[key[1]]
        spot = pool.spot_price(base)
        band = self._fee_band(pool)
        if abs(spot / mid - 1) <= band:
            return
        mint_in, amount = (base, 0) if spot > mid else (quote_mint, 0)
        if isinstance(pool, ConstantProductPool):
            target = mid if mint_in == base else 1 / mid
            amount = pool.input_for_price(mint_in, target)
        elif isinstance(pool, DlmmPool):
            y_per_x = mid if pool.mint_x == base else 1 / mid
            amount = self._dlmm_arb_input(pool, mint_in, bin_for_price(y_per_x, pool.bin_step))
        if amount > 0:
            with contextlib.suppress(AmmError):
                self.pools[key] = pool.swap(mint_in, amount, self.now).state

    def _dlmm_arb_input(self, pool: DlmmPool, mint_in: str, target: int) -> int:
        step = -1 if mint_in == pool.mint_x else 1
        total, bin_id = 0, pool.active_id
        while (bin_id - target) * step < 0 and bin_id in pool.bins:
            total += pool.drain_input(mint_in, bin_id, self.now)
            bin_id += step
        return total

    @staticmethod
    def _fee_band(pool: Pool) -> Decimal:
        if isinstance(pool, ConstantProductPool):
            return Decimal(pool.fee_numerator) / Decimal(pool.fee_denominator)
        assert isinstance(pool, DlmmPool)
        return Decimal(pool.base_fee_rate()) / Decimal(1_000_000_000) + Decimal(pool.bin_step) / 10_000
