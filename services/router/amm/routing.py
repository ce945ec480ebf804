"""The routing decision: best single venue, or a split on a 10 % grid.

When each venue's output is concave in its input (one pool per venue: a
constant-product curve, or bins whose price and fee only rise as a swap walks
them), the split's total is concave in the share too, so the grid is walked
from the best venue's side and the walk stops at the first fall: the grid's
best, found in one step (two quotes) for an order that no split helps. With
several pools per venue (the best pool for each amount: not concave) every
grid point is tried.

Quotes are exact-in outputs net of every fee, so comparing outputs compares
venues net of fees. A split is chosen only when it beats the best single venue
by at least ``SPLIT_MIN_GAIN_BPS`` (a second leg costs compute units and adds a
second slippage check); the reason says by how much and against what.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from venues.errors import AmmError, InsufficientLiquidityError
from venues.quote import VenueQuote
from venues.tokens import Token, from_base_units

GRID_PERCENT = tuple(range(10, 100, 10))
SPLIT_MIN_GAIN_BPS = Decimal(1)

QuoteFn = Callable[[str, int], VenueQuote]


@dataclass(frozen=True)
class Leg:
    venue: str
    amount_in: int
    amount_out: int
    fee: int
    pool_id: str = ""


@dataclass(frozen=True)
class Decision:
    kind: str  # "single" | "split"
    legs: tuple[Leg, ...]
    amount_out: int
    reason: str


def min_amount_out(amount_out: int, slippage: Decimal) -> int:
    """``floor(out * (1 - slippage))``: the least a swap may give before it fails."""
    return int((Decimal(amount_out) * (1 - slippage)).to_integral_value(ROUND_FLOOR))


def _gain_pct(better: int, worse: int) -> str:
    if worse <= 0:
        return "only quote"
    return f"{(Decimal(better - worse) / Decimal(worse) * 100).quantize(Decimal('0.01')):+} %"


def _try(quote_fn: QuoteFn, venue: str, amount: int) -> VenueQuote | None:
    try:
        return quote_fn(venue, amount)
    except AmmError:
        return None


def decide(
    quote_fn: QuoteFn,
    venues: list[str],
    amount_in: int,
    token_in: Token,
    token_out: Token,
    excluded: Mapping[str, str] | None = None,
    *,
    concave: bool = False,
) -> Decision:
    """Choose how to fill ``amount_in``; ``InsufficientLiquidityError`` when nothing can.

    ``concave``: each venue's output is concave in its input (see the module's docstring)."""
    size = f"{from_base_units(amount_in, token_in.decimals).normalize():f} {token_in.symbol}"
    singles = [q for q in (_try(quote_fn, v, amount_in) for v in venues) if q is not None]
    singles.sort(key=lambda q: (-q.amount_out, q.venue))
    left_out = "".join(f"; {v} excluded: {why}" for v, why in sorted((excluded or {}).items()))
    ranked = [q.venue for q in singles] + [v for v in venues if v not in {q.venue for q in singles}]
    walk_from = singles[0].amount_out if concave and singles else None  # ranked[0] alone
    split = _best_split(quote_fn, ranked[:2], amount_in, concave, walk_from) if len(ranked) > 1 else None
    if not singles:
        if split is None:
            raise InsufficientLiquidityError(f"no venue can fill {size}, alone or split")
        shares = _shares(split, amount_in)
        return Decision("split", split.legs, split.amount_out, f"split {shares}: no venue fills {size} alone{left_out}")
    best = singles[0]
    if len(singles) > 1:
        why = f"{best.venue}: {_gain_pct(best.amount_out, singles[1].amount_out)} net vs {singles[1].venue} at {size}"
    else:
        why = f"{best.venue}: the only venue quoting {size}"
    single = Decision(
        "single",
        (Leg(best.venue, amount_in, best.amount_out, best.fee, best.pool_id),),
        best.amount_out,
        why + left_out,
    )
    if split is None:
        return single
    gain_bps = Decimal(split.amount_out - best.amount_out) / Decimal(best.amount_out) * 10_000
    if gain_bps < SPLIT_MIN_GAIN_BPS:
        return single
    gain = _gain_pct(split.amount_out, best.amount_out)
    reason = f"split {_shares(split, amount_in)}: {gain} net vs {best.venue} alone at {size}"
    return Decision("split", split.legs, split.amount_out, reason + left_out)


def _shares(split: Decision, amount_in: int) -> str:
    return " / ".join(f"{leg.amount_in * 100 // amount_in} % {leg.venue}" for leg in split.legs)


def _best_split(
    quote_fn: QuoteFn, pair: list[str], amount_in: int, concave: bool, walk_from: int | None
) -> Decision | None:
    """The best split of ``amount_in`` between ``pair`` on the grid (the lowest share to ``pair[0]`` among equals).

    ``concave``: walk from the largest share to ``pair[0]`` and stop at the first fall of the total, starting
    from ``walk_from`` (``pair[0]`` alone, when it fills the order). In order: ``pair[0]`` cannot fill the
    largest shares, then the points both can fill, then ``pair[1]`` cannot fill the rest; so the walk also
    stops at the first point it cannot fill after one it could."""
    first, second = pair
    best: Decision | None = None
    previous = walk_from
    for pct in reversed(GRID_PERCENT) if concave else GRID_PERCENT:
        a = amount_in * pct // 100
        b = amount_in - a
        qa, qb = _try(quote_fn, first, a), _try(quote_fn, second, b)
        if qa is None or qb is None:
            if concave and best is not None:
                break
            continue
        total = qa.amount_out + qb.amount_out
        if best is None or total > best.amount_out or (concave and total == best.amount_out):
            legs = (
                Leg(first, a, qa.amount_out, qa.fee, qa.pool_id),
                Leg(second, b, qb.amount_out, qb.fee, qb.pool_id),
            )
            best = Decision("split", legs, total, "")
        if concave:
            if previous is not None and total < previous:
                break
            previous = total
    return best
