"""``python -m localnet``: the simulated Solana cluster (JSON-RPC :8899, PubSub :8900)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import asyncpg
from aiohttp import web
from websockets.asyncio.server import serve

from localnet import logs
from localnet.config import ConfigError, Settings
from localnet.node import Node
from localnet.pubsub import PubSub
from localnet.rpc import Rpc
from localnet.scenario import Scenario

log = logging.getLogger("localnet")


async def release(conn: asyncpg.Connection) -> None:
    """A pooled connection goes back without asyncpg's default reset, one more round trip after every statement
    (``RESET ALL``, ``UNLISTEN *``…): nothing here changes a session's state. An open transaction is rolled back."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def connect(settings: Settings, attempts: int = 60) -> asyncpg.Pool:
    """PostgreSQL may still be starting (compose, Kubernetes): retry for a minute."""
    for attempt in range(1, attempts + 1):
        try:
            return await asyncpg.create_pool(settings.database_url, min_size=2, max_size=8, reset=release)
        except (OSError, asyncpg.PostgresError) as exc:
            if attempt == attempts:
                raise
            log.warning("PostgreSQL not reachable yet", extra={"attempt": attempt, "error": str(exc)})
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


async def run(settings: Settings) -> None:
    pool = await connect(settings)
    node = Node(settings, pool)
    await node.start()
    rpc = Rpc(node)
    Scenario(node, rpc)
    pubsub = PubSub(node)
    runner = web.AppRunner(rpc.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.rpc_port, reuse_address=True, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        pubsub.handler, settings.host, settings.ws_port, max_size=2**20, ping_interval=20, ping_timeout=60
    ):
        log.info(
            "listening",
            extra={
                "rpc": f"http://{settings.host}:{settings.rpc_port}",
                "ws": f"ws://{settings.host}:{settings.ws_port}",
                "landing_ms": list(settings.landing_ms),
                "market_drift": settings.market_drift,
            },
        )
        await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    await node.stop()
    await pool.close()


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"localnet: {exc}\n")
        sys.exit(2)
    logs.setup(settings.log_level)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
