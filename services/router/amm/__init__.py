# TEMPORARY SMOKE-TEST SHIM (lead) - removed right after a local run; the real module replaces it.
from __future__ import annotations
import time
from dataclasses import dataclass
from decimal import Decimal, ROUND_FLOOR
@dataclass(frozen=True)
class Token:
    symbol: str; mint: str; decimals: int
TOKENS = {t.mint: t for t in [Token("SOL","So11111111111111111111111111111111111111112",9),Token("USDC","EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",6),Token("USDT","Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB",6)]}
def token_by_mint(m): return TOKENS.get(m)
def to_base_units(a, d): return int((a * (Decimal(10) ** d)).to_integral_value(ROUND_FLOOR))
def from_base_units(r, d): return Decimal(r) / (Decimal(10) ** d)
class AmmError(Exception):
    code = "AMM"; retryable = False
class NoPoolError(AmmError): code = "NO_ROUTE"
class InsufficientLiquidityError(AmmError): code = "INSUFFICIENT_LIQUIDITY"
class SlippageExceededError(AmmError): code = "SLIPPAGE"; retryable = True
class VenueUnavailableError(AmmError): code = "VENUE_UNAVAILABLE"; retryable = True
@dataclass(frozen=True)
class VenueQuote:
    venue: str; token_in: str; token_out: str; amount_in: int; amount_out: int; fee: int; price_impact: Decimal; spot_price: Decimal; pool_id: str
@dataclass(frozen=True)
class Leg:
    venue: str; amount_in: int; amount_out: int; fee: int
@dataclass(frozen=True)
class Decision:
    kind: str; legs: tuple; amount_out: int; reason: str
class Market:
    def __init__(self, seed=42, clock=time.monotonic, *, drift=True):
        self.pools = {}
        S, U, T = list(TOKENS)
        for v, f in (("raydium", 25), ("meteora", 10)):
            self.pools[(v, S, U)] = [100_000 * 10**9, 15_000_000 * 10**6, f]
            self.pools[(v, S, T)] = [100_000 * 10**9, 15_000_000 * 10**6, f]
            self.pools[(v, U, T)] = [10_000_000 * 10**6, 10_000_000 * 10**6, f]
    def venues(self): return ["raydium", "meteora"]
    def has_pair(self, a, b): return ("raydium", a, b) in self.pools or ("raydium", b, a) in self.pools
    def _pool(self, v, a, b):
        if (v, a, b) in self.pools: return self.pools[(v, a, b)], 0, 1
        if (v, b, a) in self.pools: return self.pools[(v, b, a)], 1, 0
        raise NoPoolError("no pool")
    def quote(self, v, a, b, amt):
        p, i, o = self._pool(v, a, b)
        fee = -(-amt * p[2] // 10000); x = amt - fee
        out = p[o] * x // (p[i] + x)
        return VenueQuote(v, a, b, amt, out, fee, Decimal(x) / (p[i] + x), Decimal(p[o]) / p[i], v)
    def swap(self, v, a, b, amt, mn):
        q = self.quote(v, a, b, amt)
        if q.amount_out < mn: raise SlippageExceededError("slip")
        p, i, o = self._pool(v, a, b); p[i] += amt; p[o] -= q.amount_out
        return q
    def advance(self): pass
def min_amount_out(out, s): return int((Decimal(out) * (1 - s)).to_integral_value(ROUND_FLOOR))
def decide(q, venues, amt, tin, tout, excluded=None):
    best = max((q(v, amt) for v in venues), key=lambda x: x.amount_out)
    return Decision("single", (Leg(best.venue, amt, best.amount_out, best.fee),), best.amount_out, f"{best.venue} best")
