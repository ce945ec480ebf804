"""What the outbox published, seen from a queue of the test's own on the mesh's exchanges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import aio_pika.abc

from services.common import amqp


@dataclass
class Broker:
    channel: aio_pika.abc.AbstractChannel
    names: amqp.Names
    events: aio_pika.abc.AbstractQueue  # bound to the events exchange before anything was published

    async def commits(self, order_ids: Collection[str], count: int, timeout: float = 10) -> list[list[dict[str, Any]]]:
        """The next ``count`` commits about ``order_ids`` on the events queue: each a commit's events, as the
        messages carried them (a message carries a relay batch's commits of one order type)."""
        found: list[list[dict[str, Any]]] = []
        async with asyncio.timeout(timeout):
            while len(found) < count:
                message = await self.events.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
                    continue
                for commit in amqp.commits_of(message.body, message.headers):
                    if commit.events and commit.events[0]["orderId"] in order_ids:
                        found.append(commit.events)
        return found[:count]


@asynccontextmanager
async def broker(amqp_url: str, prefix: str) -> AsyncIterator[Broker]:
    """A connection with an exclusive queue on the events exchange (gone with the connection)."""
    names = amqp.Names(prefix)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        events = await channel.declare_queue("", exclusive=True)
        await events.bind(names.events_exchange)
        yield Broker(channel, names, events)
    finally:
        await connection.close()
