"""``make bench-order-types``: the limit/sniper trigger with 100,000 armed limit orders.

    python -m bench.order_types [--armed N] [--steps N] [--no-write]

Starts the localnet, orders, router, notifier and gateway as real processes
(``bench.mesh``'s launcher, with infrastructure of its own so that it can run
beside ``make bench``: database ``dexengine_bench_ordertypes`` afresh, Redis
db 3, AMQP prefix ``benchot.``), with the market still (``MARKET_DRIFT=false``) and no executor, so
fired orders stay in ``routing`` and do not trade the pools: every price is
the one the benchmark set. Then:

1. the router's RSS with nothing armed;
2. N waiting limit orders across the seeded pairs written straight into
   PostgreSQL (the rows CreateOrder writes for an armed order), the router
   restarted: its catch-up (``ListOrders(status=waiting)``, paged) arms them —
   catch-up time and RSS per 10,000 armed;
3. SOL/USDC moved up in steps (``localnet_setPrice``): each step fires the
   orders whose limit it crosses. Trigger latency per fired order: the
   ``routing`` event's commit time minus the ``setPrice`` request (the pool
   update), and minus the router's receipt of the update (``observedAtMs``);
4. SOL/USDC moved back down in as many steps, firing nothing: the router's
   CPU per pool update (process CPU, and the trigger's own evaluation CPU from
   its stats line) while 100,000 orders are armed.

Writes bench/results/order-types.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from bench import mesh as meshmod
from bench.procstat import cpu_seconds, rss_bytes
from services.common import amqp
from services.launcher import LOCALNET
from tests.support.client import SOL, USDC, USDT
from tests.support.scenarios import localnet

RESULTS = Path(__file__).parent / "results"
DATABASE = "dexengine_bench_ordertypes"
ENV = {
    "MARKET_DRIFT": "false",
    "LOCALNET_LANDING_MS": "0",
    "QUOTE_LATENCY_MS": "0",
    "RATE_LIMIT_PER_MIN": "0",
    "MAX_LIVE_ORDERS": "1000000",
    "TRIGGER_RESYNC_S": "3600",
}
# (token_in, token_out, amount, lowest limit, highest limit): SOL/USDC sell limits from just above the
# market upwards (the steps cross some of them); the rest far from the market (armed weight only).
BOOKS = [
    (SOL, USDC, "0.5", Decimal("151"), Decimal("400")),
    (USDC, SOL, "100", Decimal("0.01"), Decimal("0.02")),
    (SOL, USDT, "1", Decimal("200"), Decimal("400")),
    (USDC, USDT, "250", Decimal("1.2"), Decimal("2")),
]


async def purge_amqp(env: dict[str, str]) -> None:
    """Delete this benchmark's queues: jobs of fired orders pile up in them (no executor runs)."""
    names = amqp.Names(env["AMQP_PREFIX"])
    connection = await aio_pika.connect(env["AMQP_URL"])
    try:
        for queue in names.queues((1000, 2000, 4000)):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(queue)
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.close()
    finally:
        await connection.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def arm_by_sql(database_url: str, count: int) -> dict[str, int]:
    """``count`` waiting limit orders, split evenly across BOOKS, limits uniform in each book's range."""
    rng = random.Random(42)
    now = datetime.now(UTC)
    expires = now + timedelta(days=1)
    rows = []
    per_book: dict[str, int] = {}
    for i in range(count):
        token_in, token_out, amount, lo, hi = BOOKS[i % len(BOOKS)]
        price = (lo + (hi - lo) * Decimal(rng.random())).quantize(Decimal("0.0001"))
        created = now + timedelta(microseconds=i)
        rows.append(
            (
                uuid.uuid4(),
                "limit",
                "waiting",
                2,
                token_in,
                token_out,
                Decimal(amount),
                Decimal("0.01"),
                price,
                expires,
                created,
                created,
            )
        )
        per_book[f"{token_in[:4]}->{token_out[:4]}"] = per_book.get(f"{token_in[:4]}->{token_out[:4]}", 0) + 1
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            "orders",
            records=rows,
            columns=[
                "id",
                "type",
                "status",
                "seq",
                "token_in",
                "token_out",
                "amount_in",
                "slippage",
                "limit_price",
                "expires_at",
                "created_at",
                "updated_at",
            ],
        )
    finally:
        await conn.close()
    return per_book


async def wait_log(path: Path, needle: str, after: int, timeout: float) -> dict[str, Any]:
    """The first JSON log line after byte ``after`` whose msg is ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with path.open("rb") as f:
            f.seek(after)
            for line in f.read().decode(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("msg") == needle:
                    return dict(record)
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no '{needle}' in {path} after {timeout}s")


def last_stats(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in path.read_text(errors="replace").splitlines():
        if '"trigger stats"' in line:
            found = json.loads(line)
    return found


async def routing_since(conn: asyncpg.Connection, since: datetime) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT order_id, created_at, (data->'triggered'->>'observedAtMs')::bigint AS observed_ms
               FROM order_events WHERE status = 'routing' AND created_at >= $1""",
            since,
        )
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-order-types-"))
    env = meshmod.bench_env(ENV, "INFO", log_dir)
    admin = meshmod.PG_ADMIN_URL
    env.update(
        {
            "DATABASE_URL": admin.rsplit("/", 1)[0] + f"/{DATABASE}",
            "REDIS_URL": meshmod.REDIS_URL.rsplit("/", 1)[0] + "/3",
            "AMQP_PREFIX": "benchot.",
        }
    )
    env["LOCALNET_DATABASE_URL"] = env["DATABASE_URL"]
    await purge_amqp(env)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    mesh = meshmod.BenchMesh(env, log_dir)
    figures: dict[str, Any] = {"armed": args.armed, "logs": str(log_dir)}
    try:
        await mesh.start_one(LOCALNET)
        await mesh.wait_ready(LOCALNET, timeout=60)
        for name in ("orders", "router", "notifier", "gateway"):
            await mesh.start_one(name)
        await mesh.wait_ready("orders", "router", "notifier", "gateway", timeout=60)
        router_log = log_dir / "router.log"
        await wait_log(router_log, "trigger caught up", 0, 30)
        await asyncio.sleep(2)
        rss_empty = rss_bytes(mesh.procs["router"].pid) or 0

        await mesh.stop_one("router")
        started = time.monotonic()
        figures["books"] = await arm_by_sql(env["DATABASE_URL"], args.armed)
        figures["insert_s"] = round(time.monotonic() - started, 1)
        offset = router_log.stat().st_size
        started = time.monotonic()
        await mesh.start_one("router")
        caught = await wait_log(router_log, "trigger caught up", offset, 600)
        figures["catch_up_s"] = round(time.monotonic() - started, 1)
        assert caught["armed"] == args.armed, caught
        await asyncio.sleep(3)
        pid = mesh.procs["router"].pid
        rss_full = rss_bytes(pid) or 0
        figures["router_rss_empty_mib"] = round(rss_empty / 2**20, 1)
        figures["router_rss_armed_mib"] = round(rss_full / 2**20, 1)
        figures["rss_per_10k_mib"] = round((rss_full - rss_empty) / 2**20 / (args.armed / 10_000), 2)

        conn = await asyncpg.connect(env["DATABASE_URL"])
        latencies_update: list[float] = []
        latencies_router: list[float] = []
        fired_per_step: list[int] = []
        async with aiohttp.ClientSession() as session:
            price = Decimal(150)
            for _ in range(args.steps):  # up: each step crosses some limits
                price += Decimal("0.5")
                since = datetime.now(UTC)
                sent = time.time()
                await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": str(price)})
                await asyncio.sleep(1.5)
                rows = await routing_since(conn, since)
                fired_per_step.append(len(rows))
                for row in rows:
                    at = row["created_at"].timestamp()
                    latencies_update.append((at - sent) * 1000)
                    latencies_router.append(at * 1000 - row["observed_ms"])
            stats_before = last_stats(router_log)
            await asyncio.sleep(5.5)  # the stats line after the up moves
            stats_before = last_stats(router_log)
            cpu_before = cpu_seconds(pid) or 0.0
            down_since = datetime.now(UTC)
            for _ in range(args.steps):  # down: nothing fires
                price -= Decimal("0.5")
                await localnet(session, mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": str(price)})
            await asyncio.sleep(1.0)
            cpu_after = cpu_seconds(pid) or 0.0
            await asyncio.sleep(5.5)
            stats_after = last_stats(router_log)
            assert not await routing_since(conn, down_since), "a down move fired a sell limit"
        await conn.close()
        updates = int(stats_after.get("updates", 0)) - int(stats_before.get("updates", 0))
        eval_ms = float(stats_after.get("evalCpuMs", 0)) - float(stats_before.get("evalCpuMs", 0))
        figures.update(
            {
                "steps": args.steps,
                "fired": len(latencies_update),
                "fired_per_step": fired_per_step,
                "latency_from_update_ms": {
                    "p50": round(pct(latencies_update, 50), 1),
                    "p99": round(pct(latencies_update, 99), 1),
                    "max": round(max(latencies_update), 1),
                    "mean": round(statistics.fmean(latencies_update), 1),
                }
                if latencies_update
                else {},
                "latency_from_router_receipt_ms": {
                    "p50": round(pct(latencies_router, 50), 1),
                    "p99": round(pct(latencies_router, 99), 1),
                }
                if latencies_router
                else {},
                "pool_updates_down": updates,
                "router_cpu_per_update_ms": round((cpu_after - cpu_before) * 1000 / updates, 3) if updates else None,
                "trigger_eval_cpu_per_update_ms": round(eval_ms / updates, 4) if updates else None,
                "trigger_stats": stats_after,
            }
        )
    finally:
        await mesh.stop()
        await purge_amqp(env)
    return figures


def markdown(f: dict[str, Any]) -> str:
    up, rr = f.get("latency_from_update_ms", {}), f.get("latency_from_router_receipt_ms", {})
    target = "met" if up and up["p99"] <= 400 else "NOT met"
    return "\n".join(
        [
            "# Order types: the limit trigger with armed orders",
            "",
            f"`python -m bench.order_types` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC): {f['armed']:,} waiting limit "
            "orders across the seeded pairs, market still, no executor (fired orders stay in `routing`).",
            "",
            "| figure | value |",
            "|---|---|",
            f"| armed orders | {f['armed']:,} ({', '.join(f'{k} {v:,}' for k, v in f['books'].items())}) |",
            f"| router catch-up (ListOrders waiting, paged) | {f['catch_up_s']} s |",
            f"| router RSS, nothing armed → all armed | {f['router_rss_empty_mib']} → "
            f"{f['router_rss_armed_mib']} MiB |",
            f"| **RSS per 10,000 armed** | **{f['rss_per_10k_mib']} MiB** |",
            f"| SOL/USDC steps up (+0.5 each) | {f['steps']}, fired per step {f['fired_per_step']} |",
            f"| **trigger latency, setPrice → routing event** | **p50 {up.get('p50')} ms, p99 {up.get('p99')} ms** "
            f"(max {up.get('max')}; target p99 ≤ 400 ms: {target}) |",
            f"| trigger latency, router receipt → routing event | p50 {rr.get('p50')} ms, p99 {rr.get('p99')} ms |",
            f"| pool account updates during {f['steps']} steps down (nothing fires) | {f['pool_updates_down']} |",
            f"| **router CPU per pool update** (process) | **{f['router_cpu_per_update_ms']} ms** |",
            f"| trigger's own evaluation CPU per pool update | {f['trigger_eval_cpu_per_update_ms']} ms |",
            "",
        ]
    )


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.order_types", description=__doc__.split("\n\n")[0])
    parser.add_argument("--armed", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    figures = meshmod.run_stoppable(lambda: main(args))
    text = markdown(figures)
    sys.stdout.write(text + "\n" + json.dumps(figures, indent=1, default=str) + "\n")
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "order-types.md").write_text(text)
        (RESULTS / "order-types.json").write_text(json.dumps(figures, indent=1, default=str) + "\n")


if __name__ == "__main__":
    cli()
