"""Run the whole system: ``python -m services.launcher`` (what ``make run`` does).

Checks that PostgreSQL, Redis and RabbitMQ answer (naming what is missing and
how to start it), makes the engine's wallet keypair if there is none yet
(``SOLANA_KEYPAIR``), starts the localnet (the simulated Solana cluster, which
funds that wallet at genesis) and then the five services as separate
processes, with their output interleaved and prefixed, and stops them all on
Ctrl-C / SIGTERM. ``--check`` only checks the infrastructure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from services.common import config

SERVICES = ("orders", "router", "executor", "notifier", "gateway")
LOCALNET = "localnet"
COLORS = {"localnet": 31, "orders": 33, "router": 35, "executor": 36, "notifier": 32, "gateway": 34}
MODULES = {LOCALNET: "localnet", **{name: f"services.{name}" for name in SERVICES}}
HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    "RabbitMQ": "rabbitmq-server -detached",
}


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def missing_infrastructure(settings: config.Settings) -> list[str]:
    checks = {
        "PostgreSQL": (settings.database_url, 5432),
        "Redis": (settings.redis_url, 6379),
        "RabbitMQ": (settings.amqp_url, 5672),
    }
    return [name for name, (url, port) in checks.items() if not _reachable(url, port)]


async def _pump(name: str, stream: asyncio.StreamReader, colour: bool) -> None:
    prefix = f"\033[{COLORS[name]}m{name:>8} |\033[0m " if colour else f"{name:>8} | "
    while line := await stream.readline():
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


def ensure_wallet(path: str) -> str:
    """The engine's wallet keypair file, made on first run; returns its public key."""
    from solders.keypair import Keypair

    from services.executor.transactions import load_keypair, write_keypair

    if not os.path.exists(path):
        write_keypair(path, Keypair())
    return str(load_keypair(path).pubkey())


def localnet_env(env: Mapping[str, str], wallet: str) -> dict[str, str]:
    """The localnet funds the engine's wallet at genesis (LOCALNET_FUND)."""
    out = dict(env)
    funded = [k for k in out.get("LOCALNET_FUND", "").split(",") if k]
    out["LOCALNET_FUND"] = ",".join(dict.fromkeys([*funded, wallet]))
    return out


async def wait_rpc(url: str, timeout: float = 60) -> None:
    """Until the cluster's JSON-RPC answers getHealth."""
    import aiohttp

    deadline = asyncio.get_running_loop().time() + timeout
    body = {"jsonrpc": "2.0", "id": 1, "method": "getHealth"}
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.post(url, json=body) as resp:
                    if (await resp.json()).get("result") == "ok":
                        return
            except (aiohttp.ClientError, ValueError):
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the cluster at {url} did not answer getHealth in {timeout:.0f} s")
            await asyncio.sleep(0.2)


async def start_service(name: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        MODULES[name],
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def run_all(env: Mapping[str, str], settings: config.Settings) -> int:
    colour = sys.stdout.isatty()
    wallet = ensure_wallet(settings.solana_keypair)
    procs = {LOCALNET: await start_service(LOCALNET, localnet_env(env, wallet))}
    pumps = [asyncio.create_task(_pump(LOCALNET, procs[LOCALNET].stdout, colour))]  # type: ignore[arg-type]
    await wait_rpc(settings.solana_rpc_url)
    for name in SERVICES:
        procs[name] = await start_service(name, env)
    pumps += [asyncio.create_task(_pump(n, p.stdout, colour)) for n, p in procs.items() if p.stdout and n != LOCALNET]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exits = [asyncio.create_task(p.wait()) for p in procs.values()]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *exits], return_when=asyncio.FIRST_COMPLETED)
    crashed = [name for name, p in procs.items() if p.returncode is not None]
    if crashed:
        sys.stderr.write(f"launcher: {', '.join(crashed)} exited; stopping the others\n")
    for group in (SERVICES, (LOCALNET,)):  # the engine first, the cluster last
        for name in group:
            if name in procs and procs[name].returncode is None:
                procs[name].send_signal(signal.SIGTERM)
        await asyncio.gather(*(procs[name].wait() for name in group if name in procs))
    await asyncio.gather(*exits)
    await asyncio.gather(*pumps, return_exceptions=True)
    return 1 if crashed and not stop.is_set() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check PostgreSQL, Redis and RabbitMQ")
    args = parser.parse_args()
    settings = config.load()
    missing = missing_infrastructure(settings)
    if missing:
        for name in missing:
            sys.stderr.write(f"launcher: {name} is not reachable. Start it with:\n    {HOW_TO_START[name]}\n")
        raise SystemExit(2)
    if args.check:
        print("PostgreSQL, Redis and RabbitMQ answer.")  # noqa: T201 - CLI output
        return
    raise SystemExit(asyncio.run(run_all(os.environ, settings)))


if __name__ == "__main__":
    main()
