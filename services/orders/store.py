"""Order persistence: every write is one SQL statement, so one transaction.

CreateOrder inserts the order, its first event and two outbox rows (the
execution job and the ``pending`` event). An outbox row of kind ``event``
holds every event of its commit, as a JSON array in seq order: one commit of
an events message (the relay sends a batch's commits of one order type as one
message). A limit or sniper order is armed in
the same statement: ``pending`` (seq 1) and ``waiting`` (seq 2, what it waits
for) and no job; its job is enqueued by the waiting -> routing transition
(the trigger firing), in that transition's statement. Transition is a
compare-and-set on the current status that also appends the event and its
outbox row. Both are single data-modifying CTEs: atomic, and one round trip
each.

Creates that arrive while earlier ones are being written go together, and so
do transitions of different orders: one statement and one commit for the lot
(``Batches``), which is most of what a write costs PostgreSQL. A write is
answered only once its batch has committed. A batch holds one write per order
at most, so an order's writes still meet PostgreSQL one after another. A
batch the database refuses is retried write by write, so that one order's
error never refuses another's write (a database that cannot be reached
answers the whole batch at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import orjson

from services.common import amqp, states
from services.common.db import UNAVAILABLE_ERRORS
from services.common.errors import DomainError, FieldViolation
from services.common.validation import OrderInput
from services.orders import outbox, steps
from services.orders.outbox import OutboxRow

ORDER_COLUMNS = (
    "id, type, status, token_in, token_out, amount_in, amount_out, expected_price, executed_price, "
    "slippage, dex_provider, tx_hash, error_message, retry_count, seq, routing, execution, "
    "created_at, updated_at, completed_at, limit_price, min_liquidity, expires_at"
)
# The current attempt's signed transaction: read by the executor only, never part of a view.
SIGNED_COLUMNS = "signed_tx, last_valid_block_height"
_TS = """to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

_EVENT_JSON = f"""jsonb_build_object('orderId', e.order_id::text, 'status', e.status, 'seq', e.seq,
    'timestamp', {_TS.format(col="e.created_at")}, 'data', e.data)"""

# An execution job: the order's id and attempt, and the order as the commit that queued the job left it (what
# the executor's first attempt starts from, instead of reading the order back; a compare-and-set on its status
# catches a copy that is no longer current).
_JOB_JSON = f"""jsonb_build_object('orderId', {{src}}.id::text, 'attempt', 1, 'order', jsonb_build_object(
    'type', {{src}}.type, 'status', {{src}}.status, 'seq', {{src}}.seq, 'tokenIn', {{src}}.token_in,
    'tokenOut', {{src}}.token_out, 'amountIn', {{src}}.amount_in::text, 'slippage', {{src}}.slippage::text,
    'limitPrice', {{src}}.limit_price::text, 'createdAt', {_TS.format(col="{src}.created_at")}))"""

# Every view of an event (the history, the cache, the outbox) is this object, built from its committed row.
# The outbox copy of an event also names the order's key, so that notifiers can
# route it to the key's "mine" watchers; it never reaches a client.
_OWNED_EVENT_JSON = f"{_EVENT_JSON} || jsonb_build_object('apiKeyId', {{owner}}.api_key_id::text)"
# One outbox row, so one commit of an events message, per commit: the array of the events it appended, in seq order.
_OUTBOX_EVENTS = f"(SELECT jsonb_agg({_OWNED_EVENT_JSON} ORDER BY e.seq) FROM ev e WHERE e.order_id = {{owner}}.id)"
# Its message headers: the trace context, and the order's type, which the relay publishes as the routing key.
_EVENT_HEADERS = f"{{headers}}::jsonb || jsonb_build_object('{amqp.ORDER_TYPE_HEADER}', {{src}}.type)"

# The creates that arrive together, as one statement (one commit): each parameter is an array with one element per
# order. An order whose idempotency key is taken inserts nothing (ON CONFLICT per row) and is not returned; it is
# answered by its replay. A limit or sniper order (a waiting event) is armed: no job until its trigger fires.
CREATE_SQL = f"""
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::uuid[], $12::numeric[], $13::numeric[],
                         $14::timestamptz[], $15::text[])
        AS r(id, type, token_in, token_out, amount_in, slippage, idempotency_key, request_hash, pending, headers,
             api_key_id, limit_price, min_liquidity, expires_at, waiting)
), ins AS (
    INSERT INTO orders (id, type, status, seq, token_in, token_out, amount_in, slippage, idempotency_key,
                        request_hash, api_key_id, limit_price, min_liquidity, expires_at)
    SELECT id, type, CASE WHEN waiting IS NULL THEN 'pending' ELSE 'waiting' END,
           CASE WHEN waiting IS NULL THEN 1 ELSE 2 END, token_in, token_out, amount_in, slippage, idempotency_key,
           request_hash, api_key_id, limit_price, min_liquidity, expires_at
    FROM r
    ON CONFLICT ((COALESCE(api_key_id, '00000000-0000-0000-0000-000000000000'::uuid)), idempotency_key)
        WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {ORDER_COLUMNS}, api_key_id
), ev AS (
    INSERT INTO order_events (order_id, seq, status, data, created_at)
    SELECT ins.id, 1, 'pending', r.pending::jsonb, ins.created_at FROM ins JOIN r USING (id)
    UNION ALL
    SELECT ins.id, 2, 'waiting', r.waiting::jsonb, ins.created_at FROM ins JOIN r USING (id)
        WHERE r.waiting IS NOT NULL
    RETURNING order_id, seq, status, data, created_at
), ob AS (
    INSERT INTO outbox (order_id, kind, payload, headers)
    SELECT ins.id, 'job', {_JOB_JSON.format(src="ins")}, r.headers::jsonb FROM ins JOIN r USING (id)
        WHERE ins.status = 'pending'
    UNION ALL
    SELECT ins.id, 'event', {_OUTBOX_EVENTS.format(owner="ins")},
           {_EVENT_HEADERS.format(src="ins", headers="r.headers")}
    FROM ins JOIN r USING (id)
    RETURNING {outbox.RETURNED}
)
SELECT ins.*, (SELECT jsonb_agg({_EVENT_JSON} ORDER BY e.seq) FROM ev e WHERE e.order_id = ins.id) AS events,
       {outbox.WRITTEN_COLUMN.format(owner="ins")}
FROM ins
"""

# The transitions that arrive together (one per order), as one statement: each parameter is an array with one element
# per transition. Each is a compare-and-set on its order's status; one that lost it updates nothing and is not returned.
# The step's columns are named x_* so that the order's own columns keep their names in RETURNING.
TRANSITION_SQL = f"""
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::numeric[], $6::numeric[], $7::numeric[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                         $15::bytea[], $16::bigint[])
        AS r(x_id, x_expected, x_new, x_attempt, x_amount_out, x_expected_price, x_executed_price, x_dex_provider,
             x_tx_hash, x_error_message, x_routing, x_execution, x_events, x_headers, x_signed_tx, x_last_valid)
), upd AS (
    UPDATE orders o SET
        status = r.x_new,
        seq = o.seq + jsonb_array_length(r.x_events::jsonb),
        retry_count = o.retry_count + r.x_attempt,
        amount_out = COALESCE(r.x_amount_out, o.amount_out),
        expected_price = COALESCE(r.x_expected_price, o.expected_price),
        executed_price = COALESCE(r.x_executed_price, o.executed_price),
        dex_provider = COALESCE(r.x_dex_provider, o.dex_provider),
        tx_hash = COALESCE(r.x_tx_hash, o.tx_hash),
        error_message = COALESCE(r.x_error_message, o.error_message),
        routing = COALESCE(r.x_routing::jsonb, o.routing),
        execution = COALESCE(r.x_execution::jsonb, o.execution),
        signed_tx = COALESCE(r.x_signed_tx, o.signed_tx),
        last_valid_block_height = COALESCE(r.x_last_valid, o.last_valid_block_height),
        updated_at = clock_timestamp(),
        completed_at = CASE WHEN r.x_new IN ('confirmed', 'failed', 'expired', 'cancelled') THEN clock_timestamp() END
    FROM r
    WHERE o.id = r.x_id AND o.status = r.x_expected
    RETURNING {ORDER_COLUMNS}, {SIGNED_COLUMNS}, o.api_key_id, r.x_expected, r.x_events, r.x_headers
), ev AS (
    -- The step's events ([{{status, data}}, ...], usually one), the last at the order's new seq.
    INSERT INTO order_events (order_id, seq, status, data, created_at)
    SELECT upd.id, upd.seq - jsonb_array_length(upd.x_events::jsonb) + x.n, x.event ->> 'status', x.event -> 'data',
           upd.updated_at
    FROM upd, jsonb_array_elements(upd.x_events::jsonb) WITH ORDINALITY AS x(event, n)
    RETURNING order_id, seq, status, data, created_at
), ob AS (
    INSERT INTO outbox (order_id, kind, payload, headers)
    SELECT upd.id, 'event', {_OUTBOX_EVENTS.format(owner="upd")},
           {_EVENT_HEADERS.format(src="upd", headers="upd.x_headers")}
    FROM upd
    UNION ALL
    -- A limit or sniper order's job is born when its trigger fires (waiting -> routing).
    SELECT upd.id, 'job', {_JOB_JSON.format(src="upd")}, upd.x_headers::jsonb FROM upd
        WHERE upd.x_expected = 'waiting' AND upd.status = 'routing'
    RETURNING {outbox.RETURNED}
)
SELECT {ORDER_COLUMNS}, {SIGNED_COLUMNS}, api_key_id,
       (SELECT jsonb_agg({_EVENT_JSON} ORDER BY e.seq) FROM ev e WHERE e.order_id = upd.id) AS events,
       {outbox.WRITTEN_COLUMN.format(owner="upd")}
FROM upd
"""

# An order and its history in one statement, so one snapshot (no transaction of its own, one round trip).
GET_WITH_EVENTS_SQL = f"""
SELECT {ORDER_COLUMNS}, {SIGNED_COLUMNS},
       (SELECT COALESCE(jsonb_agg({_EVENT_JSON} ORDER BY e.seq), '[]') FROM order_events e WHERE e.order_id = orders.id)
           AS events
FROM orders WHERE id = $1
"""

LIVE_STATUSES = [status for status in states.ORDERED if status not in states.TERMINAL]
# The execution backlog: an armed (waiting) order is live but queues no work until it fires.
BACKLOG_STATUSES = [status for status in LIVE_STATUSES if status != states.WAITING]


# Planner settings of a walk of the status index (an index-only scan, marking the dead entries it meets) rather
# than a bitmap scan, which revisits every dead version's heap page at each read until a VACUUM (count_live).
INDEX_WALK = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off"

# The job of a submitted order whose executor is gone: {orderId, attempt} only, so that the executor reads the
# order with its signed transaction (a copy of the order in the job carries none).
TAKE_BACK_SQL = (
    """
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[]) AS r(x_id, x_executor)
), upd AS (
    UPDATE orders o SET execution = o.execution - 'executor'
    FROM r
    WHERE o.id = r.x_id AND o.status = 'submitted' AND o.execution ->> 'executor' = r.x_executor
    RETURNING o.id, o.retry_count
)
INSERT INTO outbox (order_id, kind, payload, headers)
SELECT id, 'job', jsonb_build_object('orderId', id::text, 'attempt', retry_count + 1), '{}'::jsonb FROM upd
RETURNING """
    + outbox.RETURNED
)


class NotFound(DomainError):
    """No such order (or none the caller may see); ``what`` names what was looked up."""

    grpc_code = grpc.StatusCode.NOT_FOUND
    reason = "ORDER_NOT_FOUND"

    def __init__(self, what: str = "") -> None:
        self.what = what
        super().__init__("order not found")


class StaleTransition(DomainError):
    """The order is no longer in the expected status (someone else moved it)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "STALE_TRANSITION"

    def __init__(self, current: str) -> None:
        self.current = current
        super().__init__(f"stale transition: order is {current}")


class IdempotencyConflict(DomainError):
    """The idempotency key was used with a different request body."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "IDEMPOTENCY_KEY_REUSED"
    violations = (FieldViolation("idempotency_key", "was already used with a different request body"),)

    def __init__(self, key: str = "") -> None:
        self.key = key
        super().__init__("idempotency key was already used with a different request")


@dataclass(frozen=True)
class Created:
    row: asyncpg.Record
    created: bool


def _norm(value: Any) -> str | None:
    return None if value is None else str(value.normalize())


def request_hash(order: OrderInput) -> str:
    body: list[Any] = [
        order.token_in,
        order.token_out,
        str(order.amount_in.normalize()),
        str(order.slippage.normalize()),
        order.type,
    ]
    if order.type != "market":  # a market order's hash stays what it always was
        expires = None if order.expires_default or order.expires_at is None else order.expires_at.isoformat()
        body += [_norm(order.limit_price), _norm(order.min_liquidity), expires]
    canonical = orjson.dumps(body)
    return hashlib.sha256(canonical).hexdigest()


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


# A batch's size bound, and how many batches of a kind are written at once (a batch that waits for its commit lets
# the next one gather what arrives meanwhile; two keep both cores of a small database busy).
BATCH_MAX = 100
BATCHES_IN_FLIGHT = 2

# One write's row of a batched statement's arrays, in its parameters' order; the first is the order's id.
BatchRow = tuple[Any, ...]


class Batches:
    """Writes the rows that queue together as one statement (``sql``, whose parameters are arrays, one element per
    row); answers each row with the order's record the statement returned, or None when it wrote nothing for it.

    One batch holds at most one row per order: a second write of the same order waits for the next batch, so that
    the statement sees each order's writes one after another, as unbatched ones would."""

    def __init__(
        self, pool: asyncpg.Pool, sql: str, committed: Callable[[list[OutboxRow]], None] = lambda rows: None
    ) -> None:
        """``committed`` gets the outbox rows of each statement that committed (``_hand_over``)."""
        self.pool = pool
        self.sql = sql
        self.committed = committed
        self._queue: list[tuple[BatchRow, asyncio.Future[asyncpg.Record | None]]] = []
        self._writers: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references to tasks

    async def write(self, row: BatchRow) -> asyncpg.Record | None:
        """The order's committed row with ``events``; None when its idempotency key was taken."""
        answer: asyncio.Future[asyncpg.Record | None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, answer))
        if len(self._writers) < BATCHES_IN_FLIGHT:
            writer = asyncio.get_running_loop().create_task(self._write(), name="create-batch")
            self._writers.add(writer)
            writer.add_done_callback(self._writer_done)
        return await answer

    def _writer_done(self, writer: asyncio.Task[None]) -> None:
        self._writers.discard(writer)
        if writer.cancelled() and not self._writers:  # cancelled (the loop closing): no order waits forever
            queued, self._queue = self._queue, []
            for _, answer in queued:
                answer.cancel()

    def _next_batch(self) -> list[tuple[BatchRow, asyncio.Future[asyncpg.Record | None]]]:
        batch: list[tuple[BatchRow, asyncio.Future[asyncpg.Record | None]]] = []
        later: list[tuple[BatchRow, asyncio.Future[asyncpg.Record | None]]] = []
        keys: set[Any] = set()
        for item in self._queue:
            if len(batch) < BATCH_MAX and item[0][0] not in keys:
                keys.add(item[0][0])
                batch.append(item)
            else:
                later.append(item)
        self._queue = later
        return batch

    async def _write(self) -> None:
        writer = asyncio.current_task()
        try:
            while self._queue:
                batch = self._next_batch()
                try:
                    await self._write_batch(batch)
                except BaseException:  # cancelled mid-batch: no order of the batch waits forever
                    for _, answer in batch:
                        answer.cancel()
                    raise
        finally:
            # Counted out as it stops looking at the queue, not when its done callback runs: a write queued in
            # between (an answered caller writing again in the same turn) would find both writers still counted,
            # start none, and wait forever.
            if writer is not None:
                self._writers.discard(writer)

    async def _write_batch(self, batch: list[tuple[BatchRow, asyncio.Future[asyncpg.Record | None]]]) -> None:
        try:
            records = await self._statement([row for row, _ in batch])
        except Exception as exc:  # noqa: BLE001 - each order gets its own answer below
            if len(batch) == 1 or isinstance(exc, UNAVAILABLE_ERRORS):  # the database's state, not an order's
                for _, answer in batch:
                    _answer(answer, exc=exc)
                return
            for row, answer in batch:  # one order's error must not refuse the others
                try:
                    one = await self._statement([row])
                except Exception as error:  # noqa: BLE001 - that order's own error
                    _answer(answer, exc=error)
                else:
                    _answer(answer, one[0] if one else None)
                    self._hand_over(one)
            return
        found = {record["id"]: record for record in records}
        for row, answer in batch:
            _answer(answer, found.get(row[0]))
        self._hand_over(records)

    async def _statement(self, rows: Sequence[BatchRow]) -> list[asyncpg.Record]:
        columns = [list(column) for column in zip(*rows, strict=True)]
        records: list[asyncpg.Record] = await self.pool.fetch(self.sql, *columns)
        return records

    def _hand_over(self, records: list[asyncpg.Record]) -> None:
        """The committed statement's outbox rows to ``committed``: after its answers are set, so that the callers
        run first, but in the same step, so that before any of them can write again."""
        written = [row for record in records for row in outbox.written(record)]
        if written:
            self.committed(written)


def _answer(
    answer: asyncio.Future[asyncpg.Record | None], row: asyncpg.Record | None = None, exc: BaseException | None = None
) -> None:
    if answer.done():  # pragma: no cover - cancelled with its writer
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(row)


class OrderStore:
    def __init__(self, pool: asyncpg.Pool, committed: Callable[[list[OutboxRow]], None] = lambda rows: None) -> None:
        """``committed`` gets the outbox rows of each commit that wrote some (the relay's hand-over)."""
        self.pool = pool
        self.committed = committed
        self.creates = Batches(pool, CREATE_SQL, committed)
        self.transitions = Batches(pool, TRANSITION_SQL, committed)

    async def create(
        self,
        order: OrderInput,
        idempotency_key: str | None,
        trace_headers: dict[str, str],
        owner: uuid.UUID | None = None,
    ) -> Created:
        """A new order of ``owner`` (an API key's id; None: the anonymous caller of AUTH=off)."""
        row = await self.creates.write(
            (
                uuid.uuid4(),
                order.type,
                order.token_in,
                order.token_out,
                order.amount_in,
                order.slippage,
                idempotency_key,
                request_hash(order),
                _dumps(steps.pending(order)),
                _dumps(trace_headers),
                owner,
                order.limit_price,
                order.min_liquidity,
                order.expires_at,
                _dumps(steps.waiting(order)) if order.type != "market" else None,
            )
        )
        if row is not None:
            return Created(row, True)
        assert idempotency_key is not None  # only the idempotency key can conflict
        replayed = await self.replay(order, idempotency_key, owner)
        if replayed is None:  # pragma: no cover - the conflicting row cannot vanish
            raise NotFound(idempotency_key)
        return replayed

    async def replay(self, order: OrderInput, idempotency_key: str, owner: uuid.UUID | None = None) -> Created | None:
        """The order an earlier request of ``owner`` with this key created, if any (a different body is a conflict)."""
        existing = await self.pool.fetchrow(
            f"""SELECT {ORDER_COLUMNS}, request_hash FROM orders
                WHERE idempotency_key = $1 AND api_key_id IS NOT DISTINCT FROM $2""",
            idempotency_key,
            owner,
        )
        if existing is None:
            return None
        if existing["request_hash"] != request_hash(order):
            raise IdempotencyConflict(idempotency_key)
        return Created(existing, False)

    async def count_live(self) -> int:
        """Orders accepted and not yet finished, armed (waiting) ones aside: the execution backlog.

        Counted by walking ``orders_status_recent`` (an index-only scan), never by a bitmap scan, the planner's
        choice. Every transition leaves the order's earlier version in that index until a VACUUM, and a bitmap
        scan visits the heap page of each such dead version at every count (4.7 ms for 4,700 of them, and the
        count runs every ``admission.REFRESH_S``); an index walk marks each dead entry as it meets it, so the next
        count skips it (0.07 ms for the same table)."""
        rows = await self._walking_index("SELECT count(*) FROM orders WHERE status = ANY($1::text[])", BACKLOG_STATUSES)
        return int(rows[0][0])

    async def watched_landings(self) -> list[tuple[uuid.UUID, str]]:
        """Every ``submitted`` order whose execution names the executor watching it land, with that executor
        (services/common/leases.py); walked as ``count_live`` walks the backlog."""
        rows = await self._walking_index(
            "SELECT id, execution ->> 'executor' AS executor FROM orders "
            "WHERE status = 'submitted' AND execution ? 'executor'"
        )
        return [(row["id"], row["executor"]) for row in rows]

    async def _walking_index(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """``query``'s rows, read with the planner walking the status index (``INDEX_WALK``)."""
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(INDEX_WALK)
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows

    async def take_back(self, orders: list[tuple[uuid.UUID, str]]) -> list[uuid.UUID]:
        """Queue the job again of each order still ``submitted`` and still naming that executor (a compare-and-set
        that also clears the name, so an order is taken back once); the ids taken back."""
        rows = await self.pool.fetch(TAKE_BACK_SQL, [o for o, _ in orders], [e for _, e in orders])
        if rows:
            self.committed([outbox.stored(row) for row in rows])
        return [row["order_id"] for row in rows]

    async def get_with_events(self, order_id: uuid.UUID) -> tuple[asyncpg.Record, list[dict[str, Any]]]:
        """The order's row (with its signed transaction) and its history, as of one snapshot (one statement)."""
        row = await self.pool.fetchrow(GET_WITH_EVENTS_SQL, order_id)
        if row is None:
            raise NotFound(str(order_id))
        return row, orjson.loads(row["events"])

    async def owner(self, order_id: uuid.UUID) -> uuid.UUID | None:
        """The key that created the order (None: the anonymous caller); NotFound when there is no such order."""
        row = await self.pool.fetchrow("SELECT api_key_id FROM orders WHERE id = $1", order_id)
        if row is None:
            raise NotFound(str(order_id))
        owner: uuid.UUID | None = row["api_key_id"]
        return owner

    async def list(
        self,
        status: str,
        limit: int,
        before: tuple[Any, uuid.UUID] | None,
        owner: uuid.UUID | None = None,
        live: bool = False,
    ) -> list[asyncpg.Record]:
        """Most recent first; only ``owner``'s orders when one is given, only live ones when ``live``."""
        clauses: list[str] = []
        args: list[Any] = []
        if owner is not None:
            args.append(owner)
            clauses.append(f"api_key_id = ${len(args)}")
        if status:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if live:
            args.append(LIVE_STATUSES)
            clauses.append(f"status = ANY(${len(args)}::text[])")
        if before is not None:
            args.extend(before)
            clauses.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        return list(
            await self.pool.fetch(
                f"SELECT {ORDER_COLUMNS} FROM orders {where} ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
                *args,
            )
        )

    async def transition(
        self,
        order_id: uuid.UUID,
        expected: str,
        step: steps.Effect,
        trace_headers: dict[str, str],
    ) -> asyncpg.Record:
        """The row as committed, with ``events``: the appended events' JSON (the outbox's, without the owner)."""
        columns = step.columns
        row = await self.transitions.write(
            (
                order_id,
                expected,
                step.new,
                1 if step.new_attempt else 0,
                columns.amount_out,
                columns.expected_price,
                columns.executed_price,
                columns.dex_provider,
                columns.tx_hash,
                columns.error_message,
                None if columns.routing is None else _dumps(columns.routing),
                None if columns.execution is None else _dumps(columns.execution),
                _dumps([{"status": status, "data": data} for status, data in step.events]),
                _dumps(trace_headers),
                columns.signed_tx,
                columns.last_valid_block_height,
            )
        )
        if row is not None:
            return row
        current = await self.pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
        if current is None:
            raise NotFound(str(order_id))
        raise StaleTransition(current)
