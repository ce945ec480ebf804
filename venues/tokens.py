"""Token registry (real mainnet mints and decimals) and base-unit conversion.

Every amount inside the venues is an ``int`` of base units; whole-token
``Decimal`` values exist only at the edges (the API takes whole tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal


@dataclass(frozen=True)
class Token:
    symbol: str
    mint: str
    decimals: int


SOL = Token("SOL", "So11111111111111111111111111111111111111112", 9)
USDC = Token("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6)
USDT = Token("USDT", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6)
JUP = Token("JUP", "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN", 6)
BONK = Token("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5)
MSOL = Token("mSOL", "mSoLzYCxHdYgdzU16g5QSh3i5K3z3KZK7ytfqcJm7So", 9)

TOKENS: dict[str, Token] = {t.mint: t for t in (SOL, USDC, USDT, JUP, BONK, MSOL)}


def token_by_mint(mint: str) -> Token | None:
    return TOKENS.get(mint)


def token_by_symbol(symbol: str) -> Token:
    for token in TOKENS.values():
        if token.symbol == symbol:
            return token
    raise KeyError(symbol)


def to_base_units(amount: Decimal, decimals: int) -> int:
    """``raw = floor(ui * 10^dec)``: never credit a fraction of a base unit."""
    return int((amount * (Decimal(10) ** decimals)).to_integral_value(ROUND_FLOOR))


def from_base_units(raw: int, decimals: int) -> Decimal:
    return Decimal(raw).scaleb(-decimals)
