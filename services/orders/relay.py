"""Outbox relay: publishes outbox rows to RabbitMQ, then deletes them.

A batch is one statement in one transaction: ``DELETE … RETURNING`` of the
oldest rows not locked by another relay (``FOR UPDATE SKIP LOCKED``: several
orders replicas share the work). The rows are published together with
publisher confirms (pipelined, not one round trip each): each job as a message
of its own, the events as one message per order type carrying every commit of
the batch (``amqp.commits_body``), and the transaction
commits only once every confirm came back. A crash or a failed publish rolls
back, so the rows are there again and published again later: delivery is
at-least-once and every consumer is idempotent. Each commit of this
replica wakes its relay (:meth:`OutboxRelay.wake`, called by the store);
polling every ``OUTBOX_POLL_MS`` picks up rows another replica committed
and could not publish (it died first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.common import amqp, faults, metrics, telemetry
from services.common.config import Settings

log = logging.getLogger(__name__)

# Deleted, but only for this transaction until it commits: the rows come back if it rolls back.
CLAIM_SQL = """
DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, order_id, kind, payload, headers, created_at
"""


def _json(payload: Any) -> bytes:
    """A row's payload as JSON text (asyncpg returns jsonb as text)."""
    return payload.encode() if isinstance(payload, str) else orjson.dumps(payload)


class OutboxRelay:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.names = amqp.Names(settings.amqp_prefix)
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchanges: dict[str, AbstractExchange] = {}
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once connected and the topology is declared
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        """Run in the background; orders are accepted even while RabbitMQ is down."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

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

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        poll = self.settings.outbox_poll_ms / 1000
        await self._connect()
        while True:
            # Cleared before the claim, not after: a commit that wakes the relay while this batch
            # is published must wake the next round, not wait out the poll interval.
            self._wake.clear()
            try:
                sent = await self.publish_batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: rows stay, try again
                log.warning("outbox publish failed, will retry: %s", exc)
                await asyncio.sleep(poll)
                continue
            if sent >= self.settings.outbox_batch:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._wake.wait()

    async def publish_batch(self) -> int:
        """Publish one batch; return how many rows were published."""
        async with self.pool.acquire() as conn, conn.transaction():
            # RETURNING has no order: publish in id order, so one order's rows go out in seq order.
            rows = sorted(await conn.fetch(CLAIM_SQL, self.settings.outbox_batch), key=lambda row: row["id"])
            if not rows:
                return 0
            faults.crash_point("before_publish")
            claimed = [(row, orjson.loads(row["headers"]) if row["headers"] else {}) for row in rows]
            # A batch's events go out as one message per order type (its routing key), commits in id order.
            by_type: dict[str, list[tuple[asyncpg.Record, dict[str, Any]]]] = {}
            for row, stored in claimed:
                if row["kind"] != "job":
                    by_type.setdefault(stored.get(amqp.ORDER_TYPE_HEADER, ""), []).append((row, stored))
            await asyncio.gather(
                *(self._publish_job(row, stored) for row, stored in claimed if row["kind"] == "job"),
                *(self._publish_events(kind, commits) for kind, commits in by_type.items()),
            )
        self.published += len(rows)
        metrics.OUTBOX_BATCH_ROWS.observe(len(rows))
        now = datetime.now(UTC)
        for row in rows:
            metrics.OUTBOX_PUBLISHED.labels(row["kind"]).inc()
            metrics.OUTBOX_LAG.observe((now - row["created_at"]).total_seconds())
        return len(rows)

    def _span(self, exchange: AbstractExchange, row: asyncpg.Record, stored: dict[str, Any]) -> trace.Span:
        """The PRODUCER span of one row's publish, in the trace of the transaction that wrote the row."""
        return telemetry.tracer(__name__).start_span(
            f"publish {exchange.name}",
            context=telemetry.extract(stored),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "publish",
                "messaging.destination.name": exchange.name,
                "order.id": str(row["order_id"]),
                "outbox.kind": row["kind"],
            },
        )

    async def _publish_job(self, row: asyncpg.Record, stored: dict[str, Any]) -> None:
        exchange = self.exchanges["job"]
        with trace.use_span(self._span(exchange, row, stored), end_on_exit=True):
            await amqp.publish(
                exchange,
                amqp.JOB_KEY,
                _json(row["payload"]),
                headers={**telemetry.inject_headers(), "x-attempt": 1, "x-order-id": str(row["order_id"])},
                message_id=f"outbox-{row['id']}",
            )

    async def _publish_events(self, kind_of_order: str, rows: list[tuple[asyncpg.Record, dict[str, Any]]]) -> None:
        """One message with the commits of ``rows`` (orders of one type: rows from before it was recorded have
        none, ""), each with the trace context of its own PRODUCER span."""
        exchange = self.exchanges["event"]
        spans = [self._span(exchange, row, stored) for row, stored in rows]
        try:
            body = amqp.commits_body(
                [
                    (telemetry.inject_headers(span), _json(row["payload"]))
                    for (row, _), span in zip(rows, spans, strict=True)
                ]
            )
            await amqp.publish(
                exchange,
                kind_of_order,
                body,
                headers={amqp.ORDER_TYPE_HEADER: kind_of_order},
                message_id=f"outbox-{rows[0][0]['id']}-{rows[-1][0]['id']}",
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.connection is not None:
            await self.connection.close()
