"""A moving, seeded market over the cluster's pool accounts.

Brought forward in fixed ticks of wall time: each pair's mid price
random-walks (sigma 1.4 bps per sqrt second, 0.1 bps for stable pairs, plus an
optional trend), background swaps arrive as a Poisson process with lognormal
sizes, and arbitrage pulls every pool whose price strays beyond its fee back
to the mid. Each trade runs the venue's exact math at the tick's unix time and
is written to the pool's accounts (state and vault balances; the counterparty
is off-chain), so readers and subscribers see the market move.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from solders.pubkey import Pubkey

from localnet.bank import View
from localnet.pools import PoolCache, move_reserves, write_swap
from venues.dlmm import DlmmPool, bin_for_price
from venues.errors import AmmError
from venues.onchain import PoolSnapshot
from venues.raydium import ConstantProductPool

TICK_S = 0.5
MAX_CATCH_UP_S = 120.0
SIGMA_PER_SQRT_S = 0.00014
STABLE_SIGMA_PER_SQRT_S = 0.00001
BACKGROUND_SWAPS_PER_S = 2.0
BACKGROUND_MEDIAN_USD = 1_500.0
STABLES = {"USDC", "USDT"}


@dataclass(frozen=True)
class Trade:
    pool: Pubkey
    mint_in: Pubkey
    amount_in: int
    amount_out: int


class Market:
    def __init__(
        self,
        cache: PoolCache,
        symbol_of: Callable[[Pubkey], str | None],
        seed: int = 42,
        *,
        drift: bool = True,
        trend_bps_per_s: Decimal = Decimal(0),
    ) -> None:
        self.cache = cache
        self.symbol_of = symbol_of
        self.rng = random.Random(seed)
        self.drift = drift
        self.trend = float(trend_bps_per_s) / 10_000
        self.bases: dict[frozenset[Pubkey], Pubkey] = {}
        self.mids: dict[frozenset[Pubkey], Decimal] = {}  # raw quote units per raw base unit
        self.clock: float | None = None

    # -- pools -------------------------------------------------------------------------

    def _snapshots(self, view: View, pools: list[Pubkey]) -> dict[Pubkey, PoolSnapshot]:
        out = {}
        for address in sorted(pools, key=bytes):
            with contextlib.suppress(KeyError, ValueError):
                out[address] = self.cache.get(view, address)
        for snapshot in out.values():
            pair = frozenset(snapshot.mints)
            if pair not in self.mids:
                base = self.bases.setdefault(pair, snapshot.mints[0])
                self.mids[pair] = snapshot.pool.spot_price(str(base))
        return out

    def _trade(
        self, view: View, snapshots: dict[Pubkey, PoolSnapshot], address: Pubkey, mint_in: Pubkey, amount: int, now: int
    ) -> Trade | None:
        snapshot = snapshots[address]
        try:
            fill = snapshot.pool.swap(str(mint_in), amount, now)
        except (AmmError, ValueError):
            return None  # a size the pool cannot fill just does not trade
        after = write_swap(view, snapshot, mint_in, fill)
        move_reserves(view, snapshot, mint_in, fill.amount_in, fill.amount_out)
        self.cache.remember(view, after)
        snapshots[address] = after
        return Trade(address, mint_in, fill.amount_in, fill.amount_out)

    # -- time --------------------------------------------------------------------------

    def advance(self, view: View, pools: list[Pubkey], now: float) -> list[Trade]:
        """Bring the market forward to ``now`` (unix seconds); the trades it made."""
        if self.clock is None or not self.drift:
            self.clock = now
            return []
        if now - self.clock > MAX_CATCH_UP_S:
            self.clock = now - MAX_CATCH_UP_S
        snapshots = self._snapshots(view, pools)
        trades: list[Trade] = []
        while self.clock < now:
            dt = min(TICK_S, now - self.clock)
            self.clock += dt
            trades += self._tick(view, snapshots, dt, int(self.clock))
        return trades

    def _tick(self, view: View, snapshots: dict[Pubkey, PoolSnapshot], dt: float, now: int) -> list[Trade]:
        for pair in sorted(self.mids, key=lambda p: sorted(bytes(m) for m in p)):
            stable = self._stable(pair)
            sigma = STABLE_SIGMA_PER_SQRT_S if stable else SIGMA_PER_SQRT_S
            trend = 0.0 if stable else self.trend
            step = sigma * math.sqrt(dt) * self.rng.gauss(0.0, 1.0) + trend * dt
            self.mids[pair] = self.mids[pair] * Decimal(repr(math.exp(step)))
        trades = []
        keys = list(snapshots)
        if keys:
            for _ in range(self._poisson(BACKGROUND_SWAPS_PER_S * dt)):
                address = keys[self.rng.randrange(len(keys))]
                trade = self._background_swap(view, snapshots, address, now)
                if trade:
                    trades.append(trade)
        for address in keys:
            trade = self._arbitrage(view, snapshots, address, None, now)
            if trade:
                trades.append(trade)
        return trades

    def _stable(self, pair: frozenset[Pubkey]) -> bool:
        return all(self.symbol_of(m) in STABLES for m in pair)

    def _poisson(self, lam: float) -> int:
        threshold, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= threshold:
                return k
            k += 1

    def _usd_value_raw(self, snapshot: PoolSnapshot, mint: Pubkey, usd: float) -> int:
        """Raw units of ``mint`` worth about ``usd``, from the mids."""
        decimals = snapshot.decimals[snapshot.mints.index(mint)]
        if self.symbol_of(mint) in STABLES:
            return int(usd * 10**decimals)
        for pair, mid in self.mids.items():
            if mint in pair:
                other = next(iter(pair - {mint}))
                if self.symbol_of(other) in STABLES:
                    other_decimals = snapshot.decimals[1 - snapshot.mints.index(mint)] if other in snapshot.mints else 6
                    per_raw = mid if mint == self.bases[pair] else 1 / mid  # raw stable per raw token
                    return int(Decimal(usd * 10**other_decimals) / per_raw)
        return int(usd / 150 * 10**decimals)  # priced via SOL

    def _background_swap(
        self, view: View, snapshots: dict[Pubkey, PoolSnapshot], address: Pubkey, now: int
    ) -> Trade | None:
        snapshot = snapshots[address]
        mint_in = snapshot.mints[self.rng.randrange(2)]
        usd = self.rng.lognormvariate(math.log(BACKGROUND_MEDIAN_USD), 1.0)
        amount = self._usd_value_raw(snapshot, mint_in, usd)
        if amount <= 0:
            return None
        return self._trade(view, snapshots, address, mint_in, amount, now)

    # -- arbitrage ---------------------------------------------------------------------

    def _arbitrage(
        self,
        view: View,
        snapshots: dict[Pubkey, PoolSnapshot],
        address: Pubkey,
        target: Decimal | None,
        now: int,
        band: Decimal | None = None,
    ) -> Trade | None:
        """Trade ``address`` until its spot (raw quote per raw base) is within ``band`` of ``target`` (the mid)."""
        snapshot = snapshots[address]
        pair = frozenset(snapshot.mints)
        base = self.bases.setdefault(pair, snapshot.mints[0])
        quote = next(iter(pair - {base}))
        mid = self.mids.get(pair) if target is None else target
        if mid is None or mid <= 0:
            return None
        pool = snapshot.pool
        spot = pool.spot_price(str(base))
        band = self._fee_band(pool) if band is None else band
        if abs(spot / mid - 1) <= band:
            return None
        mint_in = base if spot > mid else quote
        amount = 0
        if isinstance(pool, ConstantProductPool):
            amount = pool.input_for_price(str(mint_in), mid if mint_in == base else 1 / mid)
        elif isinstance(pool, DlmmPool):
            y_per_x = mid if Pubkey.from_string(pool.mint_x) == base else 1 / mid
            amount = self._dlmm_arb_input(pool, str(mint_in), bin_for_price(y_per_x, pool.bin_step), now)
        if amount <= 0:
            return None
        return self._trade(view, snapshots, address, mint_in, amount, now)

    @staticmethod
    def _dlmm_arb_input(pool: DlmmPool, mint_in: str, target: int, now: int) -> int:
        step = -1 if mint_in == pool.mint_x else 1
        total, bin_id = 0, pool.active_id
        while (bin_id - target) * step < 0 and bin_id in pool.bins:
            total += pool.drain_input(mint_in, bin_id, now)
            bin_id += step
        return total

    @staticmethod
    def _fee_band(pool: ConstantProductPool | DlmmPool) -> Decimal:
        if isinstance(pool, ConstantProductPool):
            return Decimal(pool.fee_numerator) / Decimal(pool.fee_denominator)
        return Decimal(pool.base_fee_rate()) / Decimal(1_000_000_000) + Decimal(pool.bin_step) / 10_000

    # -- scenario control ----------------------------------------------------------------

    def set_price(
        self,
        view: View,
        pools: list[Pubkey],
        base: Pubkey,
        quote: Pubkey,
        raw_price: Decimal,
        now: int,
        only: Pubkey | None = None,
    ) -> list[Trade]:
        """Move the pools of (base, quote) -- or just ``only`` -- to ``raw_price`` as an arbitrageur would.

        Moving the whole pair also moves its mid, so the drift continues from there.
        """
        snapshots = self._snapshots(view, pools)
        pair = frozenset((base, quote))
        if only is None:
            self.mids[pair] = raw_price if self.bases.get(pair, base) == base else 1 / raw_price
        trades = []
        for address, snapshot in list(snapshots.items()):
            if frozenset(snapshot.mints) != pair or (only is not None and address != only):
                continue
            mid = raw_price if self.bases.get(pair, base) == base else 1 / raw_price
            trade = self._arbitrage(view, snapshots, address, mid, now, band=Decimal(0))
            if trade:
                trades.append(trade)
        return trades
