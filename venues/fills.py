"""The result of pricing a swap against one pool: shared by every pool kind."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Fill:
    """What an exact-in swap gives, plus the pool state it leaves behind.

    ``spot_price`` and ``price_impact`` are exact ratios of raw units (out per
    in) turned into ``Decimal``; ``state`` is opaque to callers and is what
    ``commit`` installs.
    """

    pool_id: str
    mint_in: str
    mint_out: str
    amount_in: int
    amount_out: int
    fee: int
    spot_price: Decimal
    price_impact: Decimal
    state: Any
