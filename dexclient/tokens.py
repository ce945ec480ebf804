"""Token symbols a person types (SOL, USDC …) to the mint addresses the API takes."""

from __future__ import annotations

import base58

from venues.tokens import TOKENS

SYMBOLS: dict[str, str] = {token.symbol.upper(): token.mint for token in TOKENS.values()}


def is_mint(value: str) -> bool:
    if not 32 <= len(value) <= 44:
        return False
    try:
        return len(base58.b58decode(value)) == 32
    except ValueError:
        return False


def resolve(token: str) -> str:
    """A mint address as given, or the mint of a known symbol (any case); ValueError otherwise."""
    mint = SYMBOLS.get(token.strip().upper())
    if mint is not None:
        return mint
    if is_mint(token.strip()):
        return token.strip()
    known = ", ".join(token.symbol for token in TOKENS.values())
    raise ValueError(f"unknown token {token!r}: give a mint address or one of {known}")


def symbol(mint: str) -> str:
    """The symbol of a known mint, else the mint shortened (``So11…1112``)."""
    token = TOKENS.get(mint)
    return token.symbol if token is not None else f"{mint[:4]}…{mint[-4:]}"
