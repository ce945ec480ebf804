"""Simulated venues with the pools' own integer math (Raydium, Meteora DLMM).

Public surface for the router service; see the modules for the math.
"""

from services.router.amm.errors import (
    AmmError,
    InsufficientLiquidityError,
    NoPoolError,
    SlippageExceededError,
    VenueUnavailableError,
)
from services.router.amm.market import Market, VenueQuote
from services.router.amm.routing import Decision, Leg, decide, min_amount_out
from services.router.amm.tokens import TOKENS, Token, from_base_units, to_base_units, token_by_mint

__all__ = [
    "TOKENS",
    "AmmError",
    "Decision",
    "InsufficientLiquidityError",
    "Leg",
    "Market",
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
