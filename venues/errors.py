"""Venue errors, each with the code a client sees and whether a retry can help."""

from __future__ import annotations


class AmmError(Exception):
    code = "AMM_ERROR"
    retryable = False

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NoPoolError(AmmError):
    """No pool trades the pair: final, no route exists."""

    code = "NO_ROUTE"


class InsufficientLiquidityError(AmmError):
    """The pool cannot fill the size (DLMM ran out of bins, or reserves): final."""

    code = "INSUFFICIENT_LIQUIDITY"


class SlippageExceededError(AmmError):
    """Output below the minimum at execution time; retryable with a fresh quote.

    ``code`` is the venue's own program error (Raydium AMM v4 ``0x1e``,
    Raydium CPMM ``0x1775``, Meteora DLMM ``0x1773``).
    """

    code = "EXCEEDED_SLIPPAGE"
    retryable = True


class VenueUnavailableError(AmmError):
    code = "VENUE_UNAVAILABLE"
    retryable = True
