"""A service's lifecycle: what its start opened is closed in reverse order, after a graceful stop
(SIGTERM) as after a start that failed part-way or that SIGTERM cut short."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

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


class CancelledAsItAnswers(grpc_server.Lifecycle):
    """Its health probe answers just as the shutdown cancels the task that asked."""

    name = "cancelled-as-it-answers"

    def __init__(self) -> None:
        super().__init__()
        self.watcher: asyncio.Task[None] | None = None
        self.probes = 0

    async def start(self, server: grpc.aio.Server) -> list[str]:
        return []

    async def healthy(self) -> bool:
        self.probes += 1
        assert self.watcher is not None
        self.watcher.cancel()
        return True

    async def stop_intake(self) -> None:
        """Never called here: the watcher only probes (the Component protocol asks for it)."""


async def test_the_health_watcher_ends_when_cancelled_as_a_probe_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shutdown cancels the watcher and waits for it to end. A cancellation that arrives as a probe finishes must
    end it too: ``asyncio.wait_for`` on Python 3.11 swallows that one, the watcher went on probing, and the server
    never exited (seen in a CI run: a router still running minutes after SIGTERM)."""
    monkeypatch.setattr(grpc_server, "HEALTH_INTERVAL_S", 0.01)
    component = CancelledAsItAnswers()
    watcher = asyncio.create_task(grpc_server._watch_health(component, grpc_server.health.aio.HealthServicer(), []))
    component.watcher = watcher
    done, _ = await asyncio.wait({watcher}, timeout=2)
    if not done:
        while not watcher.done():  # the old behaviour: end it for good, then fail
            watcher.cancel()
            await asyncio.sleep(0.01)
    assert done and watcher.cancelled(), f"the watcher went on after {component.probes} cancellations"
    assert component.probes == 1


def test_no_service_waits_with_asyncio_wait_for() -> None:
    """Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives as what it awaits finishes: a task
    that waits with it in a loop can outlive its shutdown. ``async with asyncio.timeout(...)`` is used instead."""
    root = Path(__file__).resolve().parents[2]
    found = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("services", "localnet", "dexclient", "venues")
        for path in sorted((root / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "asyncio.wait_for(" in line
    ]
    assert not found, found
