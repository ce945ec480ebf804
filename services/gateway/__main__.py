"""Gateway service: ``python -m services.gateway`` (HTTP + WebSocket on :3000)."""

from __future__ import annotations

import asyncio
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


def main() -> None:
    settings = config.load()
    logs.setup("gateway", settings.log_level)
    telemetry.setup("gateway")
    run(serve(settings))
    telemetry.shutdown()


if __name__ == "__main__":
    main()
