"""The armed (waiting) limit and sniper orders, indexed so that a pool update costs O(log n + fired).

- Limit orders: one book per (token_in, token_out) direction, sorted by
  limitPrice. A pool update gives an upper bound on what any size can get
  (the best marginal price after fees of the pair's open pools): only the
  orders with limitPrice <= that bound can fire, and ``bisect`` finds them
  without looking at the others. Each candidate is then checked with the exact
  quote for its size by the caller.
- Sniper orders: by (token_in, token_out): a pool holding the pair is looked
  at only by the snipers of that pair.
- Expiry: a heap of (expiresAt, order id); entries of orders that left the
  index are skipped when they surface (lazy deletion).

Pure data structures, no I/O: ``services.router.trigger`` drives them.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right, insort
from dataclasses import dataclass
from decimal import Decimal

Pair = tuple[str, str]  # (token_in, token_out): one direction

LIMIT = "limit"
SNIPER = "sniper"


@dataclass(slots=True)
class Armed:
    order_id: str
    kind: str  # "limit" | "sniper"
    token_in: str
    token_out: str
    amount_in: Decimal  # whole tokens of token_in
    expires_at: float  # unix seconds
    limit_price: Decimal | None = None  # limit: least token_out per one token_in
    min_liquidity: Decimal | None = None  # sniper: least token_in reserve (whole tokens) of the pool

    @property
    def pair(self) -> Pair:
        return self.token_in, self.token_out


class LimitBook:
    """The limit orders of one direction, ascending by limitPrice."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys: list[tuple[Decimal, str]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, price: Decimal, order_id: str) -> None:
        insort(self.keys, (price, order_id))

    def remove(self, price: Decimal, order_id: str) -> None:
        i = bisect_right(self.keys, (price, order_id)) - 1
        if i >= 0 and self.keys[i] == (price, order_id):
            del self.keys[i]

    def at_or_below(self, bound: Decimal) -> list[str]:
        """Orders whose limitPrice <= ``bound``, the most demanding first: O(log n + k)."""
        end = bisect_right(self.keys, (bound, "\uffff"))
        return [order_id for _, order_id in reversed(self.keys[:end])]


class TriggerIndex:
    def __init__(self) -> None:
        self.orders: dict[str, Armed] = {}
        self.books: dict[Pair, LimitBook] = {}
        self.snipers: dict[Pair, set[str]] = {}
        self.expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self.orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self.orders

    def arm(self, order: Armed) -> bool:
        """Index ``order``; False when it was already armed."""
        if order.order_id in self.orders:
            return False
        self.orders[order.order_id] = order
        if order.kind == LIMIT:
            assert order.limit_price is not None
            self.books.setdefault(order.pair, LimitBook()).add(order.limit_price, order.order_id)
        else:
            self.snipers.setdefault(order.pair, set()).add(order.order_id)
        heapq.heappush(self.expiries, (order.expires_at, order.order_id))
        return True

    def disarm(self, order_id: str) -> Armed | None:
        """Remove the order (fired, expired, cancelled, or seen to move on); None when it was not armed."""
        order = self.orders.pop(order_id, None)
        if order is None:
            return None
        if order.kind == LIMIT:
            book = self.books.get(order.pair)
            if book is not None:
                assert order.limit_price is not None
                book.remove(order.limit_price, order_id)
                if not book:
                    del self.books[order.pair]
        else:
            snipers = self.snipers.get(order.pair)
            if snipers is not None:
                snipers.discard(order_id)
                if not snipers:
                    del self.snipers[order.pair]
        # Its expiry entry stays in the heap until it surfaces (then skipped): O(1) here.
        if len(self.expiries) > 2 * len(self.orders) + 1024:
            self.expiries = [(at, oid) for at, oid in self.expiries if oid in self.orders]
            heapq.heapify(self.expiries)
        return order

    def limit_candidates(self, pair: Pair, bound: Decimal) -> list[Armed]:
        book = self.books.get(pair)
        if book is None:
            return []
        return [self.orders[order_id] for order_id in book.at_or_below(bound)]

    def snipers_of(self, pair: Pair) -> list[Armed]:
        return [self.orders[order_id] for order_id in self.snipers.get(pair, ())]

    def pairs(self) -> set[Pair]:
        """Every direction with an armed order."""
        return set(self.books) | set(self.snipers)

    def next_expiry(self) -> float | None:
        while self.expiries and self.expiries[0][1] not in self.orders:
            heapq.heappop(self.expiries)
        return self.expiries[0][0] if self.expiries else None

    def due(self, now: float) -> list[Armed]:
        """Armed orders whose expiresAt has come, removed from the index."""
        out = []
        while self.expiries and self.expiries[0][0] <= now:
            _, order_id = heapq.heappop(self.expiries)
            order = self.disarm(order_id)
            if order is not None:
                out.append(order)
        return out
