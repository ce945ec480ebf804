"""dexctl as a subprocess against the running mesh (AUTH=apikey): keys, submit --watch, quote, cancel, exit codes."""

from __future__ import annotations

import re
from decimal import Decimal

import aiohttp
import orjson

from tests.support import dexctl
from tests.support.mesh import Mesh
from tests.support.scenarios import localnet
from tests.support.secured import INTERNAL_TOKEN


def env_for(mesh: Mesh, api_key: str | None = None) -> dict[str, str]:
    env = {
        "DEXENGINE_URL": mesh.http,
        "DEXENGINE_ORDERS": mesh.grpc_target("orders"),
        "DEXENGINE_NOTIFIER": mesh.grpc_target("notifier"),
        "DEXENGINE_ROUTER": mesh.grpc_target("router"),
        "DEXENGINE_ADMIN_TOKEN": INTERNAL_TOKEN,
    }
    return {**env, "DEXENGINE_API_KEY": api_key} if api_key else env


async def test_submit_watch_to_confirmed_over_http_and_grpc_then_cancel_is_refused(auth_mesh: Mesh) -> None:
    created = await dexctl.run("keys", "create", "cli-e2e-watch", env=env_for(auth_mesh))
    assert created.code == 0, created.stderr
    key = created.lines[-1]
    assert re.fullmatch(r"dex_[A-Za-z0-9_-]{43}", key), "the new key alone on the last line"
    env = env_for(auth_mesh, key)
    order_ids = []
    for transport in ([], ["--grpc"]):
        result = await dexctl.run("submit", "SOL", "USDC", "1", "--slippage", "0.02", "--watch", *transport, env=env)
        assert result.code == 0, (transport, result)
        events = result.json_lines()
        statuses = [e["status"] for e in events]
        # The watch starts from the order's current state (a snapshot), then every later stage.
        flow = ["pending", "routing", "building", "submitted", "confirmed"]
        assert statuses == flow[flow.index(statuses[0]) :], statuses
        assert Decimal(events[-1]["data"]["amountOut"]) > 0
        order_ids.append(events[-1]["orderId"])
    got = await dexctl.run("get", order_ids[0], env=env)
    assert got.code == 0 and orjson.loads(got.stdout)["status"] == "confirmed"
    cancelled = await dexctl.run("cancel", order_ids[0], env=env)
    assert cancelled.code == 2 and "NOT_CANCELLABLE" in cancelled.stderr and "confirmed" in cancelled.stderr
    unauthenticated = await dexctl.run("submit", "SOL", "USDC", "1", env=env_for(auth_mesh))
    assert unauthenticated.code == 2 and "API_KEY_MISSING" in unauthenticated.stderr


async def test_quote_shows_both_venues_and_the_route(auth_mesh: Mesh) -> None:
    result = await dexctl.run("quote", "SOL", "USDC", "300", env=env_for(auth_mesh))
    assert result.code == 0, result
    quotes = orjson.loads(result.stdout)
    assert {q["venue"] for q in quotes["quotes"]} == {"raydium", "meteora"}
    assert quotes["venue"] in ("raydium", "meteora", "split") and quotes["reason"]
    assert sum(Decimal(leg["amountIn"]) for leg in quotes["legs"]) == Decimal(300)
    unknown = await dexctl.run("quote", "SOL", "NOPE", "1", env=env_for(auth_mesh))
    assert unknown.code == 2 and "unknown token" in unknown.stderr


async def test_an_order_that_fails_exits_1(auth_mesh: Mesh) -> None:
    """The market drops 2 % under each sent transaction (localnet scenario): slippage, retries, failed."""
    created = await dexctl.run("keys", "create", "cli-e2e-fail", env=env_for(auth_mesh))
    env = env_for(auth_mesh, created.lines[-1])
    price = Decimal(150)
    async with aiohttp.ClientSession() as session:
        await localnet(session, auth_mesh, "halt")
        try:
            async with dexctl.started("submit", "SOL", "USDC", "1", "--slippage", "0.005", "--watch", env=env) as cli:
                while True:
                    event = orjson.loads(await cli.line(timeout=60))
                    if event["status"] == "submitted":
                        price *= Decimal("0.98")
                        await localnet(session, auth_mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": str(price)})
                        await localnet(session, auth_mesh, "resume")
                    elif event["status"] == "routing" and "retryIn" in event["data"]:
                        await localnet(session, auth_mesh, "halt")
                    elif event["status"] in ("confirmed", "failed"):
                        break
                result = await cli.finish()
        finally:
            await localnet(session, auth_mesh, "resume")
            await localnet(session, auth_mesh, "setPrice", {"mints": ["SOL", "USDC"], "price": "150"})
    assert event["status"] == "failed", event
    assert result.code == 1, result
