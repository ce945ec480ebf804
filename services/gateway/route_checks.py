"""The door's pair check, remembered briefly: a pair the router said an open pool trades is not asked again
for ROUTE_OK_TTL_S.

Only a yes is remembered (a pair with no pool may get one at any moment, and its refusal must name the field
as the router does), and only for an amount of at least one base unit of token_in, which the router's answer
says. A pool closed within the window is met by execution (NO_ROUTE), as when the router cannot answer.
"""

from __future__ import annotations

import time
from decimal import Decimal

ROUTE_OK_TTL_S = 2.0
MAX_PAIRS = 10_000


class RouteChecks:
    def __init__(self, ttl_s: float = ROUTE_OK_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.open: dict[tuple[str, str], tuple[float, Decimal]] = {}  # pair -> (until, one base unit of token_in)

    def known_open(self, token_in: str, token_out: str, amount_in: Decimal) -> bool:
        entry = self.open.get((token_in, token_out))
        if entry is None:
            return False
        until, unit = entry
        if time.monotonic() >= until:
            del self.open[(token_in, token_out)]
            return False
        return amount_in >= unit

    def remember(self, token_in: str, token_out: str, decimals_in: int) -> None:
        if len(self.open) >= MAX_PAIRS:
            self.open.clear()
        self.open[(token_in, token_out)] = (time.monotonic() + self.ttl_s, Decimal(1).scaleb(-decimals_in))
