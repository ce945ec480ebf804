"""The trigger's logic without processes: arming from events, firing once by CAS, losing a race, expiring on time,
a catch-up that does not re-arm what left meanwhile, snipers on the cluster's clock."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
from solders.pubkey import Pubkey

from dexengine.v1 import common_pb2, orders_pb2
from services.common import codec, states
from services.common.config import Settings
from services.router.trigger import Trigger
from venues.onchain import PoolSnapshot
from venues.raydium import ConstantProductPool

SOL, USDC = "So11111111111111111111111111111111111111112", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
NEW = str(Pubkey.new_unique())


def snapshot(price: int, mint_a: str = SOL, mint_b: str = USDC, open_time: int = 0, reserve_b: int = 150_000) -> Any:
    pool = ConstantProductPool.cpmm("p", mint_a, mint_b, reserve_b // price * 10**9, reserve_b * 10**6, fee_ppm=2_500)
    return PoolSnapshot(
        "raydium",
        Pubkey.new_unique(),
        (Pubkey.from_string(mint_a), Pubkey.from_string(mint_b)),
        (9, 6),
        (pool.reserve_a, pool.reserve_b),
        pool,
        open_time,
        (),
    )


@dataclass
class FakeStream:
    hooks: list[Any] = field(default_factory=list)

    def on_connect(self, hook: Any) -> None:
        self.hooks.append(hook)


class FakeFeed:
    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.stream = FakeStream()
        self.ready = asyncio.Event()
        self.ready.set()
        self.by_pair: dict[tuple[str, frozenset[str]], list[Any]] = {}

    def put(self, snap: Any) -> None:
        self.by_pair[(snap.venue, frozenset(str(m) for m in snap.mints))] = [snap]
        for listener in self.listeners:
            listener([snap], time.time())

    def pools_for(self, venue: str, mint_in: str, mint_out: str, now: float | None = None) -> list[Any]:
        at = time.time() if now is None else now
        return [p for p in self.by_pair.get((venue, frozenset((mint_in, mint_out))), []) if p.open_time <= at]


class FakeQuoter:
    price = Decimal(150)

    def executable(self, token_in: str, token_out: str, amount_in: Decimal, at_least: Decimal | None = None) -> Any:
        return self.price, "raydium"


class FakeOrders:
    def __init__(self) -> None:
        self.requests: list[orders_pb2.TransitionRequest] = []
        self.lose: set[str] = set()
        self.waiting: list[common_pb2.Order] = []

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(order id, the status each transition asked for), in call order."""
        return [(r.order_id, states.EXPIRED if r.HasField("expire") else states.ROUTING) for r in self.requests]

    async def Transition(self, request: orders_pb2.TransitionRequest, timeout: float) -> Any:
        self.requests.append(request)
        if request.order_id in self.lose:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.FAILED_PRECONDITION, grpc.aio.Metadata(), grpc.aio.Metadata(), "stale transition"
            )
        return orders_pb2.TransitionResponse()

    async def ListOrders(self, request: orders_pb2.ListOrdersRequest, timeout: float) -> Any:
        return orders_pb2.ListOrdersResponse(orders=self.waiting)


def waiting_event(order_id: str, limit: str | None = None, expires_in: float = 600, **data: Any) -> dict[str, Any]:
    at = codec.iso(datetime.fromtimestamp(time.time() + expires_in, tz=UTC))
    body = {"type": "limit", "tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "expiresAt": at, **data}
    if limit is not None:
        body["limitPrice"] = limit
    return {"orderId": order_id, "status": "waiting", "seq": 2, "data": body}


def make() -> tuple[Trigger, FakeFeed, FakeQuoter, FakeOrders]:
    feed, quoter, orders = FakeFeed(), FakeQuoter(), FakeOrders()
    trigger = Trigger(Settings(), feed, quoter, orders)  # type: ignore[arg-type]
    return trigger, feed, quoter, orders


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


async def test_a_limit_fires_once_when_its_price_is_reached_and_not_before() -> None:
    trigger, feed, quoter, orders = make()
    feed.put(snapshot(150))
    trigger.apply_event(waiting_event("a", limit="151.2"))
    trigger.apply_event(waiting_event("b", limit="170"))
    await settle()
    assert orders.calls == [], "150 is below both limits"
    quoter.price = Decimal("152")
    feed.put(snapshot(155))
    await settle()
    feed.put(snapshot(156))  # a second update: "a" is no longer armed here
    await settle()
    assert orders.calls == [("a", "routing")]
    fired = orders.requests[0].fire.triggered
    assert (fired.kind, fired.price, fired.venue) == ("limit", "152", "raydium")
    # The bound is a price on the wire like any other: 12 significant digits, not the context's 28.
    assert len(Decimal(fired.bound).as_tuple().digits) <= 12 and Decimal(fired.bound) > Decimal(150), fired.bound
    assert "a" not in trigger.index and "b" in trigger.index
    trigger.apply_event({"orderId": "b", "status": "cancelled", "seq": 3, "data": {}})
    assert "b" not in trigger.index, "any later status disarms"
    await trigger.close()


async def test_a_lost_race_is_normal_and_not_retried() -> None:
    trigger, feed, _, orders = make()
    feed.put(snapshot(150))
    orders.lose.add("x")
    trigger.apply_event(waiting_event("x", limit="100"))
    await settle()
    assert orders.calls == [("x", "routing")] and trigger.stats["lost"] == 1
    feed.put(snapshot(151))
    await settle()
    assert orders.calls == [("x", "routing")], "the loser does not try again"
    await trigger.close()


async def test_expiry_fires_on_time_without_any_pool_update() -> None:
    trigger, _, _, orders = make()
    trigger._spawn(trigger._expiry_loop())
    trigger.apply_event(waiting_event("e", limit="999", expires_in=0.3))
    await asyncio.sleep(0.2)
    assert orders.calls == []
    await asyncio.sleep(0.25)
    assert orders.calls == [("e", "expired")]
    await trigger.close()


async def test_catch_up_arms_the_listed_orders_but_not_those_that_left_meanwhile() -> None:
    trigger, feed, _, orders = make()
    feed.put(snapshot(150))
    expires = common_pb2.Order().expires_at
    expires.FromSeconds(int(time.time()) + 600)
    for oid in ("k", "gone"):
        order = common_pb2.Order(
            id=oid,
            type="limit",
            token_in=SOL,
            token_out=USDC,
            amount_in="1",
            limit_price="999",
            status=common_pb2.ORDER_STATUS_WAITING,
        )
        order.expires_at.CopyFrom(expires)
        orders.waiting.append(order)
    real = orders.ListOrders

    async def listing(request: Any, timeout: float) -> Any:
        trigger.apply_event({"orderId": "gone", "status": "cancelled", "seq": 3, "data": {}})  # while listing
        return await real(request, timeout)

    orders.ListOrders = listing  # type: ignore[method-assign]
    await trigger.catch_up()
    assert "k" in trigger.index and "gone" not in trigger.index
    await trigger.close()


async def test_a_sniper_ignores_a_thin_pool_and_waits_for_the_clusters_clock() -> None:
    trigger, feed, _, orders = make()
    sniper = waiting_event("s", type="sniper", tokenIn=USDC, tokenOut=NEW, amountIn="10", minLiquidity="5000")
    trigger.apply_event(sniper)
    feed.put(snapshot(2, NEW, USDC, reserve_b=1_000))
    await settle()
    assert orders.calls == [], "1,000 USDC < minLiquidity"
    opens = int(time.time()) + 2  # far enough ahead that a loaded machine cannot reach it before the next checks
    feed.put(snapshot(2, NEW, USDC, open_time=opens, reserve_b=50_000))
    await settle()
    assert orders.calls == [] and trigger.opening, "deep, not open yet: waiting for its open time"
    trigger._on_slot(None)  # a slot stamped before the open time
    await settle()
    assert orders.calls == []
    await asyncio.sleep(opens + 0.02 - time.time())
    trigger._on_slot(None)  # the first slot stamped with the open time
    await settle()
    assert orders.calls == [("s", "routing")]
    await trigger.close()
