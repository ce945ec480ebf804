"""AMQP frames written in one turn of the event loop leave in one write (services/common/amqp_writes.py).

The oracle for "one write" is the transport itself: a real TCP transport whose ``write`` calls are counted on
their way through, and the bytes a real server received.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import pytest

from services.common import amqp, amqp_writes
from tests.support.infra import TestInfra
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio


class CountedTransport:
    """A real transport, its ``write`` calls counted."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.inner = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@asynccontextmanager
async def served() -> AsyncIterator[tuple[amqp_writes.TurnWriter, CountedTransport, bytearray]]:
    """A TurnWriter over a counted TCP transport to a server that keeps every byte it reads."""
    received = bytearray()
    connected = asyncio.Event()

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        while chunk := await reader.read(65536):
            received.extend(chunk)
        writer.close()

    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.create_connection(lambda: protocol, "127.0.0.1", port)
    counted = CountedTransport(transport)
    writer = amqp_writes.TurnWriter(counted, protocol, reader, loop)  # type: ignore[arg-type]
    await connected.wait()
    try:
        yield writer, counted, received
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


async def _received(received: bytearray, size: int) -> bytes:
    await eventually(lambda: len(received) >= size)
    return bytes(received)


async def test_writes_of_one_turn_reach_the_transport_as_one_write_in_order() -> None:
    async with served() as (writer, transport, received):
        for chunk in (b"one,", b"two,", b"three"):
            writer.write(chunk)
        assert transport.writes == [], "nothing is written before the turn ends"
        await asyncio.sleep(0)
        assert transport.writes == [b"one,two,three"]
        writer.write(b";four")
        await asyncio.sleep(0)
        writer.write(b";five")
        await asyncio.sleep(0)
        assert transport.writes == [b"one,two,three", b";four", b";five"], "writes of later turns go on their own"
        assert await _received(received, 23) == b"one,two,three;four;five"


async def test_a_waiter_on_a_drained_write_resumes_only_after_its_bytes_reached_the_transport() -> None:
    """aiormq's writer writes a frame, drains, then resolves the frame's future: acks written in one turn go
    together, and whoever awaited one of them sees its bytes handed over already."""
    async with served() as (writer, transport, received):
        seen: dict[int, list[bytes]] = {}

        async def acked(n: int, written: asyncio.Future[None]) -> None:
            await written
            seen[n] = list(transport.writes)

        futures = [asyncio.get_running_loop().create_future() for _ in range(3)]
        waiters = [asyncio.create_task(acked(n, future)) for n, future in enumerate(futures)]
        await asyncio.sleep(0)  # every waiter awaits its future
        for n, future in enumerate(futures):  # aiormq's writer loop: write, drain, resolve; no yield between
            writer.write(f"ack{n};".encode())
            await writer.drain()
            future.set_result(None)
        assert transport.writes == [], "drain alone hands nothing over"
        await asyncio.gather(*waiters)
        assert transport.writes == [b"ack0;ack1;ack2;"], "the three acks went as one write"
        assert seen == {n: [b"ack0;ack1;ack2;"] for n in range(3)}, "each waiter resumed after the write"
        assert await _received(received, 15) == b"ack0;ack1;ack2;"


async def test_close_hands_over_what_was_kept_at_once() -> None:
    async with served() as (writer, transport, received):
        writer.write(b"before close")
        writer.close()
        assert transport.writes == [b"before close"]
        assert await _received(received, 12) == b"before close"


async def test_writes_after_the_transport_closed_are_dropped_not_raised() -> None:
    async with served() as (writer, transport, _):
        writer.write(b"late")
        transport.inner.close()
        await asyncio.sleep(0)
        assert transport.writes == [], "a closing transport is not written to"


async def test_publishes_made_together_are_one_write_and_each_is_confirmed_and_delivered_in_order(
    infra: TestInfra, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[int] = []
    flush = amqp_writes.TurnWriter.flush

    def counted_flush(self: amqp_writes.TurnWriter) -> None:
        flushed.append(len(self._kept))
        flush(self)

    monkeypatch.setattr(amqp_writes.TurnWriter, "flush", counted_flush)
    connection = await amqp.connect(infra.amqp_url)
    try:
        channel = await amqp.confirm_channel(connection)
        exchange = await channel.declare_exchange(f"{infra.amqp_prefix}turn-{uuid.uuid4().hex}", auto_delete=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "k")
        await asyncio.sleep(0.1)  # the declarations' own frames have left
        flushed.clear()
        bodies = [f"message {n}".encode() for n in range(10)]
        await asyncio.gather(*(amqp.publish(exchange, "k", body) for body in bodies))
        assert flushed[0] == 10, f"the ten publishes went in one write: {flushed}"
        got: list[bytes] = []
        async with asyncio.timeout(10):
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    got.append(message.body)
                    if len(got) == len(bodies):
                        break
        assert got == bodies
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await amqp.publish(exchange, "no-such-key", b"unroutable")  # mandatory: still refused
    finally:
        await connection.close()


async def test_a_robust_connection_groups_its_writes_again_after_it_reconnects(
    infra: TestInfra, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aio-pika reconnects with the kwargs it was given: the new connection's stream is a TurnWriter too."""
    writers: list[amqp_writes.TurnWriter] = []
    create = amqp_writes.TurnTransportFactory.create

    async def recorded(self: amqp_writes.TurnTransportFactory, url: Any, **kwargs: Any) -> Any:
        reader, writer = await create(self, url, **kwargs)
        assert isinstance(writer, amqp_writes.TurnWriter)
        writers.append(writer)
        return reader, writer

    monkeypatch.setattr(amqp_writes.TurnTransportFactory, "create", recorded)
    connection = await amqp.connect(infra.amqp_url)
    try:
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())
        channel = await amqp.confirm_channel(connection)
        exchange = await channel.declare_exchange(f"{infra.amqp_prefix}turn-{uuid.uuid4().hex}", auto_delete=True)
        assert len(writers) == 1
        writers[0].transport.abort()  # the connection drops, as when the network does
        async with asyncio.timeout(15):
            await reconnected.wait()
        assert len(writers) == 2, "the reconnection opened its transport through the same factory"
        counted = CountedTransport(writers[1].transport)
        monkeypatch.setattr(writers[1], "_transport", counted)
        await asyncio.gather(*(amqp.publish(exchange, "k", b"again", mandatory=False) for _ in range(5)))
        publishes = [chunk for chunk in counted.writes if b"again" in chunk]
        assert len(publishes) == 1 and publishes[0].count(b"again") == 5, "five publishes, one write"
    finally:
        await connection.close()
