"""The execution-queue consumer: one job = one attempt of one order.

Acknowledges a message only after the attempt's effect is committed in
orders. An attempt that signed its transaction with this executor named as
the one to watch it land (``execution.executor``, while this executor's lease
holds: services/executor/lease.py) is acked once the transaction is sent: its
landing and outcome run on in the process (at most ``EXECUTOR_LANDINGS`` at
once), with the same failure handling; if the process dies first, orders
re-enqueues the job once the lease lapses. Failure handling:
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
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from dexengine.v1 import common_pb2, orders_pb2
from services.common import amqp, codec, faults, metrics, states, telemetry
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
        self.in_flight = 0  # jobs delivered and not yet acked
        self.landings = 0  # sent orders watched after their jobs' ack
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
        metrics.LANDINGS.set_function(lambda: self.stats.landings)  # /metrics reads the count GetStats gives
        self.rng = random.Random()
        self.channel: AbstractChannel | None = None
        self.queue: AbstractQueue | None = None
        self.retry_exchange: AbstractExchange | None = None
        self.parking_exchange: AbstractExchange | None = None
        self.tag: str | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.landings = asyncio.Semaphore(settings.executor_landings)

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
        with telemetry.span(
            __name__,
            "executor job",
            parent=ctx,
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
            detached = await self._run_attempt(job)
        except Exception:
            # Not straight back to the work queue (an immediate redelivery would fail the same way and
            # spend the queue's delivery limit in a second): to the first wait tier, same attempt.
            log.exception("handling attempt %d failed; the job runs again after a wait", attempt)
            try:
                await self._republish(order_id, attempt, self.settings.retry_backoff_ms[0])
            except Exception:  # noqa: BLE001 - the broker itself failed: a dead channel redelivers it anyway
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                return
        await message.ack()
        if detached:
            faults.crash_point("after_ack")

    async def _run_attempt(self, job: Job) -> bool:
        """Run the attempt; True when its landing was detached (it runs on after the ack)."""
        order_id, attempt = job.order_id, job.attempt
        try:
            order = job.carried or await self.pipeline.load(order_id)
            # PostgreSQL's retry_count is the truth; a stale header cannot rewind it.
            attempt = max(attempt, order.retry_count + 1)
            if order.status == states.to_proto(states.PENDING) or (
                order.type != "market" and order.status == states.to_proto(states.ROUTING) and order.retry_count == 0
            ):  # a limit/sniper order's job is born in routing, when its trigger fires
                await self.limiter.acquire()
            order = await self.pipeline.run(order, attempt, self._detach)
            if order.status == states.to_proto(states.SUBMITTED):
                return True
            self.stats.done += 1
        except Exception as exc:  # noqa: BLE001 - every failure has its ending (_attempt_failed)
            await self._attempt_failed(order_id, attempt, exc)
        return False

    async def _attempt_failed(self, order_id: str, attempt: int, exc: Exception) -> None:
        """Where a failed attempt goes (the module's docstring): again after a wait, retried, or failed."""
        if isinstance(exc, InfraError):
            log.warning("dependency unavailable, job will run again: %s", exc)
            await self._republish(order_id, attempt, self.settings.retry_backoff_ms[0])
        elif isinstance(exc, StepError):
            await self._failed_attempt(order_id, attempt, exc)
        elif isinstance(exc, grpc.aio.AioRpcError):
            log.warning("rpc failed, job will run again: %s", exc.details())
            await self._republish(order_id, attempt, self.settings.retry_backoff_ms[0])
        else:
            log.error("unexpected error in attempt %d", attempt, exc_info=exc)
            await self._failed_attempt(order_id, attempt, RetryableError("INTERNAL_ERROR", repr(exc)))

    async def _detach(self, order: common_pb2.Order, landing: Coroutine[Any, Any, common_pb2.Order]) -> None:
        """Run ``landing`` (the rest of an attempt whose transaction is sent) in this process, after the job's ack."""
        try:
            await self.landings.acquire()  # at most EXECUTOR_LANDINGS: beyond, the job waits, holding its slot
        except BaseException:
            landing.close()
            raise
        self.stats.landings += 1
        task = asyncio.create_task(self._finish(order.id, order.signed.attempt, landing), name=f"landing-{order.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _finish(self, order_id: str, attempt: int, landing: Coroutine[Any, Any, common_pb2.Order]) -> None:
        # A span of its own, in the job's trace: the job's span ended with its ack.
        with telemetry.span(__name__, "executor landing", attributes={"order.id": order_id, "order.attempt": attempt}):
            try:
                try:
                    await landing
                    self.stats.done += 1
                except Exception as exc:  # noqa: BLE001 - as the job's own failures
                    await self._attempt_failed(order_id, attempt, exc)
            except Exception:
                log.exception("recording the outcome of attempt %d failed; its job is sent again", attempt)
                await self._send_back(order_id, attempt)
            finally:
                self.stats.landings -= 1
                self.landings.release()

    async def _send_back(self, order_id: str, attempt: int) -> None:
        """The job to the first wait tier, until the broker takes it (this executor's lease still names it the
        order's watcher, so nothing else would; at shutdown the lease goes and orders takes the order back)."""
        while True:
            await asyncio.sleep(self.settings.retry_backoff_ms[0] / 1000)
            try:
                await self._republish(order_id, attempt, self.settings.retry_backoff_ms[0])
                return
            except Exception as exc:  # noqa: BLE001 - try again
                log.warning("job not sent back yet: %s", exc)

    async def _failed_attempt(self, order_id: str, attempt: int, exc: StepError) -> None:
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
            await self._republish(order_id, attempt, self.settings.retry_backoff_ms[0])
            return
        except InfraError as infra:
            log.warning("cannot record the failed attempt yet: %s", infra)
            await self._republish(order_id, attempt, self.settings.retry_backoff_ms[0])
            return
        self.stats.retried += 1
        metrics.RETRIES.labels(exc.code).inc()
        log.info("attempt %d failed (%s), retrying", attempt, exc.code, extra={"attempt": attempt})
        await self._republish(order_id, attempt + 1, delay)

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

    async def _republish(self, order_id: str, attempt: int, delay_ms: int) -> None:
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
