"""Notifier service: ``python -m services.notifier``.

Each replica binds its own exclusive queue to the events exchange, so every
replica receives every event and serves any watcher.
"""

from __future__ import annotations

import logging
from typing import Any

import aio_pika
import grpc
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from dexengine.v1 import notifier_pb2, notifier_pb2_grpc, orders_pb2_grpc
from services.common import amqp, auth, grpc_client, grpc_server, metrics, telemetry
from services.common.auth import AuthSettings
from services.common.config import Settings
from services.common.mesh_calls import OrdersCalls
from services.notifier.hub import Hub
from services.notifier.servicer import NotifierServicer

log = logging.getLogger(__name__)


class NotifierComponent(grpc_server.Lifecycle):
    name = "notifier"

    def __init__(self, settings: Settings, auth_settings: AuthSettings | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.auth = auth_settings or auth.load()
        self.hub = Hub()
        self.connection: AbstractRobustConnection | None = None
        self.queue: AbstractQueue | None = None
        self.tag: str | None = None
        self.orders_channel: grpc.aio.Channel | None = None

    async def start(self, server: grpc.aio.Server) -> list[str]:
        # Inside the running loop; its calls carry the internal token (a client's key only when forwarded).
        self.orders_channel = grpc_client.channel(self.settings.orders_target, self.auth.internal_token)
        self.resources.push_async_callback(self.orders_channel.close)
        names = amqp.Names(self.settings.amqp_prefix)
        self.connection = await amqp.connect(self.settings.amqp_url)
        self.resources.push_async_callback(self.connection.close)
        # The exclusive queue is gone while the connection is down: events of that gap
        # never reach this replica, so every watcher re-reads its order on reconnect.
        self.connection.close_callbacks.add(lambda *_: self.hub.intake_down())
        self.connection.reconnect_callbacks.add(lambda *_: self._intake_back())
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.declare_exchange(names.events_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        self.queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await self.queue.bind(exchange)
        self.hub.intake_up()
        self.tag = await self.queue.consume(self.on_event, no_ack=True)
        calls = OrdersCalls(self.orders_channel)  # the watchers' reads, on one stream
        self.resources.push_async_callback(calls.aclose)
        servicer = NotifierServicer(self.hub, orders_pb2_grpc.OrdersStub(self.orders_channel), calls, self.auth)
        notifier_pb2_grpc.add_NotifierServicer_to_server(servicer, server)
        return [notifier_pb2.DESCRIPTOR.services_by_name["Notifier"].full_name]

    def _intake_back(self) -> None:
        """The connection is back, with a new queue bound: events from now on arrive, those in between are lost."""
        self.hub.intake_up()
        self.hub.resync_all()

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        """A relay batch's commits (one message per batch and order type), handed to the watchers in order."""
        try:
            commits = amqp.commits_of(message.body, message.headers)
        except ValueError:  # orjson.JSONDecodeError is a ValueError too
            log.error("undecodable event message dropped", extra={"messageId": message.message_id})
            return
        for commit in commits:
            self.fan_out(commit.events, telemetry.extract(commit.trace))

    def fan_out(self, events: list[dict[str, Any]], parent: Context) -> None:
        """One commit's events, in seq order, to their watchers: one span per commit, in its order's trace."""
        with telemetry.span(
            __name__,
            "notifier fan-out",
            parent=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "order.id": str(events[0].get("orderId", "")) if events else "",
                # The commit's statuses in seq order; order.status and order.seq are its last event's.
                "order.statuses": [str(event.get("status", "")) for event in events],
                "order.status": str(events[-1].get("status", "")) if events else "",
                "order.seq": int(events[-1].get("seq", 0)) if events else 0,
            },
        ) as span:
            delivered = sum(self.hub.publish(event) for event in events)
            span.set_attribute("notifier.watchers", delivered)
            metrics.EVENTS_FANNED_OUT.inc(delivered)

    async def healthy(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def stop_intake(self) -> None:
        if self.queue is not None and self.tag is not None:
            await self.queue.cancel(self.tag)


if __name__ == "__main__":
    grpc_server.main(NotifierComponent, lambda s: s.notifier_port)
