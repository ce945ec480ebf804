"""A service component served by a real grpc.aio server in the test's process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from services.common.grpc_server import SERVER_OPTIONS
from tests.support.mesh import free_port


class Component(Protocol):
    async def start(self, server: grpc.aio.Server) -> list[str]: ...

    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def serve(component: Component) -> AsyncIterator[str]:
    """Start ``component`` on a free port; yield its target; stop and close it after (after a failed start too)."""
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(component.close)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        stack.push_async_callback(server.stop, 1)
        await component.start(server)
        port = free_port()
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        yield f"127.0.0.1:{port}"
