"""grpc.aio bootstrap shared by every service.

Each service implements :class:`Component`: it registers its servicers, says
whether its own dependencies are healthy, and stops in order. :func:`main`
runs it with standard health and reflection, and shuts down gracefully on
SIGTERM/SIGINT: health NOT_SERVING, stop intake, ``server.stop(grace)``, then
close connections.

Lifecycles cannot leak: a component registers each connection, pool and task
on its :class:`Lifecycle` stack as soon as it is opened, and ``close()``
closes them in reverse order, after a graceful stop as after a start that
failed part-way or was cut short by SIGTERM.

Health has two questions, asked by different probes:

- readiness, service ``""`` (and each service's own name): SERVING only while
  :meth:`Component.healthy` says its dependencies are reachable;
- liveness, service ``"liveness"``: SERVING for as long as the process runs
  its event loop, whatever its dependencies do. The answer comes from that
  loop, so a wedged loop times the probe out. A database outage therefore
  takes pods out of load balancing without restarting them.

Connections are recycled after :data:`MAX_CONNECTION_AGE_MS` (GOAWAY; calls
in flight, Watch streams included, finish on the old connection), so clients
reconnect through the Service and new replicas receive their share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import config, logs, metrics, telemetry

log = logging.getLogger(__name__)
T = TypeVar("T")
# Of SHUTDOWN_GRACE_S, what is kept for closing connections and pools after the server stopped.
CLOSE_RESERVE_S = 0.5
HEALTH_INTERVAL_S = 1.0
LIVENESS = "liveness"
# gRPC core adds +-10 % jitter, so replicas started together do not all reconnect at once.
MAX_CONNECTION_AGE_MS = 120_000

SERVER_OPTIONS = [
    ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
    # No grace limit: streams opened before the GOAWAY run to their natural end.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 20_000),
]


class Component(Protocol):
    """What a service provides to the bootstrap."""

    name: str

    async def start(self, server: grpc.aio.Server) -> list[str]:
        """Connect dependencies, add servicers; return full service names.

        What it opened is closed by :meth:`close` even when it fails (or is cancelled) part-way."""
        ...

    async def healthy(self) -> bool:
        """True when this service's own dependencies are reachable."""
        ...

    async def stop_intake(self) -> None:
        """Stop taking new work (consumers, relays); in-flight work may finish."""
        ...

    async def close(self) -> None:
        """Close what :meth:`start` opened, in reverse order, once the server has stopped."""
        ...


class Lifecycle:
    """A component's resources on one stack: each registered when opened, all closed by :meth:`close`."""

    def __init__(self) -> None:
        self.resources = contextlib.AsyncExitStack()

    async def close(self) -> None:
        await self.resources.aclose()


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (for an exit stack: a task closed like a connection)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class StoppedWhileStarting(Exception):
    """SIGTERM came before the component had started: nothing to drain, only to close."""


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """``work``'s result, or StoppedWhileStarting (``work`` cancelled) when ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel(stopped)
    if not task.done():
        await cancel(task)
        raise StoppedWhileStarting
    return task.result()


async def _watch_health(component: Component, servicer: health.aio.HealthServicer, names: list[str]) -> None:
    last: bool | None = None
    while True:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the
            # probe finishes, and this task would outlive the shutdown that cancelled it (a server that never exits).
            async with asyncio.timeout(HEALTH_INTERVAL_S * 2):
                ok = await component.healthy()
        except Exception:  # noqa: BLE001 - any failure of a probe means not healthy
            ok = False
        if ok != last:
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", *names):
                await servicer.set(name, status)
            log.info("health %s", "SERVING" if ok else "NOT_SERVING")
            last = ok
        await asyncio.sleep(HEALTH_INTERVAL_S)


async def serve(component: Component, port: int, settings: config.Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            stack.callback(loop.remove_signal_handler, sig)
        # Unwound in reverse: the component's connections last, after the server stopped.
        stack.push_async_callback(component.close)
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=telemetry.server_interceptors())
        stack.push_async_callback(server.stop, None)  # at once when the start failed; after a graceful stop, a no-op
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        await servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        try:
            names = await _unless_stopped(stop, component.start(server))
        except StoppedWhileStarting:
            log.info("%s stopped while starting", component.name)
            return
        reflection.enable_server_reflection(
            (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        server.add_insecure_port(f"[::]:{port}")
        await server.start()
        log.info("%s listening on :%d", component.name, port)
        watcher = asyncio.create_task(_watch_health(component, servicer, names))
        stack.push_async_callback(cancel, watcher)
        await stop.wait()
        # One budget for the whole shutdown: in-flight work, open streams and closing must fit in the grace.
        deadline = loop.time() + settings.shutdown_grace_s
        log.info("%s shutting down", component.name)
        await cancel(watcher)
        await servicer.enter_graceful_shutdown()
        await component.stop_intake()
        await server.stop(max(deadline - loop.time() - CLOSE_RESERVE_S, 0.1))
    log.info("%s stopped", component.name)


def main(factory: Callable[[config.Settings], Component], port_of: Callable[[config.Settings], int]) -> None:
    """Entry point of ``python -m services.<name>``."""
    settings = config.load()
    component = factory(settings)
    logs.setup(component.name, settings.log_level)
    telemetry.setup(component.name)
    try:
        metrics.serve(settings.metrics_port_of(component.name))
        run(serve(component, port_of(settings), settings))
    finally:
        telemetry.shutdown()


def run(coro: Awaitable[None]) -> None:
    """Run on uvloop when available."""
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
