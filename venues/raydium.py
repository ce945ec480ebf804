"""Raydium constant-product pools: AMM v4 and CPMM, exact-in, integer math.

AMM v4 (raydium-amm ``math.rs``): ``fee = ceil(in * 25 / 10000)``,
``x = in - fee``, ``out = floor(R_out * x / (R_in + x))``; the whole input goes
into the vault (the fee stays with the LPs). Below the minimum: ``0x1e``.

CPMM (raydium-cp-swap ``curve``): the trade fee rate is over 10^6 with tiers
0.01 %, 0.25 %, 1 %; the protocol (12 %) and fund (4 %) shares of the fee are
floor-divided and leave the pool's reserves. Below the minimum: ``0x1775``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from venues.errors import InsufficientLiquidityError, NoPoolError, SlippageExceededError
from venues.fills import Fill, ceil_div

CPMM_TIERS_PPM = (100, 2_500, 10_000)
CPMM_PROTOCOL_SHARE_PPM = 120_000
CPMM_FUND_SHARE_PPM = 40_000


@dataclass(frozen=True)
class ConstantProductPool:
    pool_id: str
    mint_a: str
    mint_b: str
    reserve_a: int
    reserve_b: int
    fee_numerator: int = 25
    fee_denominator: int = 10_000
    withheld_share_ppm: int = 0  # part of the fee that leaves the reserves (CPMM protocol + fund)
    slippage_code: str = "RAYDIUM_EXCEEDED_SLIPPAGE_0x1e"

    @classmethod
    def amm_v4(cls, pool_id: str, mint_a: str, mint_b: str, reserve_a: int, reserve_b: int) -> ConstantProductPool:
        return cls(pool_id, mint_a, mint_b, reserve_a, reserve_b)

    @classmethod
    def cpmm(
        cls, pool_id: str, mint_a: str, mint_b: str, reserve_a: int, reserve_b: int, fee_ppm: int = 2_500
    ) -> ConstantProductPool:
        if fee_ppm not in CPMM_TIERS_PPM:
            raise ValueError(f"CPMM fee tier must be one of {CPMM_TIERS_PPM} ppm")
        return cls(
            pool_id,
            mint_a,
            mint_b,
            reserve_a,
            reserve_b,
            fee_numerator=fee_ppm,
            fee_denominator=1_000_000,
            withheld_share_ppm=CPMM_PROTOCOL_SHARE_PPM + CPMM_FUND_SHARE_PPM,
            slippage_code="RAYDIUM_CPMM_EXCEEDED_SLIPPAGE_0x1775",
        )

    @property
    def mints(self) -> tuple[str, str]:
        return self.mint_a, self.mint_b

    def _sides(self, mint_in: str) -> tuple[int, int, bool]:
        if mint_in == self.mint_a:
            return self.reserve_a, self.reserve_b, True
        if mint_in == self.mint_b:
            return self.reserve_b, self.reserve_a, False
        raise NoPoolError(f"pool {self.pool_id} does not trade {mint_in}")

    def spot_price(self, mint_in: str) -> Decimal:
        """Raw units of the other token per raw unit of ``mint_in``."""
        r_in, r_out, _ = self._sides(mint_in)
        return Decimal(r_out) / Decimal(r_in)

    def fee_for(self, amount_in: int) -> int:
        """The trade fee, rounded up: even one base unit pays."""
        return ceil_div(amount_in * self.fee_numerator, self.fee_denominator)

    def swap(self, mint_in: str, amount_in: int, now: float = 0.0) -> Fill:
        del now  # constant-product pools have no time-dependent fee
        if amount_in <= 0:
            raise ValueError("amount_in must be positive")
        r_in, r_out, a_to_b = self._sides(mint_in)
        fee = self.fee_for(amount_in)
        x = amount_in - fee
        out = r_out * x // (r_in + x)
        if out <= 0:
            raise InsufficientLiquidityError(f"{self.pool_id}: {amount_in} base units buy nothing after fees")
        withheld = fee * self.withheld_share_ppm // 1_000_000
        new_in, new_out = r_in + amount_in - withheld, r_out - out
        state = ConstantProductPool(  # field by field: dataclasses.replace costs more than the swap's math
            self.pool_id,
            self.mint_a,
            self.mint_b,
            new_in if a_to_b else new_out,
            new_out if a_to_b else new_in,
            self.fee_numerator,
            self.fee_denominator,
            self.withheld_share_ppm,
            self.slippage_code,
        )
        return Fill(
            pool_id=self.pool_id,
            mint_in=mint_in,
            mint_out=self.mint_b if a_to_b else self.mint_a,
            amount_in=amount_in,
            amount_out=out,
            fee=fee,
            spot_price=Decimal(r_out) / Decimal(r_in),
            price_impact=Decimal(x) / Decimal(r_in + x),
            state=state,
        )

    def check_min_out(self, fill: Fill, min_out: int) -> None:
        if fill.amount_out < min_out:
            raise SlippageExceededError(
                f"{self.pool_id}: out {fill.amount_out} below minimum {min_out}", code=self.slippage_code
            )

    def input_for_price(self, mint_in: str, target: Decimal) -> int:
        """Input (before fee) that moves the spot price (out per in) down to ``target``."""
        r_in, r_out, _ = self._sides(mint_in)
        k = Decimal(r_in) * Decimal(r_out)
        new_in = int((k / target).sqrt())
        return max(new_in - r_in, 0)
