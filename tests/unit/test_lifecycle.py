"""A service's lifecycle: what its start opened is closed in reverse order, after a graceful stop
(SIGTERM) as after a start that failed part-way or that SIGTERM cut short."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest

from services.common import config, grpc_server
from tests.support.mesh import free_port


class Fake(grpc_server.Lifecycle):
    """Opens three resources; ``then`` says how its start ends: "ok", "fail" or "hang"."""

    name = "fake"

    def __init__(self, then: str) -> None:
        super().__init__()
        self.then = then
        self.log: list[str] = []
        self.started = asyncio.Event()

    async def _close(self, what: str) -> None:
        self.log.append(f"close {what}")

    async def start(self, server: grpc.aio.Server) -> list[str]:
        for what in ("pool", "channel", "consumer"):
            self.log.append(f"open {what}")
            self.resources.push_async_callback(self._close, what)
        self.started.set()
        if self.then == "fail":
            raise ConnectionError("broker refused")
        if self.then == "hang":
            await asyncio.Event().wait()
        return []

    async def healthy(self) -> bool:
        return True

    async def stop_intake(self) -> None:
        self.log.append("stop intake")


OPENED = ["open pool", "open channel", "open consumer"]
CLOSED = ["close consumer", "close channel", "close pool"]


async def _sigterm_once(component: Fake, after_s: float = 0.2) -> None:
    await component.started.wait()
    await asyncio.sleep(after_s)
    os.kill(os.getpid(), signal.SIGTERM)


async def test_a_failed_start_closes_what_it_opened_in_reverse() -> None:
    component = Fake("fail")
    with pytest.raises(ConnectionError, match="broker refused"):
        await grpc_server.serve(component, free_port(), config.Settings())
    assert component.log == OPENED + CLOSED


async def test_sigterm_while_starting_cancels_the_start_and_closes() -> None:
    component = Fake("hang")
    killer = asyncio.create_task(_sigterm_once(component))
    await asyncio.wait_for(grpc_server.serve(component, free_port(), config.Settings()), 5)
    await killer
    assert component.log == OPENED + CLOSED


async def test_sigterm_drains_then_closes_in_reverse_within_the_grace() -> None:
    component = Fake("ok")
    port = free_port()
    killer = asyncio.create_task(_sigterm_once(component))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(grpc_server.serve(component, port, config.Settings(shutdown_grace_s=2)), 10)
    await killer
    assert component.log == [*OPENED, "stop intake", *CLOSED]
    assert loop.time() - started < 2 + 1
    assert not loop.remove_signal_handler(signal.SIGTERM), "the handler went with the server"
