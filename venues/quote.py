"""What pricing an exact-in swap against one venue's pool gives, in whole-token terms for display."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from venues.fills import Fill
from venues.tokens import TOKENS


@dataclass(frozen=True)
class VenueQuote:
    venue: str
    token_in: str
    token_out: str
    amount_in: int
    amount_out: int
    fee: int
    price_impact: Decimal
    spot_price: Decimal  # whole token_out per whole token_in, before the trade
    pool_id: str


def venue_quote(venue: str, fill: Fill, decimals_in: int | None = None, decimals_out: int | None = None) -> VenueQuote:
    """A fill as a quote; decimals default to the token registry's."""
    din = decimals_in if decimals_in is not None else TOKENS[fill.mint_in].decimals
    dout = decimals_out if decimals_out is not None else TOKENS[fill.mint_out].decimals
    return VenueQuote(
        venue=venue,
        token_in=fill.mint_in,
        token_out=fill.mint_out,
        amount_in=fill.amount_in,
        amount_out=fill.amount_out,
        fee=fill.fee,
        price_impact=fill.price_impact,
        spot_price=fill.spot_price.scaleb(din - dout),
        pool_id=fill.pool_id,
    )
