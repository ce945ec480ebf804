"""Simulated venues with the pools' own integer math (Raydium, Meteora DLMM).

Public surface for the router service; see the modules for the math.
"""

from services.router.amm.routing import Decision, Leg, decide, min_amount_out
from venues.errors import (
    AmmError,
    InsufficientLiquidityError,
    NoPoolError,
    SlippageExceededError,
    VenueUnavailableError,
)
from venues.quote import VenueQuote
from venues.tokens import TOKENS, Token, from_base_units, to_base_units, token_by_mint

__all__ = [
    "TOKENS",
    "AmmError",
    "Decision",
    "InsufficientLiquidityError",
    "Leg",
    "NoPoolError",
    "SlippageExceededError",
    "Token",
    "VenueQuote",
    "VenueUnavailableError",
    "decide",
    "from_base_units",
    "min_amount_out",
    "to_base_units",
    "token_by_mint",
]
