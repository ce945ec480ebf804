"""AMQP frames written in one turn of the event loop leave in one system call.

aiormq's writer task hands each frame (a publish is one: method, header and
body marshalled together) to its stream as it takes it from its queue, and
uvloop sends every ``write`` to the socket at once: a batch of N publishes is
N system calls, each waking RabbitMQ. Here the connection's stream keeps the
bytes written until the end of the turn (``call_soon``) and hands them to the
transport together, in one system call.

Whoever waits for a frame to be written (aiormq's writer resolves a drain
future once ``drain`` returns: an ack, an RPC) still resumes only after its
bytes reached the transport: the flush was scheduled at the turn's first
write, before any waiter could be woken, and the loop runs callbacks in the
order they were scheduled. So ``drain`` does not hand over on its own (it
would write each acked frame alone); it waits, as a stream's does, only
while the transport is paused. ``close`` hands over what is kept first.

Installed through aiormq's own seam, its ``TransportFactory``: the robust
connection class below passes one to every (re)connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aiormq.connection import TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

AMQP_PORT = 5672


class TurnWriter(asyncio.StreamWriter):
    """A stream writer that hands the turn's writes to its transport as one."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.StreamReaderProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._turn_loop = loop
        self._kept: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._kept:
            self._turn_loop.call_soon(self.flush)
        self._kept.append(bytes(data))

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what was kept to the transport (one write); nothing if the transport is closing."""
        if not self._kept:
            return
        kept, self._kept = self._kept, []
        if self.transport.is_closing():
            return
        self.transport.write(kept[0] if len(kept) == 1 else b"".join(kept))

    def close(self) -> None:
        self.flush()
        super().close()


class TurnTransportFactory(TransportFactory):
    """aiormq's plain TCP connection (as its ``TCPTransportFactory`` opens it, with
    :func:`asyncio.open_connection`'s steps), its writes grouped by :class:`TurnWriter`."""

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kwargs.pop("ssl_context_provider", None)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host or "localhost", url.port or AMQP_PORT, **kwargs
            )
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc
        return reader, TurnWriter(transport, protocol, reader, loop)


class TurnConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, whose every (re)connection opens its transport with
    :class:`TurnTransportFactory` (aio-pika hands its ``kwargs`` to ``aiormq.connect``)."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        super().__init__(url, loop, **kwargs)
        self.kwargs["transport_factory"] = TurnTransportFactory()


def connect_kwargs(url: str) -> dict[str, Any]:
    """What :func:`aio_pika.connect_robust` needs for frames grouped per turn; plain TCP only (``amqps`` keeps
    aiormq's own TLS transport)."""
    if URL(url).scheme != "amqp":
        return {}
    return {"connection_class": TurnConnection}
