"""The limit/sniper trigger: armed orders evaluated on every pool account update.

It lives in the router because the router already holds every pool account
live (programSubscribe / accountSubscribe through ``PoolFeed``) and the exact
quote math: a limit order is a standing quote. How it learns and keeps the
armed orders:

- An exclusive queue of its own on the ``orders.events`` fanout: a ``waiting``
  event arms an order (its data says what it waits for), any later status
  disarms it.
- On every (re)start and AMQP reconnect, and every ``TRIGGER_RESYNC_S``, it
  catches up by listing the ``waiting`` orders from orders (paged): nothing
  armed while it was down or disconnected is missed, and the pool feed's own
  reload on (re)connect re-evaluates every pool, so a price that moved while
  it was down fires on restart.

Firing is a compare-and-set through orders: ``Transition`` waiting -> routing
(event data ``triggered``), which enqueues the execution job in the same
transaction. Every replica evaluates everything; the CAS lets exactly one
fire, and a lost CAS is normal. Expiry is a heap in ``TriggerIndex``, served by
a timer: waiting -> expired on time with no market activity at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import grpc
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from dexengine.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from services.common import amqp, codec, metrics, states
from services.common.config import Settings
from services.common.decimals import fmt, parse_decimal, ratio
from services.router.pool_feed import PoolFeed
from services.router.trigger_index import LIMIT, SNIPER, Armed, Pair, TriggerIndex
from venues.dlmm import FEE_PRECISION
from venues.errors import AmmError
from venues.onchain import VENUE_PROGRAMS, PoolSnapshot
from venues.raydium import ConstantProductPool

log = logging.getLogger(__name__)
# The routing keys the trigger hears on orders.events.by-type: the events of orders that can be armed (a market
# order's never reach it), and "": a message published before events carried their order's type (an older relay,
# or an outbox row it left).
EVENT_KEYS = (LIMIT, SNIPER, "")
PAGE = 200
FIRE_CONCURRENCY = 64
RPC_TIMEOUT_S = 5.0
RETRY_S = 1.0
STATS_EVERY_S = 5.0
SLOT_S = 0.4
SLOT_CLOCK_SKEW_S = 0.005  # a slot notification leaves a moment after the slot began
WAITING = states.to_proto(states.WAITING)


def marginal_price(snapshot: PoolSnapshot, token_in: str) -> Decimal:
    """Whole token_out per whole token_in for the first base unit, after the pool's least fee.

    No size does better on this pool (price impact only takes away, and a
    dynamic fee only adds), so over a pair's open pools the largest is a bound
    on every order's executable price, a split's included.
    """
    pool = snapshot.pool
    raw = pool.spot_price(token_in)
    if isinstance(pool, ConstantProductPool):
        fee = Decimal(pool.fee_numerator) / Decimal(pool.fee_denominator)
    else:
        fee = Decimal(pool.base_fee_rate()) / Decimal(FEE_PRECISION)
    i = [str(m) for m in snapshot.mints].index(token_in)
    return (raw * (1 - fee)).scaleb(snapshot.decimals[i] - snapshot.decimals[1 - i])


def armed_from_order(order: common_pb2.Order) -> Armed | None:
    return _armed(
        order.id,
        order.type,
        order.token_in,
        order.token_out,
        order.amount_in,
        order.limit_price,
        order.min_liquidity,
        order.expires_at.ToDatetime(tzinfo=UTC).timestamp() if order.HasField("expires_at") else None,
    )


def armed_from_event(event: dict[str, Any]) -> Armed | None:
    data = event.get("data") or {}
    expires = data.get("expiresAt")
    return _armed(
        str(event.get("orderId", "")),
        str(data.get("type", "")),
        str(data.get("tokenIn", "")),
        str(data.get("tokenOut", "")),
        data.get("amountIn"),
        data.get("limitPrice"),
        data.get("minLiquidity"),
        codec.parse_iso(expires).timestamp() if expires else None,
    )


def _armed(
    order_id: str,
    kind: str,
    token_in: str,
    token_out: str,
    amount_in: Any,
    limit_price: Any,
    min_liquidity: Any,
    expires_at: float | None,
) -> Armed | None:
    amount = parse_decimal(amount_in) if amount_in else None
    if not order_id or not token_in or not token_out or amount is None or expires_at is None:
        return None
    if kind == LIMIT:
        price = parse_decimal(limit_price) if limit_price else None
        if price is None:
            return None
        return Armed(order_id, LIMIT, token_in, token_out, amount, expires_at, limit_price=price)
    if kind == SNIPER:
        minimum = parse_decimal(min_liquidity) if min_liquidity not in (None, "") else None
        if minimum is None:
            return None
        return Armed(order_id, SNIPER, token_in, token_out, amount, expires_at, min_liquidity=minimum)
    return None


class Trigger:
    def __init__(
        self,
        settings: Settings,
        feed: PoolFeed,
        quoter: Any,  # RouterServicer: executable(token_in, token_out, amount_in, at_least)
        orders: orders_pb2_grpc.OrdersAsyncStub,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.quoter = quoter
        self.orders = orders
        self.index = TriggerIndex()
        self.dirty: dict[Pair, float] = {}  # pairs to evaluate -> when their pool update arrived
        self.scheduled = False
        self.timers: dict[tuple[Pair, int], asyncio.TimerHandle] = {}  # backstop wake-ups after a pool's open time
        self.opening: dict[Pair, int] = {}  # pairs whose deep pool opens at this chain time
        self.chain_time: float = 0.0  # unix seconds the cluster's current slot carries (slotSubscribe)
        self.gone: set[str] | None = None  # during a catch-up: orders seen leaving waiting
        self.caught_up = asyncio.Event()
        self.connection: AbstractRobustConnection | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.wake = asyncio.Event()  # the expiry timer: an earlier expiry arrived
        self.firing = asyncio.Semaphore(FIRE_CONCURRENCY)
        self.stats = {"updates": 0, "evaluated": 0, "candidates": 0, "fired": 0, "lost": 0, "expired": 0}
        self.eval_cpu_s = 0.0
        feed.listeners.append(self.on_pools)
        feed.stream.on_connect(self._subscribe_slots)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._run())
        self._spawn(self._expiry_loop())
        self._spawn(self._report())

    async def _report(self) -> None:
        """A stats line when something changed (the bench reads the last one)."""
        last: dict[str, Any] = {}
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            now = self.snapshot()
            if now != last:
                log.info("trigger stats", extra=now)
                last = now

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _run(self) -> None:
        names = amqp.Names(self.settings.amqp_prefix)
        while self.connection is None:
            try:
                self.connection = await amqp.connect(self.settings.amqp_url)
            except (
                OSError,
                aio_pika.exceptions.AMQPError,
            ) as exc:  # RabbitMQ not up yet: the trigger waits, quotes go on
                log.warning("trigger: cannot reach RabbitMQ yet (%s)", exc)
                await asyncio.sleep(RETRY_S)
        # The exclusive queue is gone while the connection is down: catch up after every reconnect.
        self.connection.reconnect_callbacks.add(lambda *_: self._spawn(self.catch_up()))
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=1000)
        by_type = await amqp.declare_events_by_type(channel, names)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for kind in EVENT_KEYS:
            await queue.bind(by_type, routing_key=kind)
        await queue.consume(self.on_event, no_ack=True)
        await self.catch_up()
        while True:
            await asyncio.sleep(self.settings.trigger_resync_s)
            await self.catch_up()

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task
        for handle in self.timers.values():
            handle.cancel()
        if self.connection is not None:
            await self.connection.close()

    # -- learning the armed orders ---------------------------------------------------
    async def catch_up(self) -> None:
        """Arm every order orders holds as waiting (paged); retried until orders answers."""
        while True:
            self.gone = set()
            try:
                armed = await self._list_waiting()
            except grpc.aio.AioRpcError as err:
                log.warning("trigger catch-up failed, retrying: %s", err.details())
                await asyncio.sleep(RETRY_S)
                continue
            gone, self.gone = self.gone, None
            count = 0
            for order in armed:
                if order.order_id not in gone and self.index.arm(order):
                    self._mark(order.pair, time.time())
                    count += 1
            self.caught_up.set()
            metrics.ARMED.set(len(self.index))
            log.info("trigger caught up", extra={"armed": len(self.index), "new": count})
            self._evaluate_all()
            return

    async def _list_waiting(self) -> list[Armed]:
        out: list[Armed] = []
        cursor = ""
        while True:
            resp = await self.orders.ListOrders(
                orders_pb2.ListOrdersRequest(status=WAITING, limit=PAGE, cursor=cursor), timeout=RPC_TIMEOUT_S
            )
            out.extend(a for a in (armed_from_order(o) for o in resp.orders) if a is not None)
            if not resp.next_cursor:
                return out
            cursor = resp.next_cursor

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        try:
            events = amqp.events_of(message.body)
        except ValueError:
            return
        for event in events:  # the message's commits, one after another, each in seq order
            self.apply_event(event)

    def apply_event(self, event: dict[str, Any]) -> None:
        order_id = str(event.get("orderId", ""))
        if event.get("status") == states.WAITING:
            armed = armed_from_event(event)
            if armed is not None and self.index.arm(armed):
                self._mark(armed.pair, time.time())  # it may be executable already
                self.wake.set()
            return
        if self.gone is not None:
            self.gone.add(order_id)
        if self.index.disarm(order_id) is not None:
            self.wake.set()

    # -- evaluating -------------------------------------------------------------
    def on_pools(self, snapshots: list[PoolSnapshot], at: float) -> None:
        """PoolFeed listener: the pairs these pools trade, both directions, are evaluated soon."""
        self.stats["updates"] += 1
        for snapshot in snapshots:
            a, b = (str(m) for m in snapshot.mints)
            for pair in ((a, b), (b, a)):
                if pair in self.index.books or pair in self.index.snipers:
                    self._mark(pair, at)

    def _mark(self, pair: Pair, at: float) -> None:
        self.dirty[pair] = min(at, self.dirty.get(pair, at))
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._evaluate_dirty)

    def _evaluate_all(self) -> None:
        now = time.time()
        for pair in self.index.pairs():
            self._mark(pair, now)

    def _evaluate_dirty(self) -> None:
        self.scheduled = False
        metrics.ARMED.set(len(self.index))
        if not self.feed.ready.is_set():
            return  # the feed tells every pool once loaded
        dirty, self.dirty = self.dirty, {}
        started = time.process_time()
        for pair, at in dirty.items():
            self.stats["evaluated"] += 1
            self._evaluate_limits(pair, at)
            self._evaluate_snipers(pair, at)
        self.eval_cpu_s += time.process_time() - started

    def _open_pools(self, pair: Pair, now: float) -> list[PoolSnapshot]:
        return [p for venue in VENUE_PROGRAMS for p in self.feed.pools_for(venue, pair[0], pair[1], now)]

    def _evaluate_limits(self, pair: Pair, at: float) -> None:
        if pair not in self.index.books:
            return
        now = time.time()
        pools = self._open_pools(pair, now)
        if not pools:
            return
        bound = max(marginal_price(p, pair[0]) for p in pools)
        for order in self.index.limit_candidates(pair, bound):
            self.stats["candidates"] += 1
            assert order.limit_price is not None
            if order.expires_at <= now:
                continue  # the expiry timer has it
            try:
                price, venue = self.quoter.executable(
                    order.token_in, order.token_out, order.amount_in, at_least=order.limit_price
                )
            except AmmError:
                continue
            if price >= order.limit_price:
                self._fire(order, at, common_pb2.Trigger(kind=LIMIT, price=fmt(price), venue=venue, bound=ratio(bound)))

    def _evaluate_snipers(self, pair: Pair, at: float) -> None:
        if pair not in self.index.snipers:
            return
        now = time.time()
        pools = [p for venue in VENUE_PROGRAMS for p in self.feed.by_pair.get((venue, frozenset(pair)), [])]
        chain_now = self._chain_now()
        for order in self.index.snipers_of(pair):
            if order.expires_at <= now:
                continue
            assert order.min_liquidity is not None
            for pool in sorted(pools, key=lambda p: p.open_time):
                i = [str(m) for m in pool.mints].index(order.token_in)
                reserve = Decimal(pool.reserves[i]).scaleb(-pool.decimals[i])
                if reserve < order.min_liquidity:
                    continue
                if pool.open_time > chain_now:
                    self._wake_at(pair, pool.open_time)
                    continue
                triggered = common_pb2.Trigger(
                    kind=SNIPER,
                    pool=str(pool.address),
                    venue=pool.venue,
                    reserve_in=fmt(reserve),
                    open_time=pool.open_time,
                )
                self._fire(order, max(at, float(pool.open_time)), triggered)
                break

    # A pool opens when the cluster's clock says so: a slot's timestamp is the second it began in, so a
    # transaction sent at the open time's wall second may still land in a slot stamped a second earlier
    # (the program refuses it). Snipers fire on the first slot notification whose time reaches the open
    # time; a timer one slot later is the backstop for a cluster that sends no slot notifications.
    async def _subscribe_slots(self) -> None:
        try:
            await self.feed.stream.slot(self._on_slot)
        except Exception as exc:  # noqa: BLE001 - a cluster without slotSubscribe: the timer backstop serves
            log.warning("no slot notifications from the cluster (%s): snipers fire a slot after openTime", exc)

    def _on_slot(self, result: Any) -> None:
        del result
        self.chain_time = float(int(time.time() - SLOT_CLOCK_SKEW_S))
        due = [pair for pair, at in self.opening.items() if at <= self.chain_time]
        for pair in due:
            del self.opening[pair]
            self._mark(pair, time.time())

    def _chain_now(self) -> float:
        return max(self.chain_time, time.time() - SLOT_S)

    def _wake_at(self, pair: Pair, open_time: int) -> None:
        self.opening[pair] = min(open_time, self.opening.get(pair, open_time))
        key = (pair, open_time)
        if key in self.timers:
            return
        loop = asyncio.get_running_loop()

        def due() -> None:
            self.timers.pop(key, None)
            self._mark(pair, time.time())

        self.timers[key] = loop.call_later(max(0.0, open_time + SLOT_S - time.time()) + 0.01, due)

    # -- firing -------------------------------------------------------------
    def _fire(self, order: Armed, observed_at: float, triggered: common_pb2.Trigger) -> None:
        self.index.disarm(order.order_id)  # in flight: this replica evaluates it no more
        triggered.observed_at_ms = int(observed_at * 1000)
        request = orders_pb2.TransitionRequest(
            order_id=order.order_id, expected_status=WAITING, fire=orders_pb2.Fire(triggered=triggered)
        )
        self._spawn(self._transition(order, request))

    async def _transition(self, order: Armed, request: orders_pb2.TransitionRequest) -> None:
        new = states.EXPIRED if request.HasField("expire") else states.ROUTING
        async with self.firing:
            try:
                await self.orders.Transition(request, timeout=RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as err:
                if err.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    self.stats["lost"] += 1  # another replica fired it, or it was cancelled: normal
                    log.info("trigger lost the race for %s (%s)", order.order_id, err.details())
                    return
                log.warning("trigger could not move %s to %s, re-arming: %s", order.order_id, new, err.details())
                await asyncio.sleep(RETRY_S)
                if self.index.arm(order):
                    self._mark(order.pair, time.time())
                    self.wake.set()
                return
        if new == states.ROUTING:
            self.stats["fired"] += 1
            metrics.TRIGGERS.labels(order.kind).inc()
            lag_ms = time.time() * 1000 - request.fire.triggered.observed_at_ms
            log.info("order triggered", extra={"orderId": order.order_id, "kind": order.kind, "lagMs": int(lag_ms)})
        else:
            self.stats["expired"] += 1
            metrics.TRIGGERS.labels("expired").inc()
            log.info("order expired", extra={"orderId": order.order_id})

    async def _expiry_loop(self) -> None:
        while True:
            self.wake.clear()
            now = time.time()
            for order in self.index.due(now):
                expires = codec.iso(_utc(order.expires_at))
                request = orders_pb2.TransitionRequest(
                    order_id=order.order_id, expected_status=WAITING, expire=orders_pb2.Expire(expires_at=expires)
                )
                self._spawn(self._transition(order, request))
            following = self.index.next_expiry()
            timeout = None if following is None else max(0.0, following - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()

    def snapshot(self) -> dict[str, Any]:
        return {"armed": len(self.index), **self.stats, "evalCpuMs": round(self.eval_cpu_s * 1000, 3)}


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
