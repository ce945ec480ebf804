"""A number has one spelling everywhere: ``"amountIn": 1e1`` is "10" in every view of the order."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aio_pika.abc
import aiohttp
import asyncpg
import orjson

from services.common import amqp
from tests.support.mesh import Mesh

BODY = (
    b'{"tokenIn": "So11111111111111111111111111111111111111112",'
    b' "tokenOut": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "amountIn": 1e1, "slippage": 1E-2}'
)


async def test_an_exponent_is_stored_and_shown_as_a_plain_decimal(mesh: Mesh) -> None:
    # What the outbox published: a queue of our own on the mesh's events exchange, bound before the order exists.
    names = amqp.Names(mesh.env["AMQP_PREFIX"])
    broker = await aio_pika.connect(mesh.env["AMQP_URL"])
    channel = await broker.channel()
    published = await channel.declare_queue("", exclusive=True)
    await published.bind(names.events_exchange)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{mesh.http}/api/orders/execute", data=BODY, headers={"Content-Type": "application/json"}
        ) as resp:
            created = await resp.json()
            assert resp.status == 201, created
        async with session.ws_connect(created["websocketUrl"]) as ws:
            snapshot = orjson.loads((await ws.receive()).data)
        async with session.get(f"{mesh.http}/api/orders/{created['orderId']}") as resp:
            order = await resp.json()
    assert order["amountIn"] == "10" and order["slippage"] == "0.01"
    assert order["history"][0]["data"]["amountIn"] == "10"
    assert snapshot["orderId"] == created["orderId"]
    assert all(v != "1E+1" for v in _strings(snapshot))
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    try:
        row = await conn.fetchrow("SELECT amount_in::text AS a FROM orders WHERE id = $1::uuid", created["orderId"])
        event = await conn.fetchval(
            "SELECT data::text FROM order_events WHERE order_id = $1::uuid AND seq = 1", created["orderId"]
        )
    finally:
        await conn.close()
    assert row["a"] == "10"
    assert orjson.loads(event)["amountIn"] == "10"
    try:
        pending = await _published_event(published, created["orderId"], seq=1)
    finally:
        await broker.close()
    assert pending["data"] == order["history"][0]["data"], "the outbox carries the event the history shows"
    assert pending["data"]["amountIn"] == "10"


async def _published_event(queue: aio_pika.abc.AbstractQueue, order_id: str, seq: int) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            for event in amqp.events_of(message.body):
                if event["orderId"] == order_id and event["seq"] == seq:
                    return dict(event)


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []
