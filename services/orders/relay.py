"""Outbox relay: publishes outbox rows to RabbitMQ, then deletes them.

The rows reach it two ways:

- **Handed over** (:meth:`OutboxRelay.hand`): each write of this replica returns
  the outbox rows it wrote, and the store hands them to the relay as soon as the
  statement has committed. The relay publishes them straight away (no claim:
  the rows are this replica's own, just committed) and deletes them once every
  publish is confirmed; the deletes of several batches go together, a little
  later (``DELETE_EVERY_S``), since nothing waits for them. A relay that
  stops publishes what it was handed first (``STOP_FLUSH_S`` at most).
- **Claimed** (:meth:`OutboxRelay.publish_batch`): every ``OUTBOX_POLL_MS`` the
  relay looks for rows older than ``OUTBOX_ORPHAN_MS`` that it does not hold:
  rows whose replica died between its commit and its publish (or its delete),
  or let go of after a failed publish. A claim is one transaction: ``DELETE …
  RETURNING`` of the oldest such rows not locked by another relay (``FOR UPDATE
  SKIP LOCKED``), the publishes, and the commit once every confirm came back.

Either way a row leaves the table only after its publish was confirmed, so a
crash or a failed publish leaves it there, and it is published again (after
``OUTBOX_ORPHAN_MS``): delivery is at-least-once and every consumer is
idempotent (jobs meet a compare-and-set on the order's status, events a seq).
A replica publishes what it was handed in commit order, so one order's commits
go out in seq order; across replicas, or after a failed publish, they may not,
and the notifier repairs a gap by seq. A row handed over is never claimed by
its own replica; another replica claims it only if it is still in the table
after ``OUTBOX_ORPHAN_MS`` (its publish stalled that long): then it is
published twice.

Rows are published together with publisher confirms (pipelined, not one round
trip each): each job as a message of its own, the events as one message per
order type carrying every commit of the batch (``amqp.commits_body``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.common import amqp, faults, metrics, telemetry
from services.common.config import Settings
from services.orders import outbox
from services.orders.outbox import OutboxRow

log = logging.getLogger(__name__)

# Deleted, but only for this transaction until it commits: the rows come back if it rolls back. Only rows older
# than $2 ms that this replica does not hold ($3): the younger ones are being published by the replica that wrote them.
CLAIM_SQL = f"""
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE created_at <= clock_timestamp() - $2 * interval '1 millisecond' AND NOT id = ANY($3::bigint[])
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING {outbox.RETURNED}
"""
DELETE_SQL = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
# The published rows' deletes wait this long for company: one statement for the batches of that time.
DELETE_EVERY_S = 0.05
# At most this many batches' worth of rows handed over and not yet published: beyond (RabbitMQ down or slow),
# rows are left to the claims, which read them from the table.
HELD_BATCHES = 10
# At stop, how long the relay may still publish what it was handed over.
STOP_FLUSH_S = 2.0


class OutboxRelay:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.names = amqp.Names(settings.amqp_prefix)
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchanges: dict[str, AbstractExchange] = {}
        self._wake = asyncio.Event()
        self._claim_now = False
        self._handed: list[OutboxRow] = []  # handed over, not yet published, in commit order
        self._held: set[int] = set()  # handed over and not yet deleted: never claimed by this replica
        self._published: list[int] = []  # handed over, published, to delete
        self._flushed = asyncio.Event()  # set while every row handed over was published (or let go of)
        self._flushed.set()
        self._deletable = asyncio.Event()
        self.ready = asyncio.Event()  # set once connected and the topology is declared
        self._task: asyncio.Task[None] | None = None
        self._deleter: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        """Run in the background; orders are accepted even while RabbitMQ is down."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._deleter = asyncio.create_task(self._delete_published(), name="outbox-deletes")

    async def _connect(self) -> None:
        while True:
            try:
                self.connection = await amqp.connect(self.settings.amqp_url)
                self.channel = await amqp.confirm_channel(self.connection)
                await amqp.declare_topology(self.channel, self.names, self.settings)
                self.exchanges = {
                    "job": await self.channel.get_exchange(self.names.execute_exchange),
                    "event": await self.channel.get_exchange(self.names.events_exchange),
                }
                self.ready.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - broker not reachable yet: keep trying
                log.warning("rabbitmq not reachable, outbox holds the rows: %s", exc)
                await asyncio.sleep(1)

    def connected(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    def hand(self, rows: list[OutboxRow]) -> None:
        """Rows this replica just committed: publish them now (or once connected), in id order, so that one order's
        commits go out in seq order. Left to the claims instead while the relay already holds ``HELD_BATCHES``
        batches of unpublished rows."""
        if len(self._handed) >= HELD_BATCHES * self.settings.outbox_batch:
            return
        self._handed.extend(sorted(rows, key=lambda row: row.id))
        self._held.update(row.id for row in rows)
        self._flushed.clear()
        self._wake.set()

    def wake(self) -> None:
        """Claim rows at once rather than at the next poll."""
        self._claim_now = True
        self._wake.set()

    async def _run(self) -> None:
        poll = self.settings.outbox_poll_ms / 1000
        await self._connect()
        next_claim = 0.0  # at start: rows left by an earlier life of this replica, or by another
        while True:
            # Cleared before publishing, not after: rows handed over while a batch is published must wake the next
            # round, not wait out the poll interval.
            self._wake.clear()
            try:
                if self._handed:
                    await self.publish_handed()
                    continue
                self._flushed.set()
                if self._claim_now or time.monotonic() >= next_claim:
                    self._claim_now = False
                    if await self.publish_batch() >= self.settings.outbox_batch:
                        continue
                    next_claim = time.monotonic() + poll
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: rows stay in the table, try again
                self._flushed.set()  # what was handed over is let go of: the claims have it
                log.warning("outbox publish failed, will retry: %s", exc)
                await asyncio.sleep(poll)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(next_claim - time.monotonic(), 0)):
                    await self._wake.wait()

    async def publish_handed(self) -> int:
        """Publish one batch of the rows handed over; return how many. If a publish fails, every row handed over
        and not published is let go of: the claims publish them from the table."""
        rows, self._handed = self._handed[: self.settings.outbox_batch], self._handed[self.settings.outbox_batch :]
        try:
            faults.crash_point("before_publish")
            await self._publish(rows)
        except BaseException:
            self._held.difference_update(row.id for row in (*rows, *self._handed))
            self._handed = []
            raise
        self._published.extend(row.id for row in rows)
        self._deletable.set()
        return len(rows)

    async def publish_batch(self) -> int:
        """Claim and publish one batch of rows nobody else publishes; return how many were published."""
        async with self.pool.acquire() as conn, conn.transaction():
            records = await conn.fetch(
                CLAIM_SQL, self.settings.outbox_batch, self.settings.outbox_orphan_ms, list(self._held)
            )
            if not records:
                return 0
            # RETURNING has no order: publish in id order, so one order's rows go out in seq order.
            rows = sorted((outbox.stored(record) for record in records), key=lambda row: row.id)
            faults.crash_point("before_publish")
            await self._publish(rows)
        metrics.OUTBOX_ORPHANS.inc(len(rows))
        return len(rows)

    async def _publish(self, rows: list[OutboxRow]) -> None:
        """Publish ``rows`` and wait for every confirm: each job on its own, a batch's events as one message per
        order type (its routing key), commits in id order."""
        by_type: dict[str, list[OutboxRow]] = {}
        for row in rows:
            if row.kind != "job":
                by_type.setdefault(row.headers.get(amqp.ORDER_TYPE_HEADER, ""), []).append(row)
        await asyncio.gather(
            *(self._publish_job(row) for row in rows if row.kind == "job"),
            *(self._publish_events(kind, commits) for kind, commits in by_type.items()),
        )
        self.published += len(rows)
        metrics.OUTBOX_BATCH_ROWS.observe(len(rows))
        now = datetime.now(UTC)
        for row in rows:
            metrics.OUTBOX_PUBLISHED.labels(row.kind).inc()
            metrics.OUTBOX_LAG.observe((now - row.created_at).total_seconds())

    async def _delete_published(self) -> None:
        """Delete the published rows handed over, the batches of ``DELETE_EVERY_S`` together."""
        while True:
            await self._deletable.wait()
            await asyncio.sleep(DELETE_EVERY_S)
            try:
                await self._delete()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - still held, so never claimed here: try again
                log.warning("published outbox rows not deleted yet, will retry: %s", exc)
                await asyncio.sleep(self.settings.outbox_poll_ms / 1000)

    async def _delete(self) -> None:
        self._deletable.clear()
        ids, self._published = self._published, []
        if not ids:
            return
        try:
            await self.pool.execute(DELETE_SQL, ids)
        except BaseException:
            self._published[:0] = ids
            self._deletable.set()
            raise
        self._held.difference_update(ids)

    def _span(self, exchange: AbstractExchange, row: OutboxRow) -> trace.Span:
        """The PRODUCER span of one row's publish, in the trace of the transaction that wrote the row."""
        return telemetry.start_span(
            __name__,
            f"publish {exchange.name}",
            parent=telemetry.extract(row.headers),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "publish",
                "messaging.destination.name": exchange.name,
                "order.id": str(row.order_id),
                "outbox.kind": row.kind,
            },
        )

    async def _publish_job(self, row: OutboxRow) -> None:
        exchange = self.exchanges["job"]
        with trace.use_span(self._span(exchange, row), end_on_exit=True):
            await amqp.publish(
                exchange,
                amqp.JOB_KEY,
                row.payload,
                headers={**telemetry.inject_headers(), "x-attempt": 1, "x-order-id": str(row.order_id)},
                message_id=f"outbox-{row.id}",
            )

    async def _publish_events(self, kind_of_order: str, rows: list[OutboxRow]) -> None:
        """One message with the commits of ``rows`` (orders of one type: rows from before it was recorded have
        none, ""), each with the trace context of its own PRODUCER span."""
        exchange = self.exchanges["event"]
        spans = [self._span(exchange, row) for row in rows]
        try:
            body = amqp.commits_body(
                [(telemetry.inject_headers(span), row.payload) for row, span in zip(rows, spans, strict=True)]
            )
            await amqp.publish(
                exchange,
                kind_of_order,
                body,
                headers={amqp.ORDER_TYPE_HEADER: kind_of_order},
                message_id=f"outbox-{rows[0].id}-{rows[-1].id}",
                mandatory=False,
            )
        except Exception as exc:
            for span in spans:
                telemetry.record_error(span, exc)
            raise
        finally:
            for span in spans:
                span.end()

    async def stop(self) -> None:
        # What was handed over goes out now (bounded), rather than as orphans after OUTBOX_ORPHAN_MS.
        if self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_FLUSH_S):
                    await self._flushed.wait()
        for task in (self._task, self._deleter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # What was published is deleted now, or it would be published again once it is an orphan.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._delete()
        if self.connection is not None:
            await self.connection.close()
