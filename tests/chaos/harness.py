"""Load, drain and invariant checks shared by the chaos scenarios."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis

from services.common import amqp, config, states
from services.orders.store import BACKLOG_STATUSES
from tests.support import chain_oracle
from tests.support.client import SOL, USDC, USDT
from tests.support.mesh import Mesh
from tests.support.servers import PrivatePostgres, PrivateRabbit, PrivateRedis
from tests.support.waiting import eventually

PAIRS = [(SOL, USDC, "0.5"), (USDC, SOL, "100"), (SOL, USDT, "1"), (USDC, USDT, "250")]
# Every LIMIT_EVERY-th order is a limit order priced below the market (about two thirds of it), so that the
# router's trigger fires it at once: the new types run through every fault too (armed, fired by a
# compare-and-set that enqueues the job, then executed), and the invariants hold for them.
LIMIT_EVERY = 5
OUTBOX_DRAIN_S = config.Settings().outbox_orphan_ms / 1000 + 10
LIMIT_PRICES = {(SOL, USDC): "100", (USDC, SOL): "0.0045", (SOL, USDT): "100", (USDC, USDT): "0.66"}


@dataclass
class Stack:
    pg: PrivatePostgres
    redis: PrivateRedis
    rabbit: PrivateRabbit
    mesh: Mesh
    settings: config.Settings


@dataclass
class Load:
    accepted: list[str] = field(default_factory=list)
    rejected: Counter[int] = field(default_factory=Counter)
    watched: dict[str, Watch] = field(default_factory=dict)
    watchers: list[asyncio.Task[None]] = field(default_factory=list)
    # The wallet on the cluster before the load: its token balances and newest signature.
    balances_before: dict[str, int] = field(default_factory=dict)
    ledger_from: str | None = None


async def snapshot_wallet(stack: Stack, load: Load) -> None:
    load.balances_before = await chain_oracle.wallet_balances(stack.mesh.rpc_url, stack.mesh.wallet)
    load.ledger_from = await chain_oracle.newest_signature(stack.mesh.rpc_url, stack.mesh.wallet)


@dataclass
class Watch:
    """Everything one robust client saw of one order: each connection's messages and how it closed."""

    connections: list[list[dict[str, Any]]] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for conn in self.connections for e in conn]

    def problems(self) -> list[str]:
        """Gaps, repeats or a bad first message within a connection, a step back across
        reconnections, and any close code other than 1000 (terminal) or 1013 (try again)."""
        found = []
        last = 0
        for n, conn in enumerate(self.connections):
            if not conn:
                continue
            if not conn[0]["data"].get("snapshot"):
                found.append(f"connection {n} did not start with a snapshot")
            if conn[0]["seq"] < last:
                found.append(f"connection {n} snapshot seq {conn[0]['seq']} < {last} seen before")
            seqs = [e["seq"] for e in conn]
            if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                found.append(f"connection {n} seqs not contiguous: {seqs}")
            last = seqs[-1]
        bad = [c for c in self.close_codes if c not in (1000, 1013)]
        if bad:
            found.append(f"close codes {bad}")
        return found


async def watch_through_faults(session: aiohttp.ClientSession, url: str, into: Watch) -> None:
    """Follow an order's socket like a robust client: on 1013 (or a refused connection) come back, until terminal.

    Every message of every connection is kept, with every close code, for :meth:`Watch.problems`.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            async with session.ws_connect(url) as ws:
                seen: list[dict[str, Any]] = []
                into.connections.append(seen)
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        seen.append(orjson.loads(msg.data))
                into.close_codes.append(ws.close_code)
                if seen and seen[-1]["status"] in states.TERMINAL:
                    return
        except (aiohttp.ClientError, OSError):
            pass  # the gateway is not there right now: a client retries
        await asyncio.sleep(0.5)


async def submit(
    stack: Stack, session: aiohttp.ClientSession, load: Load, count: int, rate: float, watch_every: int = 10
) -> None:
    """POST ``count`` orders at ``rate``/s; follow every ``watch_every``-th over its WebSocket."""
    pairs = itertools.cycle(PAIRS)
    started = time.monotonic()
    for i in range(count):
        token_in, token_out, amount = next(pairs)
        body = {"tokenIn": token_in, "tokenOut": token_out, "amountIn": amount, "slippage": "0.05"}
        if i % LIMIT_EVERY == LIMIT_EVERY - 1:
            body.update(type="limit", limitPrice=LIMIT_PRICES[(token_in, token_out)])
        try:
            async with session.post(f"{stack.mesh.http}/api/orders/execute", json=body) as resp:
                answer = await resp.json(content_type=None)
                if resp.status == 201:
                    load.accepted.append(answer["orderId"])
                    if i % watch_every == 0:
                        watch = Watch()
                        load.watched[answer["orderId"]] = watch
                        load.watchers.append(
                            asyncio.create_task(watch_through_faults(session, answer["websocketUrl"], watch))
                        )
                else:
                    load.rejected[resp.status] += 1
        except aiohttp.ClientError:
            load.rejected[0] += 1
        await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))


async def drain(stack: Stack, order_ids: list[str], timeout: float = 60) -> float:
    """Wait until every order is terminal; return how long it took."""
    started = time.monotonic()
    ids = [*order_ids]
    while True:
        try:
            conn = await asyncpg.connect(stack.pg.url)
            try:
                live = await conn.fetchval(
                    "SELECT count(*) FROM orders WHERE id = ANY($1::uuid[]) AND NOT status = ANY($2::text[])",
                    ids,
                    sorted(states.TERMINAL),
                )
            finally:
                await conn.close()
            if live == 0:
                return time.monotonic() - started
        except (OSError, asyncpg.PostgresError):
            pass
        if time.monotonic() - started > timeout:
            return time.monotonic() - started  # what is still live is counted as stuck by check_invariants
        await asyncio.sleep(0.25)


@dataclass
class Report:
    orders: int
    lost: int
    duplicated: int
    stuck: int
    failed: int
    retried: int
    seconds: float

    def line(self, name: str) -> str:
        return (
            f"{name}: orders={self.orders} lost={self.lost} duplicated={self.duplicated} stuck={self.stuck} "
            f"failed={self.failed} retried={self.retried} time={self.seconds:.1f}s"
        )


async def queue_depth(stack: Stack, name: str) -> int:
    connection = await aio_pika.connect(stack.rabbit.url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        assert queue.declaration_result.message_count is not None
        return queue.declaration_result.message_count
    finally:
        await connection.close()


async def purge(stack: Stack, name: str) -> None:
    connection = await aio_pika.connect(stack.rabbit.url)
    try:
        channel = await connection.channel()
        await (await channel.declare_queue(name, passive=True)).purge()
    finally:
        await connection.close()


async def wait_queues_empty(stack: Stack, timeout: float = 30) -> None:
    names = amqp.Names(stack.settings.amqp_prefix)
    queues = [q for q in names.queues(stack.settings.retry_backoff_ms) if q != names.parking_queue]
    deadline = time.monotonic() + timeout
    while True:
        depths = {q: await queue_depth(stack, q) for q in queues}
        if not any(depths.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"queues not drained: {depths}")
        await asyncio.sleep(0.5)


async def check_invariants(stack: Stack, load: Load, drained_s: float, parked_expected: int | None = 0) -> Report:
    """Every invariant the chaos suite promises, checked on the real stores."""
    conn = await asyncpg.connect(stack.pg.url)
    try:
        rows = await conn.fetch(
            "SELECT id::text, status, retry_count, tx_hash, seq FROM orders WHERE id = ANY($1::uuid[])", load.accepted
        )
        by_id = {r["id"]: r for r in rows}
        lost = len(set(load.accepted) - set(by_id))
        stuck = sum(1 for r in rows if r["status"] not in states.TERMINAL)
        # The orders this load placed without hearing of them (a 503) may still be on their way: a crash's
        # outbox rows are claimed once they are orphans (OUTBOX_ORPHAN_MS), then executed. The stack is quiet
        # first (the outbox drained, no order executing), so that every swap of this load lands in this
        # scenario's ledger and none in the next one's.
        await eventually(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"), timeout=OUTBOX_DRAIN_S, every=0.2)
        await eventually(
            lambda: conn.fetchval(
                "SELECT NOT EXISTS (SELECT 1 FROM orders WHERE status = ANY($1::text[]))", BACKLOG_STATUSES
            ),
            timeout=60,
            every=0.2,
        )
        # Counted on the cluster's own ledger: at most one landed swap per order, a confirmed
        # order names the one that landed, and nothing else moved the wallet.
        book = await chain_oracle.ledger(stack.mesh.rpc_url, stack.mesh.wallet, until=load.ledger_from)
        swaps = book.swaps_by_order()
        # A 503 OUTCOME_UNKNOWN answer means the order may exist (the client would retry with its key):
        # at most that many swaps of orders the load never heard of, each for an order that exists.
        unknown = set(swaps) - set(load.accepted)
        assert len(unknown) <= load.rejected[503], ("landed swaps for orders this load did not place", unknown)
        if unknown:
            extra = await conn.fetch(
                "SELECT id::text, status, retry_count, tx_hash, seq FROM orders WHERE id = ANY($1::uuid[])",
                list(unknown),
            )
            assert len(extra) == len(unknown), "a landed swap names an order that does not exist"
            by_id.update({r["id"]: r for r in extra})
        duplicated = sum(1 for n in swaps.values() if n > 1)
        for order_id in swaps:
            order = by_id[order_id]
            assert order["status"] == "confirmed", (order_id, order["status"])
            assert order["tx_hash"] == book.successful(order_id)[0].signature
        confirmed = {i for i, r in by_id.items() if r["status"] == "confirmed"}
        assert confirmed == set(swaps), "a confirmed order without its landed swap on the cluster"
        rows = [r for r in rows if r["id"] in set(load.accepted)]  # the counts below are the load's own
        # Conservation: the wallet's token deltas are the sum of the confirmed orders' swaps.
        balances = await chain_oracle.wallet_balances(stack.mesh.rpc_url, stack.mesh.wallet)
        moved = {m: balances.get(m, 0) - load.balances_before.get(m, 0) for m in {*balances, *load.balances_before}}
        assert {m: d for m, d in moved.items() if d} == book.net_deltas(), (moved, book.net_deltas())
        for order_id in confirmed:
            row = await conn.fetchrow(
                "SELECT token_in, token_out, amount_in, amount_out FROM orders WHERE id = $1::uuid", order_id
            )
            (tx,) = book.successful(order_id)
            assert tx.deltas.get(row["token_out"], 0) > 0 and tx.deltas.get(row["token_in"], 0) < 0, tx
        # Retry budget and legal transitions, seq contiguous from 1.
        assert all(r["retry_count"] <= stack.settings.max_attempts - 1 for r in rows)
        events = await conn.fetch(
            "SELECT order_id::text, array_agg(status ORDER BY seq) AS statuses, array_agg(seq ORDER BY seq) AS seqs "
            "FROM order_events WHERE order_id = ANY($1::uuid[]) GROUP BY order_id",
            load.accepted,
        )
        for e in events:
            assert list(e["seqs"]) == list(range(1, len(e["seqs"]) + 1)), e
            assert e["statuses"][0] == "pending"
            for current, new in itertools.pairwise(e["statuses"]):
                assert states.is_legal(current, new), (e["order_id"], current, new)
        retried = sum(1 for r in rows if r["retry_count"] > 0)
        failed = sum(1 for r in rows if r["status"] == "failed")
    finally:
        await conn.close()
    await wait_queues_empty(stack)
    names = amqp.Names(stack.settings.amqp_prefix)
    if parked_expected is not None:
        assert await queue_depth(stack, names.parking_queue) == parked_expected
    await purge(stack, names.parking_queue)  # the next scenario counts its own
    # The cache never contradicts PostgreSQL.
    client = aioredis.from_url(stack.redis.url)
    try:
        for order_id, row in by_id.items():
            raw = await client.get(f"order:{order_id}:status")
            if raw is not None:
                cached = orjson.loads(raw)
                assert (cached["status"], cached["seq"]) == (row["status"], row["seq"]), order_id
    finally:
        await client.aclose()
    # WebSocket clients that lived through the fault saw the end, seq strictly increasing.
    await asyncio.wait_for(asyncio.gather(*load.watchers), 60)
    for order_id, watch in load.watched.items():
        seen = watch.events
        assert seen, order_id
        assert seen[-1]["status"] == by_id[order_id]["status"], (order_id, seen)
        assert not watch.problems(), (order_id, watch.problems(), watch.connections)
    return Report(len(load.accepted), lost, duplicated, stuck, failed, retried, drained_s)
