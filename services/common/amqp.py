"""RabbitMQ topology and safe publishing (aio-pika), shared by every service.

Everything is durable; messages are persistent with a unique message id;
every publish waits for the broker's confirm and raises on an unroutable
(``mandatory``) message. aio-pika's defaults are none of these.

Topology (names get ``AMQP_PREFIX`` in front):

- ``orders.execute`` (direct) -> quorum queue ``orders.execute.q`` (key
  ``execute``): execution jobs; delivery limit as a crash-loop backstop,
  dead-letters to parking.
- ``orders.retry`` (direct) -> one quorum queue per backoff tier
  ``orders.wait.<ms>`` (key ``wait.<ms>``), TTL = the tier's maximum; each
  dead-letters back to ``orders.execute``. No consumers.
- ``orders.parking`` (fanout) -> ``orders.parking.q``: messages that must not
  be retried (undecodable, exhausted, crash-looping). No consumer; inspect it.
- ``orders.events`` (fanout): order events. One message carries the commits
  of one relay batch whose orders are of one type (``market``, ``limit``,
  ``sniper``, its routing key), in commit order: ``{"commits": [{"trace":
  <W3C context of the commit's publish>, "events": [<the events it appended,
  in seq order>]}, ...]}`` (:func:`commits_body`, :func:`commits_of`). Each
  notifier replica binds its own exclusive queue, so every replica sees every
  event.
- ``orders.events.by-type`` (direct), bound to ``orders.events``: the same
  messages routed by that key, for a consumer that wants only some types (the
  router's trigger binds ``limit`` and ``sniper``: a market order's events
  never reach it). Older relays published one message per commit (a JSON
  array of its events) or per event (one object, with the key ``""``); both
  are still read, as one commit whose trace context is the message's headers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from services.common import amqp_writes
from services.common.config import Settings

DELIVERY_LIMIT = 5
ORDER_TYPE_HEADER = "x-order-type"  # an event message's order type, also its routing key
JOB_KEY = "execute"


@dataclass(frozen=True)
class Names:
    prefix: str = ""

    @property
    def execute_exchange(self) -> str:
        return f"{self.prefix}orders.execute"

    @property
    def execute_queue(self) -> str:
        return f"{self.prefix}orders.execute.q"

    @property
    def retry_exchange(self) -> str:
        return f"{self.prefix}orders.retry"

    def wait_queue(self, delay_ms: int) -> str:
        return f"{self.prefix}orders.wait.{delay_ms}ms"

    @staticmethod
    def wait_key(delay_ms: int) -> str:
        return f"wait.{delay_ms}ms"

    @property
    def parking_exchange(self) -> str:
        return f"{self.prefix}orders.parking"

    @property
    def parking_queue(self) -> str:
        return f"{self.prefix}orders.parking.q"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}orders.events"

    @property
    def events_by_type_exchange(self) -> str:
        return f"{self.prefix}orders.events.by-type"

    def queues(self, tiers: Iterable[int]) -> tuple[str, ...]:
        """Every queue of the topology but the notifiers' own, with the wait queue of each backoff tier."""
        return (self.execute_queue, self.parking_queue, *(self.wait_queue(delay) for delay in tiers))

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Every exchange of the topology (what a run that declared it deletes afterwards)."""
        return (
            self.execute_exchange,
            self.retry_exchange,
            self.parking_exchange,
            self.events_exchange,
            self.events_by_type_exchange,
        )


@dataclass(frozen=True)
class Commit:
    """One commit's events as an events message carries them, with the W3C trace context of its publish."""

    trace: dict[str, str]
    events: list[dict[str, Any]]


def commits_body(commits: list[tuple[dict[str, str], str | bytes]]) -> bytes:
    """An events message's body: each commit's trace context and its events (the JSON array the outbox row holds,
    spliced as it is)."""
    return orjson.dumps({"commits": [{"trace": trace, "events": orjson.Fragment(events)} for trace, events in commits]})


def commits_of(body: bytes, headers: Mapping[str, Any] | None = None) -> list[Commit]:
    """The commits of one message of the events exchange, in order. An older relay's message (one commit's array,
    or one event object) is one commit whose trace context is the message's ``headers``. ValueError otherwise."""
    data = orjson.loads(body)
    if isinstance(data, dict) and isinstance(data.get("commits"), list):
        commits = []
        for commit in data["commits"]:
            if not isinstance(commit, dict) or not _events(commit.get("events")):
                raise ValueError("a commit is an object with an array of event objects")
            trace = commit.get("trace")
            commits.append(Commit(trace if isinstance(trace, dict) else {}, commit["events"]))
        return commits
    events = [data] if isinstance(data, dict) else data
    if not _events(events):
        raise ValueError("an events message carries commits, a commit's array of events, or one event object")
    carried = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (headers or {}).items()}
    return [Commit(carried, events)]


def _events(events: Any) -> bool:
    return isinstance(events, list) and all(isinstance(event, dict) for event in events)


def events_of(body: bytes) -> list[dict[str, Any]]:
    """Every event of one message of the events exchange, in order (:func:`commits_of`, commits run together)."""
    return [event for commit in commits_of(body) for event in commit.events]


def _quorum_args(**extra: Any) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        **extra,
    }


async def connect(url: str, *, fail_fast: bool = True) -> AbstractRobustConnection:
    """A robust connection: reconnects and restores topology and consumers."""
    return await aio_pika.connect_robust(
        url, fail_fast=fail_fast, heartbeat=10, reconnect_interval=1, **amqp_writes.connect_kwargs(url)
    )


async def confirm_channel(connection: AbstractRobustConnection) -> AbstractChannel:
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


def jitter_ms(settings: Settings, delay_ms: int) -> int:
    """Largest jitter added to a retry delay (0..RETRY_JITTER of the tier's delay, never subtracted)."""
    return int(delay_ms * settings.retry_jitter)


async def declare_topology(channel: AbstractChannel, names: Names, settings: Settings) -> None:
    """Declare every exchange and queue (idempotent; same arguments every time)."""
    parking = await channel.declare_exchange(names.parking_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    parking_q = await channel.declare_queue(names.parking_queue, durable=True, arguments=_quorum_args())
    await parking_q.bind(parking)

    execute = await channel.declare_exchange(names.execute_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    work = await channel.declare_queue(
        names.execute_queue,
        durable=True,
        arguments=_quorum_args(
            **{"x-delivery-limit": DELIVERY_LIMIT, "x-dead-letter-exchange": names.parking_exchange}
        ),
    )
    await work.bind(execute, routing_key=JOB_KEY)

    retry = await channel.declare_exchange(names.retry_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    for delay in settings.retry_backoff_ms:
        wait = await channel.declare_queue(
            names.wait_queue(delay),
            durable=True,
            arguments=_quorum_args(
                **{
                    "x-message-ttl": delay + jitter_ms(settings, delay),
                    "x-dead-letter-exchange": names.execute_exchange,
                    "x-dead-letter-routing-key": JOB_KEY,
                }
            ),
        )
        await wait.bind(retry, routing_key=names.wait_key(delay))

    await declare_events_by_type(channel, names)


async def declare_events_by_type(channel: AbstractChannel, names: Names) -> AbstractExchange:
    """The events exchange and, bound to it, the exchange that routes its messages by order type."""
    events = await channel.declare_exchange(names.events_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    by_type = await channel.declare_exchange(names.events_by_type_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    await by_type.bind(events)
    return by_type


async def _underlay(exchange: AbstractExchange) -> aiormq.Channel:
    """The aiormq channel under an aio-pika exchange (what its ``publish`` calls)."""
    if not isinstance(exchange, aio_pika.Exchange):
        raise TypeError(f"not an aio-pika exchange: {exchange!r}")
    if exchange.channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{exchange.channel!r} closed")
    channel = await exchange.channel.get_underlay_channel()
    if not isinstance(channel, aiormq.Channel):
        raise TypeError(f"not an aiormq channel: {channel!r}")
    return channel


async def publish(
    exchange: AbstractExchange,
    routing_key: str,
    body: bytes,
    *,
    headers: dict[str, Any] | None = None,
    message_id: str | None = None,
    expiration_ms: int | None = None,
    mandatory: bool = True,
) -> None:
    """Publish persistently; returns once confirmed, raises if unroutable or nacked.

    ``mandatory=False`` only for fan-out events, where no bound queue (no
    notifier running) is not an error: watchers start from a snapshot.
    """
    message = aio_pika.Message(
        body,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id or uuid.uuid4().hex,
        content_type="application/json",
        headers=headers or {},
        expiration=expiration_ms / 1000 if expiration_ms is not None else None,
    )
    # aiormq's own publish, as aio-pika's Exchange.publish calls it but without waiting for the frame to be written:
    # the publishes of one batch then reach the writer together and leave in one system call (amqp_writes); the
    # broker's confirm is still awaited. What is written but not yet confirmed stays bounded without the write's wait:
    # every publisher awaits its confirm, and the relay publishes one batch at a time.
    channel = await _underlay(exchange)
    await channel.basic_publish(
        message.body,
        exchange=exchange.name,
        routing_key=routing_key,
        properties=message.properties,
        mandatory=mandatory,
        wait=False,
    )
