"""The execution-queue consumer: one job = one attempt of one order.

Acknowledges a message only after the attempt's effect is committed in
orders. Failure handling:
- retryable, attempts left: the order re-enters ``routing`` (an event the
  client sees, with the attempt, the wait and the reason), then the job is
  republished to the wait queue of that backoff tier (TTL, dead-letters back
  to the work queue) with ``x-attempt`` + 1; then the message is acked.
- final, or the last attempt: the order is marked failed with the reason, and
  the job is parked (``orders.parking.q``) with the reason in ``x-park-reason``.
- infrastructure (orders unreachable): the job is republished to the first
  wait tier with the same attempt; no attempt is spent.
- undecodable body: rejected without requeue -> dead-lettered to parking.
- cancelled at shutdown: not acked, not rejected; the broker redelivers it
  when the channel closes.
- anything raising inside the failure handling itself: the job goes to the
  first wait tier with the same attempt (or, if even that publish fails, is
  nacked back to its queue). No path leaves a message unsettled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from dexengine.v1 import common_pb2, orders_pb2
from services.common import amqp, codec, metrics, states, telemetry
from services.common.config import Settings
from services.common.logs import order_id_var
from services.executor.errors import FinalError, InfraError, RetryableError, StepError, Superseded
from services.executor.pipeline import Pipeline
from services.executor.ratelimit import RateLimiter

log = logging.getLogger(__name__)


class PoisonMessage(Exception):
    pass


@dataclass(frozen=True)
class Job:
    order_id: str
    attempt: int
    # The order as the job's first delivery carries it (see carried_order), or None.
    carried: common_pb2.Order | None = None


def decode(message: AbstractIncomingMessage) -> Job:
    try:
        body = orjson.loads(message.body)
        order_id = str(uuid.UUID(str(body["orderId"])))
        attempt = int(message.headers.get("x-attempt", body.get("attempt", 1)))
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise PoisonMessage(str(exc)) from exc
    if attempt < 1:
        raise PoisonMessage(f"attempt {attempt}")
    return Job(order_id, attempt, None if message.redelivered else carried_order(body, order_id))


def carried_order(body: dict[str, Any], order_id: str) -> common_pb2.Order | None:
    """The order as the job's body carries it (orders writes it with the job), or None: a job back from a wait
    tier names the order only (and a redelivery is not asked). Only a starting point: every step is a
    compare-and-set on the status, so a copy no longer current is caught at the first step and read again."""
    carried = body.get("order")
    if not isinstance(carried, dict):
        return None
    try:
        order = common_pb2.Order(
            id=order_id,
            type=carried["type"],
            status=states.to_proto(carried["status"]),
            seq=int(carried["seq"]),
            token_in=carried["tokenIn"],
            token_out=carried["tokenOut"],
            amount_in=carried["amountIn"],
            slippage=carried["slippage"],
            limit_price=carried.get("limitPrice") or "",
        )
        order.created_at.FromDatetime(codec.parse_iso(carried["createdAt"]))
    except (KeyError, TypeError, ValueError):
        return None  # read it from orders instead
    return order


class Stats:
    def __init__(self) -> None:
        self.done = 0
        self.in_flight = 0
        self.retried = 0
        self.failed = 0
        self.parked = 0


class JobConsumer:
    def __init__(self, settings: Settings, pipeline: Pipeline, limiter: RateLimiter) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.limiter = limiter
        self.names = amqp.Names(settings.amqp_prefix)
        self.stats = Stats()
        self.rng = random.Random()
        self.channel: AbstractChannel | None = None
        self.queue: AbstractQueue | None = None
        self.retry_exchange: AbstractExchange | None = None
        self.parking_exchange: AbstractExchange | None = None
        self.tag: str | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self, channel: AbstractChannel) -> None:
        self.channel = channel
        await channel.set_qos(prefetch_count=self.settings.executor_prefetch)
        await amqp.declare_topology(channel, self.names, self.settings)
        self.retry_exchange = await channel.get_exchange(self.names.retry_exchange)
        self.parking_exchange = await channel.get_exchange(self.names.parking_exchange)
        self.queue = await channel.get_queue(self.names.execute_queue)
        self.tag = await self.queue.consume(self.on_message)

    async def stop(self, grace_s: float) -> None:
        """Stop taking jobs; give in-flight ones ``grace_s``, then cancel them (they are redelivered)."""
        if self.queue is not None and self.tag is not None:
            await self.queue.cancel(self.tag)
            self.tag = None
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        self.stats.in_flight += 1
        try:
            await self.handle(message)
        finally:
            self.stats.in_flight -= 1
            if task is not None:
                self.tasks.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job = decode(message)
        except PoisonMessage as exc:
            log.error("undecodable job parked: %s", exc, extra={"messageId": message.message_id})
            self.stats.parked += 1
            await message.reject(requeue=False)
            return
        order_id, attempt = job.order_id, job.attempt
        order_id_var.set(order_id)
        ctx = telemetry.extract(message.headers)
        with telemetry.tracer(__name__).start_as_current_span(
            "executor job",
            context=ctx,
            kind=SpanKind.CONSUMER,
            attributes={
                "order.id": order_id,
                "order.attempt": attempt,
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": self.names.execute_queue,
                "messaging.message.id": message.message_id or "",
            },
        ):
            await self._attempt(message, job)

    async def _attempt(self, message: AbstractIncomingMessage, job: Job) -> None:
        order_id, attempt = job.order_id, job.attempt
        try:
            await self._run_attempt(message, job)
        except Exception:
            # Not straight back to the work queue (an immediate redelivery would fail the same way and
            # spend the queue's delivery limit in a second): to the first wait tier, same attempt.
            log.exception("handling attempt %d failed; the job runs again after a wait", attempt)
            try:
                await self._republish(message, order_id, attempt, self.settings.retry_backoff_ms[0])
            except Exception:  # noqa: BLE001 - the broker itself failed: a dead channel redelivers it anyway
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                return
        await message.ack()

    async def _run_attempt(self, message: AbstractIncomingMessage, job: Job) -> None:
        order_id, attempt = job.order_id, job.attempt
        try:
            order = job.carried or await self.pipeline.load(order_id)
            # PostgreSQL's retry_count is the truth; a stale header cannot rewind it.
            attempt = max(attempt, order.retry_count + 1)
            if order.status == states.to_proto(states.PENDING) or (
                order.type != "market" and order.status == states.to_proto(states.ROUTING) and order.retry_count == 0
            ):  # a limit/sniper order's job is born in routing, when its trigger fires
                await self.limiter.acquire()
            order = await self.pipeline.run(order, attempt)
            self.stats.done += 1
        except InfraError as exc:
            log.warning("dependency unavailable, job will run again: %s", exc)
            await self._republish(message, order_id, attempt, self.settings.retry_backoff_ms[0])
        except StepError as exc:
            await self._failed_attempt(message, order_id, attempt, exc)
        except grpc.aio.AioRpcError as exc:
            log.warning("rpc failed, job will run again: %s", exc.details())
            await self._republish(message, order_id, attempt, self.settings.retry_backoff_ms[0])
        except Exception as exc:
            log.exception("unexpected error in attempt %d", attempt)
            await self._failed_attempt(message, order_id, attempt, RetryableError("INTERNAL_ERROR", repr(exc)))

    async def _failed_attempt(
        self, message: AbstractIncomingMessage, order_id: str, attempt: int, exc: StepError
    ) -> None:
        telemetry.record_error(trace.get_current_span(), exc)
        trace.get_current_span().set_attribute("error.type", exc.code)
        final = isinstance(exc, FinalError) or attempt >= self.settings.max_attempts
        try:
            order = await self.pipeline.load(order_id)
            if states.from_proto(order.status) in states.TERMINAL:
                return
            if final:
                await self.pipeline.transition(
                    order, fail=orders_pb2.Fail(attempt=attempt, code=exc.code, reason=str(exc))
                )
                self.stats.failed += 1
                log.warning("order failed: %s", exc, extra={"code": exc.code, "attempt": attempt})
                await self._park(order_id, attempt, f"{exc.code}: {exc}")
                return
            delay = self.settings.retry_backoff_ms[min(attempt - 1, len(self.settings.retry_backoff_ms) - 1)]
            retry = orders_pb2.Retry(attempt=attempt + 1, code=exc.code, reason=str(exc), retry_in_ms=delay)
            await self.pipeline.transition(order, retry=retry)
        except Superseded:
            # The order moved while this failure was being recorded: look at it again shortly.
            await self._republish(message, order_id, attempt, self.settings.retry_backoff_ms[0])
            return
        except InfraError as infra:
            log.warning("cannot record the failed attempt yet: %s", infra)
            await self._republish(message, order_id, attempt, self.settings.retry_backoff_ms[0])
            return
        self.stats.retried += 1
        metrics.RETRIES.labels(exc.code).inc()
        log.info("attempt %d failed (%s), retrying", attempt, exc.code, extra={"attempt": attempt})
        await self._republish(message, order_id, attempt + 1, delay)

    async def _park(self, order_id: str, attempt: int, reason: str) -> None:
        """The job of a failed order, kept for inspection with why it ended."""
        assert self.parking_exchange is not None
        self.stats.parked += 1
        await amqp.publish(
            self.parking_exchange,
            "",
            orjson.dumps({"orderId": order_id, "attempt": attempt}),
            headers={"x-park-reason": reason[:1000], "x-attempt": attempt, "x-order-id": order_id},
            message_id=f"{order_id}:{attempt}:parked",
        )

    async def _republish(self, message: AbstractIncomingMessage, order_id: str, attempt: int, delay_ms: int) -> None:
        """Send the job to the wait queue of ``delay_ms`` (± jitter); it comes back to the work queue."""
        assert self.retry_exchange is not None
        tiers = self.settings.retry_backoff_ms
        tier = delay_ms if delay_ms in tiers else tiers[0]
        jitter = amqp.jitter_ms(self.settings, tier)
        expiration = tier + self.rng.randint(0, jitter)  # waits are never shorter than the tier
        headers = {**telemetry.inject_headers(), "x-attempt": attempt, "x-order-id": order_id}
        await amqp.publish(
            self.retry_exchange,
            self.names.wait_key(tier),
            orjson.dumps({"orderId": order_id, "attempt": attempt}),
            headers=headers,
            message_id=f"{order_id}:{attempt}:{uuid.uuid4().hex[:8]}",
            expiration_ms=max(expiration, 1),
        )
