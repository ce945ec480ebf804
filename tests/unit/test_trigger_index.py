"""The trigger's index: the bisect bound, O(log n + fired) per update, expiry, sniper lookup, and the bound's math."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from solders.pubkey import Pubkey

from services.router.trigger import armed_from_event, marginal_price
from services.router.trigger_index import LIMIT, SNIPER, Armed, LimitBook, TriggerIndex
from venues.onchain import PoolSnapshot
from venues.raydium import ConstantProductPool

SOL, USDC = "So11111111111111111111111111111111111111112", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"


def limit(order_id: str, price: str, expires: float = 1e12, pair: tuple[str, str] = (SOL, USDC)) -> Armed:
    return Armed(order_id, LIMIT, pair[0], pair[1], Decimal(1), expires, limit_price=Decimal(price))


def test_only_orders_at_or_below_the_bound_are_candidates_most_demanding_first() -> None:
    index = TriggerIndex()
    for i, price in enumerate(["149", "150", "150", "151.2", "155", "160"]):
        index.arm(limit(f"o{i}", price))
    got = [o.order_id for o in index.limit_candidates((SOL, USDC), Decimal("151.2"))]
    assert got == ["o3", "o2", "o1", "o0"]
    assert index.limit_candidates((SOL, USDC), Decimal("148.99")) == []
    assert index.limit_candidates((USDC, SOL), Decimal("1000")) == [], "each direction is its own book"


def test_disarm_removes_from_book_and_a_second_arm_is_refused() -> None:
    index = TriggerIndex()
    assert index.arm(limit("a", "150"))
    assert not index.arm(limit("a", "150"))
    index.arm(limit("b", "150"))
    assert index.disarm("a") is not None and index.disarm("a") is None
    assert [o.order_id for o in index.limit_candidates((SOL, USDC), Decimal(200))] == ["b"]
    index.disarm("b")
    assert (SOL, USDC) not in index.books and len(index) == 0


def test_an_update_costs_log_n_plus_fired_not_n() -> None:
    """100,000 armed orders: a bound that admits 10 looks at 10 (bisect), in far less time than a scan."""
    book = LimitBook()
    for i in range(100_000):
        book.add(Decimal(100) + Decimal(i) / 1000, f"o{i:06d}")
    bound = Decimal(100) + Decimal(9) / 1000
    started = time.perf_counter()
    for _ in range(1000):
        got = book.at_or_below(bound)
    per_update = (time.perf_counter() - started) / 1000
    assert len(got) == 10
    scan_started = time.perf_counter()
    for _ in range(10):
        [k for k in book.keys if k[0] <= bound]
    per_scan = (time.perf_counter() - scan_started) / 10
    assert per_update * 50 < per_scan, (per_update, per_scan)


def test_expiry_heap_pops_due_orders_in_time_order_and_skips_disarmed() -> None:
    index = TriggerIndex()
    index.arm(limit("late", "1", expires=30))
    index.arm(limit("early", "1", expires=10))
    index.arm(limit("gone", "1", expires=5))
    index.disarm("gone")
    assert index.next_expiry() == 10
    assert [o.order_id for o in index.due(20)] == ["early"]
    assert "early" not in index and "late" in index
    assert index.due(29.9) == []
    assert [o.order_id for o in index.due(30)] == ["late"]
    assert index.next_expiry() is None


def test_snipers_by_pair() -> None:
    index = TriggerIndex()
    sniper = Armed("s", SNIPER, USDC, "NewMint", Decimal(10), 1e12, min_liquidity=Decimal(5000))
    index.arm(sniper)
    assert index.snipers_of((USDC, "NewMint")) == [sniper]
    assert index.snipers_of(("NewMint", USDC)) == []
    index.disarm("s")
    assert index.pairs() == set()


def test_marginal_price_bounds_every_size_after_fees() -> None:
    pool = ConstantProductPool.cpmm("p", SOL, USDC, 1_000 * 10**9, 150_000 * 10**6, fee_ppm=2_500)
    snap = PoolSnapshot(
        "raydium", Pubkey.default(), (Pubkey.from_string(SOL), Pubkey.from_string(USDC)), (9, 6), (0, 0), pool, 0, ()
    )
    bound = marginal_price(snap, SOL)
    assert bound == Decimal(150) * (1 - Decimal("0.0025"))
    for amount in (10**4, 10**6, 10**9, 50 * 10**9):
        fill = pool.swap(SOL, amount)
        assert Decimal(fill.amount_out).scaleb(-6) / Decimal(amount).scaleb(-9) <= bound
    assert marginal_price(snap, USDC) <= Decimal(1) / 150


def test_waiting_event_arms_with_what_it_waits_for() -> None:
    event: dict[str, Any] = {
        "orderId": "x",
        "status": "waiting",
        "seq": 2,
        "data": {
            "type": "limit",
            "tokenIn": SOL,
            "tokenOut": USDC,
            "amountIn": "1.5",
            "limitPrice": "151.2",
            "expiresAt": "2030-01-01T00:00:00.000000Z",
        },
    }
    armed = armed_from_event(event)
    assert armed is not None and armed.limit_price == Decimal("151.2") and armed.amount_in == Decimal("1.5")
    assert armed_from_event({**event, "data": {**event["data"], "type": "market"}}) is None
