"""Creates, and transitions, that arrive together are written as one statement and one commit, each still its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import grpc
import orjson
import pytest

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import db, states
from services.common.errors import parse_rpc_error
from services.common.migrate import migrate
from services.orders.__main__ import MIGRATIONS
from services.orders.store import CREATE_SQL, TRANSITION_SQL, Batches, BatchRow
from tests.support import transitions
from tests.support.client import SOL, USDC
from tests.support.infra import TestInfra, create_database, drop_database
from tests.support.waiting import eventually

N = 40
ROUNDS = 3  # bursts of transitions, of which one must share commits
T = TypeVar("T")
ROUTING_EVENT = '[{"status": "routing", "data": {}}]'


def _row(order_id: uuid.UUID, amount: Decimal = Decimal("2.5")) -> tuple[object, ...]:
    """A market order's row of CREATE_SQL's arrays, in its parameters' order."""
    return (order_id, "market", SOL, USDC, amount, Decimal("0.01"), None, "h", "{}", "{}", *[None] * 5)


def _request(**over: str) -> orders_pb2.CreateOrderRequest:
    fields = {"token_in": SOL, "token_out": USDC, "amount_in": "1.5", "slippage": "0.01", **over}
    return orders_pb2.CreateOrderRequest(**fields)


async def _held_together(
    pg: asyncpg.Connection, database: str, statement: str, calls: Callable[[], Awaitable[list[T]]]
) -> list[T]:
    """``calls()``, made while a lock on the orders table holds the first writers' ``statement``.

    Calls that arrive while the writers are busy wait together. Whether they do on their own depends on how fast
    the statements run against how the server's loop takes the calls (on a slow machine each may be written before
    the next arrives), so the lock keeps the first statements waiting while the other calls arrive."""
    holder = await asyncpg.connect(database)
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("LOCK TABLE orders IN SHARE MODE")  # reads go on; INSERT and UPDATE wait
        sent = asyncio.ensure_future(calls())

        async def writer_waiting() -> bool:
            return bool(
                await pg.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1",
                    f"%{statement}%",
                )
            )

        await eventually(writer_waiting, timeout=10)
        await asyncio.sleep(0.3)  # the calls sent with it reach the server and queue behind the waiting writers
        await lock.rollback()
        return await sent
    finally:
        await holder.close()


async def test_creates_that_arrive_together_share_commits_and_each_gets_its_own_order(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection, database: str
) -> None:
    amounts = [f"1.{i:02d}" for i in range(N)]
    answers = await _held_together(
        pg,
        database,
        "INSERT INTO orders",
        lambda: asyncio.gather(*(orders.CreateOrder(_request(amount_in=a), timeout=10) for a in amounts)),
    )
    ids = [uuid.UUID(a.order.id) for a in answers]
    assert len(set(ids)) == N and all(a.created for a in answers)
    # Each answer is its own request's order, as committed.
    rows = {
        r["id"]: r
        for r in await pg.fetch(
            "SELECT id, amount_in, status, seq, xmin::text AS tx FROM orders WHERE id = ANY($1)", ids
        )
    }
    assert [rows[i]["amount_in"] for i in ids] == [Decimal(a) for a in amounts]
    assert {(r["status"], r["seq"]) for r in rows.values()} == {("pending", 1)}
    events = await pg.fetch("SELECT order_id, seq, status FROM order_events WHERE order_id = ANY($1)", ids)
    assert sorted((e["order_id"], e["seq"], e["status"]) for e in events) == sorted((i, 1, "pending") for i in ids)
    assert [Decimal(a.order.amount_in) for a in answers] == [Decimal(a) for a in amounts]
    # Fewer commits than orders: PostgreSQL's transaction id of each row (xmin) is shared within a batch.
    assert len({r["tx"] for r in rows.values()}) < N


async def test_a_row_the_database_refuses_is_refused_alone(database: str, pg: asyncpg.Connection) -> None:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        batches = Batches(pool, CREATE_SQL)
        ids = [uuid.uuid4() for _ in range(10)]
        bad = ids[3]

        def row(order_id: uuid.UUID) -> tuple[object, ...]:
            amount = Decimal(-1) if order_id == bad else Decimal("2.5")
            return _row(order_id, amount)

        answers = await asyncio.gather(*(batches.write(row(i)) for i in ids), return_exceptions=True)
    finally:
        await pool.close()
    refused = [i for i, a in zip(ids, answers, strict=True) if isinstance(a, BaseException)]
    assert refused == [bad]
    assert isinstance(answers[3], asyncpg.CheckViolationError)
    good = [i for i in ids if i != bad]
    assert [a["id"] for a in answers if isinstance(a, asyncpg.Record)] == good
    stored = await pg.fetch("SELECT id FROM orders WHERE id = ANY($1)", ids)
    assert sorted(r["id"] for r in stored) == sorted(good)
    assert await pg.fetchval("SELECT count(*) FROM order_events WHERE order_id = $1", bad) == 0


@pytest.mark.parametrize("other_body", [False, True])
async def test_one_key_twice_in_one_batch_creates_once(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection, other_body: bool
) -> None:
    key = f"key-{uuid.uuid4()}"
    requests = [_request(idempotency_key=key)] * 2 + [_request(amount_in=f"3.{i}") for i in range(8)]
    if other_body:
        requests[1] = _request(idempotency_key=key, amount_in="9")
    answers = await asyncio.gather(*(orders.CreateOrder(r, timeout=10) for r in requests), return_exceptions=True)
    assert await pg.fetchval("SELECT count(*) FROM orders WHERE idempotency_key = $1", key) == 1
    won = [a for a in answers[:2] if isinstance(a, orders_pb2.CreateOrderResponse)]
    if other_body:  # whichever came first took the key; the other body is refused
        assert len(won) == 1 and won[0].created
        (lost,) = [a for a in answers[:2] if isinstance(a, grpc.aio.AioRpcError)]
        assert parse_rpc_error(lost).reason == "IDEMPOTENCY_KEY_REUSED"
    else:  # the same body twice: one order, created once and replayed once
        assert len(won) == 2 and won[0].order.id == won[1].order.id
        assert sorted([won[0].created, won[1].created]) == [False, True]
    assert all(isinstance(a, orders_pb2.CreateOrderResponse) and a.created for a in answers[2:])


@pytest.mark.parametrize("turns", [0, 3])  # cancelled before its first step, or while its statement runs
async def test_a_cancelled_writer_leaves_no_order_waiting(database: str, turns: int) -> None:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        batches = Batches(pool, CREATE_SQL)
        waiting = asyncio.ensure_future(batches.write(_row(uuid.uuid4())))
        await asyncio.sleep(0)  # the insert queued its row and started a writer
        (writer,) = batches._writers
        for _ in range(turns):
            await asyncio.sleep(0)
        writer.cancel()  # what closing the loop does to it
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 5)
        assert not batches._writers and not batches._queue
    finally:
        await pool.close()


async def test_an_unreachable_database_answers_the_whole_batch_at_once(database: str) -> None:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    batches = Batches(pool, CREATE_SQL)
    statements: list[int] = []
    statement = batches._statement

    async def counted(rows: Sequence[BatchRow]) -> list[asyncpg.Record]:
        statements.append(len(rows))
        return await statement(rows)

    batches._statement = counted  # type: ignore[method-assign]
    await pool.close()  # what a pool whose database went away answers: InterfaceError
    answers = await asyncio.gather(*(batches.write(_row(uuid.uuid4())) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(a, asyncpg.InterfaceError) for a in answers)
    assert sum(statements) == 10 and len(statements) < 10  # no order-by-order retry of a batch


async def test_transitions_that_arrive_together_share_commits_and_each_keeps_its_order(
    orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection, database: str
) -> None:
    for _ in range(ROUNDS):
        commits = await _transitions_together(orders, pg, database)
        assert commits < N, f"{commits} commits for {N} transitions that arrived together"


async def _transitions_together(orders: orders_pb2_grpc.OrdersAsyncStub, pg: asyncpg.Connection, database: str) -> int:
    """N orders moved pending -> routing at once, each asked twice: one wins, every row and event is right; how
    many commits the N transitions took."""
    created = await asyncio.gather(*(orders.CreateOrder(_request(amount_in=f"4.{i}"), timeout=10) for i in range(N)))
    ids = [a.order.id for a in created]
    pending, routing = states.to_proto("pending"), states.to_proto("routing")
    # Each order twice in the same turn: one batch holds one write per order, and only one compare-and-set wins.
    moved = await _held_together(
        pg,
        database,
        "UPDATE orders",
        lambda: asyncio.gather(
            *(orders.Transition(transitions.request(i, pending, routing), timeout=10) for i in ids for _ in range(2)),
            return_exceptions=True,
        ),
    )
    won = [m for m in moved if isinstance(m, orders_pb2.TransitionResponse)]
    lost = [m for m in moved if isinstance(m, grpc.aio.AioRpcError)]
    assert sorted(m.order.id for m in won) == sorted(ids)
    assert len(lost) == N and all(parse_rpc_error(m).reason == "STALE_TRANSITION" for m in lost)
    assert all(m.order.seq == 2 and m.event.seq == 2 and m.order.status == routing for m in won)
    uids = [uuid.UUID(i) for i in ids]
    rows = await pg.fetch("SELECT status, seq, xmin::text AS tx FROM orders WHERE id = ANY($1)", uids)
    assert {(r["status"], r["seq"]) for r in rows} == {("routing", 2)}
    events = await pg.fetch("SELECT order_id, seq, status FROM order_events WHERE order_id = ANY($1)", uids)
    assert sorted((e["order_id"], e["seq"], e["status"]) for e in events) == sorted(
        [(i, 1, "pending") for i in uids] + [(i, 2, "routing") for i in uids]
    )
    # The orders' rows of one commit share PostgreSQL's transaction id (xmin).
    return len({r["tx"] for r in rows})


def _scans(plan: dict[str, Any], relation: str) -> list[str]:
    """The node types of every scan of ``relation`` in an EXPLAIN (FORMAT JSON) plan tree."""
    kind = str(plan["Node Type"])
    found = [kind] if plan.get("Relation Name") == relation and kind.endswith("Scan") else []
    for child in plan.get("Plans", []):
        found += _scans(child, relation)
    return found


async def test_batched_statements_are_planned_once_and_reach_orders_by_key_at_any_size(infra: TestInfra) -> None:
    """A batched statement is planned once per connection (planning was half of its PostgreSQL time) and that
    plan, made while the tables were empty, still reaches each order through its primary key once the table is
    large and its statistics are stale (the plan a size-based choice made on an empty table would scan the whole
    table per transition from then on). Oracle: PostgreSQL's own count of each prepared statement's plans on
    that connection and its EXPLAIN of the cached plan, in a fresh database where the tables start empty (as
    the benchmark's do)."""
    fresh = infra.derive("plans")
    await create_database(fresh)
    try:
        pool = await db.create_pool(fresh.database_url, 1)  # one connection: every execution meets the same cache
        try:
            async with pool.acquire() as conn:
                await migrate(conn, MIGRATIONS)
            creates, moves = Batches(pool, CREATE_SQL), Batches(pool, TRANSITION_SQL)

            async def create_and_move() -> uuid.UUID:
                order_id = uuid.uuid4()
                assert await creates.write(_row(order_id)) is not None
                moved = await moves.write(
                    (order_id, "pending", "routing", 0, *[None] * 8, ROUTING_EVENT, "{}", None, None)
                )
                assert moved is not None and moved["status"] == "routing"
                return order_id

            for _ in range(12):
                await create_and_move()
            async with pool.acquire() as conn:
                # The table grows 2,000-fold behind the cached plans' back (no ANALYZE, as with autovacuum off).
                await conn.execute(
                    """INSERT INTO orders
                       SELECT copy.* FROM orders o, generate_series(1, 2000) AS g(n),
                           LATERAL jsonb_populate_record(NULL::orders, to_jsonb(o) || jsonb_build_object(
                               'id', gen_random_uuid(), 'idempotency_key', gen_random_uuid()::text, 'n', g.n)
                           ) AS copy"""
                )
            last = await create_and_move()
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM orders") == 12 * 2001 + 1
                plans = {
                    row["statement"]: row
                    for row in await conn.fetch(
                        "SELECT name, statement, generic_plans, custom_plans FROM pg_prepared_statements"
                        " WHERE statement = ANY($1)",
                        [CREATE_SQL, TRANSITION_SQL],
                    )
                }
                move = plans[TRANSITION_SQL]
                # EXECUTE takes its arguments as literals (the next transition of the last order).
                nulls = ", ".join(["ARRAY[NULL]::numeric[]"] * 3 + ["ARRAY[NULL]::text[]"] * 5)
                explained = await conn.fetchval(
                    f"EXPLAIN (FORMAT JSON) EXECUTE {move['name']}(ARRAY['{last}']::uuid[], ARRAY['routing'],"
                    f" ARRAY['building'], ARRAY[0], {nulls}, ARRAY['{ROUTING_EVENT}'], ARRAY['{{}}'],"
                    " ARRAY[NULL]::bytea[], ARRAY[NULL]::bigint[])"
                )
        finally:
            await pool.close()
    finally:
        await drop_database(fresh)
    assert sorted((p["generic_plans"], p["custom_plans"]) for p in plans.values()) == [(13, 0), (13, 0)]
    scans = _scans(orjson.loads(explained)[0]["Plan"], "orders")
    assert scans and all(scan in {"Index Scan", "Index Only Scan"} for scan in scans), scans


class GatedPool:
    """A real pool whose statements, once PostgreSQL answered them, wait for ``gate``: writers released together
    finish in the same turn of the event loop."""

    def __init__(self, pool: asyncpg.Pool, last: uuid.UUID) -> None:
        self.pool = pool
        self.last = last  # the statement writing this order joins the gate after the other one
        self.gate = asyncio.Event()
        self.waiting = 0

    async def fetch(self, sql: str, ids: list[uuid.UUID], *args: object) -> list[asyncpg.Record]:
        rows = await self.pool.fetch(sql, ids, *args)
        if self.last in ids:
            await eventually(lambda: self.waiting == 1)
        self.waiting += 1
        await self.gate.wait()
        return rows


async def test_a_write_queued_as_both_writers_finish_gets_a_writer_of_its_own(
    database: str, orders_server: str
) -> None:
    """Both writers finish in one turn; a caller they answered writes again before their done callbacks run. Its
    row must start a writer, not wait in a queue nobody reads."""
    pool = await asyncpg.create_pool(database, min_size=2, max_size=2)
    try:
        first, second, again = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        # The caller's writer is released first: it answers the caller before the other writer finishes too.
        gated = GatedPool(pool, last=second)
        batches = Batches(gated, CREATE_SQL)

        async def write_then_write_again() -> asyncpg.Record | None:
            await batches.write(_row(first))
            return await batches.write(_row(again))  # in the same turn as the answer (no task in between)

        caller = asyncio.create_task(write_then_write_again())
        await asyncio.sleep(0)  # the first writer takes the first row
        other = asyncio.create_task(batches.write(_row(second)))  # a second writer takes this one
        await eventually(lambda: gated.waiting == 2)
        gated.gate.set()
        written = await asyncio.wait_for(caller, 5)
        assert written is not None and written["id"] == again
        assert (await other) is not None
    finally:
        await pool.close()
