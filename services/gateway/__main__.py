"""Gateway service: ``python -m services.gateway`` (HTTP + WebSocket on :3000)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from aiohttp import web

from services.common import config, logs, telemetry
from services.common.grpc_server import run
from services.gateway.app import build_app

log = logging.getLogger(__name__)


async def serve(settings: config.Settings) -> None:
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=settings.shutdown_grace_s)
    await runner.setup()
    site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port, backlog=2048)
    await site.start()
    log.info("gateway listening on %s:%d", settings.gateway_host, settings.gateway_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway shutting down")
    await runner.cleanup()


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
    logs.setup("gateway", settings.log_level)
    telemetry.setup("gateway")
    tune_gc()
    run(serve(settings))
    telemetry.shutdown()


if __name__ == "__main__":
    main()
