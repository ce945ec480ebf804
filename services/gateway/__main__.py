"""Gateway service: ``python -m services.gateway`` (HTTP + WebSocket on :3000).

``GATEWAY_WORKERS=N`` (default 1) forks N-1 more processes before anything
else starts; all of them listen on the port with ``SO_REUSEPORT`` and the
kernel spreads new connections over them. Each worker has its own heap, so
10,000 sockets are N heaps of 10,000/N and a full collection pauses one
worker for its share only. The first process is the parent: on SIGTERM it
stops the others and waits for them; a worker that dies takes the parent
down (the supervisor restarts the lot), and a parent that dies takes the
workers with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys

from aiohttp import web

from services.common import config, logs, telemetry
from services.common.grpc_server import cancel, run
from services.gateway.app import build_app

log = logging.getLogger(__name__)


async def serve(settings: config.Settings, workers: list[int] | None = None) -> bool:
    """Serve until SIGTERM; ``workers``: the pids this (parent) process forked, stopped with it.

    True when it stopped because a worker exited on its own."""
    workers = workers or []
    lost: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Unwound in reverse, on SIGTERM as after a start that failed: the app's sockets and clients, then the workers.
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_stop_workers, workers, settings.shutdown_grace_s + 5)
        runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=settings.shutdown_grace_s)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(
            runner, settings.gateway_host, settings.gateway_port, backlog=2048, reuse_port=settings.gateway_workers > 1
        )
        await site.start()
        log.info("gateway listening on %s:%d", settings.gateway_host, settings.gateway_port)
        if workers:
            stack.push_async_callback(cancel, asyncio.create_task(_watch_workers(workers, stop, lost)))
        await stop.wait()
        log.info("gateway shutting down")
        _signal_workers(workers)  # they drain their sockets while this process drains its own
    return bool(lost)


def _signal_workers(workers: list[int]) -> None:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


async def _stop_workers(workers: list[int], timeout_s: float) -> None:
    """SIGTERM each worker (again: harmless) and wait for it; SIGKILL one still running after ``timeout_s``."""
    _signal_workers(workers)
    for pid in workers:
        await _reap(pid, timeout_s)


async def _watch_workers(workers: list[int], stop: asyncio.Event, lost: list[int]) -> None:
    """A worker that exits on its own stops the gateway: one port, one fate."""
    while not stop.is_set():
        for pid in workers:
            status = _exited(pid)
            if status is not None:
                log.error("gateway worker %d exited (status %d); stopping", pid, status)
                workers.remove(pid)
                lost.append(pid)
                stop.set()
                return
        await asyncio.sleep(1)


async def _reap(pid: int, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while _exited(pid) is None:
        if asyncio.get_running_loop().time() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.05)


def _exited(pid: int) -> int | None:
    """The wait status of a worker that has exited (reaped now), None while it runs; never blocks."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return status if done else None


def fork_workers(count: int) -> list[int]:
    """Fork ``count - 1`` workers (before any thread, loop or channel exists); the parent gets their pids,
    a worker gets ``[]``."""
    pids: list[int] = []
    for _ in range(count - 1):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            return []
        pids.append(pid)
    return pids


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# The gateway's heap grows with its sockets (~290 MB at 10,000), and a full
# collection of it stopped the process for up to 300 ms, holding every event
# due meanwhile (docs/benchmark.md). Start-up objects are frozen out of the
# collector and the youngest generation is collected every 10,000 allocations
# instead of 700, so short-lived objects die before they are promoted and full
# passes come less often. Measured (fanout / memory profiles): delivery p99
# 356 -> 156 ms with RSS still flat; (50_000, 20, 10) gave 110 ms but let
# garbage pile up between full passes (+1.8 MB/min over 5 minutes).
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main() -> None:
    settings = config.load()
    workers = fork_workers(settings.gateway_workers)
    logs.setup("gateway", settings.log_level)
    telemetry.setup("gateway")
    tune_gc()
    failed: list[bool] = []

    async def serving() -> None:
        failed.append(await serve(settings, workers))

    try:
        run(serving())
    finally:
        telemetry.shutdown()
    if any(failed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
