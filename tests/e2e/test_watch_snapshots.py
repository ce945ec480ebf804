"""Where a WebSocket's first message comes from: the order the gateway just created, or a read of it.

A gateway keeps each order it created for a few seconds and hands it to the notifier with the subscription
(`WatchManyRequest.known`); the notifier starts from it without reading the order when nothing newer can
exist, and reads it otherwise. The notifier's `dexengine_watch_snapshots_total{source}` counts both; the
oracle for what the client must see is the order's own history over HTTP.

The orders here are limit orders far above the market: they wait (seq 2) until cancelled (seq 3), so what
the notifier has seen of them is under the test's control.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from services.notifier.hub import CLOCK_MARGIN_S
from tests.support.client import SOL, USDC, post_order
from tests.support.mesh import Mesh

WAITING = {
    "tokenIn": SOL,
    "tokenOut": USDC,
    "amountIn": "1",
    "slippage": "0.01",
    "type": "limit",
    "limitPrice": "1000000",  # the market is ~150: never reached
}


def _waiting_order() -> dict[str, Any]:
    expires = (datetime.now(UTC) + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    return {**WAITING, "expiresAt": expires}


async def _snapshots(session: aiohttp.ClientSession, mesh: Mesh) -> dict[str, float]:
    """The notifier's snapshot counts by source, from its /metrics."""
    url = f"http://127.0.0.1:{mesh.env['NOTIFIER_METRICS_PORT']}/metrics"
    async with session.get(url) as resp:
        text = await resp.text()
    counts = {"known": 0.0, "read": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dexengine_watch_snapshots_total":
                counts[sample.labels["source"]] = sample.value
    return counts


async def _cancel(session: aiohttp.ClientSession, mesh: Mesh, order_id: str) -> None:
    async with session.post(f"{mesh.http}/api/orders/{order_id}/cancel") as resp:
        assert resp.status == 200, await resp.text()


async def _history(session: aiohttp.ClientSession, mesh: Mesh, order_id: str) -> list[tuple[str, int]]:
    async with session.get(f"{mesh.http}/api/orders/{order_id}") as resp:
        assert resp.status == 200
        order = await resp.json()
    return [(h["status"], h["seq"]) for h in order["history"]]


async def test_a_websocket_after_the_post_starts_from_the_created_order_and_misses_nothing(mesh: Mesh) -> None:
    # The notifier trusts orders created more than CLOCK_MARGIN_S after its intake began (before it was ready).
    await asyncio.sleep(max(0.0, mesh.ready_at["notifier"] + CLOCK_MARGIN_S + 0.2 - time.time()))
    async with aiohttp.ClientSession() as session:
        before = await _snapshots(session, mesh)
        status, created = await post_order(session, mesh.http, _waiting_order())
        assert status == 201, created
        order_id = created["orderId"]
        async with session.ws_connect(created["websocketUrl"]) as ws:
            first = orjson.loads((await ws.receive(timeout=10)).data)
            middle = await _snapshots(session, mesh)
            await _cancel(session, mesh, order_id)
            rest = [orjson.loads(msg.data) async for msg in ws if msg.type == aiohttp.WSMsgType.TEXT]
            assert ws.close_code == 1000
        history = await _history(session, mesh, order_id)

    assert first["data"]["snapshot"] is True
    assert (first["status"], first["seq"]) == ("waiting", 2)
    assert first["data"]["order"]["limitPrice"] == "1000000"
    assert middle["known"] == before["known"] + 1, (before, middle)
    assert middle["read"] == before["read"], (before, middle)
    # Every event after the snapshot, as the order's history has them.
    assert [(e["status"], e["seq"]) for e in [first, *rest]] == history[1:] == [("waiting", 2), ("cancelled", 3)]


async def test_a_late_websocket_gets_the_current_state_though_the_gateway_kept_the_created_one(
    mesh: Mesh,
) -> None:
    """The gateway still holds the order as created (waiting), but the notifier has seen it cancelled: the
    notifier reads the order, and the client gets the cancelled state, not the one the gateway kept."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{mesh.ws}/ws/orders") as mine:
            await mine.send_json({"subscribe": "mine"})
            assert orjson.loads((await mine.receive(timeout=10)).data) == {"subscribed": "mine"}
            status, created = await post_order(session, mesh.http, _waiting_order())
            assert status == 201, created
            order_id = created["orderId"]
            await _cancel(session, mesh, order_id)

            async def cancelled_seen() -> None:
                while True:
                    event = orjson.loads((await mine.receive()).data)
                    if event.get("orderId") == order_id and event.get("status") == "cancelled":
                        return

            # The same notifier's hub handed the cancellation to the "mine" stream: it has seen seq 3.
            async with asyncio.timeout(10):
                await cancelled_seen()
        before = await _snapshots(session, mesh)
        async with session.ws_connect(created["websocketUrl"]) as ws:
            late = [orjson.loads(msg.data) async for msg in ws if msg.type == aiohttp.WSMsgType.TEXT]
            assert ws.close_code == 1000
        after = await _snapshots(session, mesh)

    assert [(e["status"], e["seq"], e["data"].get("snapshot")) for e in late] == [("cancelled", 3, True)]
    assert after["read"] == before["read"] + 1, (before, after)
    assert after["known"] == before["known"], (before, after)
