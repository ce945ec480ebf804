"""The gateway's doors with AUTH=apikey (in-process orders, notifier, gateway; orders moved by the test).

Keys on /api and both WebSockets, ownership as 404, quotas as 429 with
Retry-After, 415 for a non-JSON body, an amount below one base unit, wss
behind TLS, and the multiplexed socket: ids and "mine", acknowledgements,
error frames, no gap and no duplicate per order.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from dexengine.v1 import orders_pb2
from tests.support.client import SOL, USDC, follow, post_order
from tests.support.secured import ADMIN, Secured
from tests.support.transitions import CHAIN, advance

BODY = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01"}


def auth_header(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def count_orders(secured: Secured) -> int:
    conn = await asyncpg.connect(secured.settings.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM orders"))
    finally:
        await conn.close()


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    body: dict[str, Any] = orjson.loads(msg.data)
    return body


async def test_every_api_and_ws_door_needs_a_valid_key(secured: Secured) -> None:
    key_id, secret = await secured.new_key(f"door-{uuid.uuid4().hex[:6]}")
    async with aiohttp.ClientSession() as session:
        status, created = await post_order(session, secured.http, BODY, auth_header(secret))
        assert status == 201, created
        order_id = created["orderId"]
        doors = [
            ("POST", "/api/orders/execute"),
            ("GET", f"/api/orders/{order_id}"),
            ("GET", "/api/orders"),
            ("POST", f"/api/orders/{order_id}/cancel"),
            ("GET", "/api/tokens"),
        ]
        for headers, reason in (
            ({}, "API_KEY_MISSING"),
            ({"Authorization": f"Basic {secret}"}, "API_KEY_MALFORMED"),
            (auth_header("dex_unknown"), "API_KEY_INVALID"),
        ):
            for method, path in doors:
                async with session.request(
                    method, f"{secured.http}{path}", json=BODY if method == "POST" else None, headers=headers
                ) as resp:
                    body = await resp.json()
                    assert resp.status == 401, (method, path, body)
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                    assert body["error"]["code"] == reason, (method, path, body)
                    assert body["error"]["details"][0]["field"] == "Authorization"
            for path in (f"/ws/orders/{order_id}", "/ws/orders"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(f"{secured.ws}{path}", headers=headers)
                assert info.value.status == 401, (path, headers)
        # A revoked key is refused at once, everywhere.
        await secured.orders.RevokeApiKey(orders_pb2.RevokeApiKeyRequest(key=key_id), metadata=ADMIN, timeout=5)
        status, body = await post_order(session, secured.http, BODY, auth_header(secret))
        assert (status, body["error"]["code"]) == (401, "API_KEY_REVOKED")
        async with session.get(f"{secured.http}/api/orders/{order_id}", headers=auth_header(secret)) as resp:
            assert resp.status == 401
        for path in (f"/ws/orders/{order_id}", "/ws/orders"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(f"{secured.ws}{path}", headers=auth_header(secret))
            assert info.value.status == 401


async def test_another_keys_order_is_404_everywhere(secured: Secured) -> None:
    _, alice = await secured.new_key(f"alice-{uuid.uuid4().hex[:6]}")
    _, bob = await secured.new_key(f"bob-{uuid.uuid4().hex[:6]}")
    async with aiohttp.ClientSession() as session:
        _, created = await post_order(session, secured.http, BODY, auth_header(alice))
        order_id = created["orderId"]
        for method, path in (("GET", f"/api/orders/{order_id}"), ("POST", f"/api/orders/{order_id}/cancel")):
            async with session.request(method, f"{secured.http}{path}", headers=auth_header(bob)) as resp:
                assert resp.status == 404, path
                assert (await resp.json())["error"]["code"] == "ORDER_NOT_FOUND"
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(f"{secured.ws}/ws/orders/{order_id}", headers=auth_header(bob))
        assert info.value.status == 404
        async with session.get(f"{secured.http}/api/orders?limit=200", headers=auth_header(bob)) as resp:
            assert order_id not in {o["orderId"] for o in (await resp.json())["orders"]}
        async with session.ws_connect(f"{secured.ws}/ws/orders", headers=auth_header(bob)) as ws:
            await ws.send_json({"subscribe": [order_id]})
            frame = await receive(ws)
            assert frame["orderId"] == order_id and frame["error"]["code"] == "ORDER_NOT_FOUND"
            assert frame["error"]["details"] == [{"field": "subscribe[0]", "issue": "is not a known order"}]
        # The owner sees it, through a browser's way of presenting the key too.
        async with session.ws_connect(
            f"{secured.ws}/ws/orders/{order_id}", protocols=("dexengine.v1", f"dexengine.bearer.{alice}")
        ) as ws:
            assert ws.protocol == "dexengine.v1"
            assert (await receive(ws))["orderId"] == order_id


async def test_submit_quota_is_429_with_retry_after_and_writes_nothing(secured: Secured) -> None:
    _, secret = await secured.new_key(f"quota-{uuid.uuid4().hex[:6]}", quota_per_min=2)
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            status, _ = await post_order(session, secured.http, BODY, auth_header(secret))
            assert status == 201
        before = await count_orders(secured)
        async with session.post(f"{secured.http}/api/orders/execute", json=BODY, headers=auth_header(secret)) as resp:
            body = await resp.json()
            assert resp.status == 429, body
            assert body["error"]["code"] == "QUOTA_EXCEEDED"
            assert 1 <= int(resp.headers["Retry-After"]) <= 31
        assert await count_orders(secured) == before


async def test_non_json_body_is_415_and_tiny_amount_is_400_and_nothing_is_written(secured: Secured) -> None:
    _, secret = await secured.new_key(f"doors-{uuid.uuid4().hex[:6]}")
    before = await count_orders(secured)
    async with aiohttp.ClientSession() as session:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {**auth_header(secret), **({"Content-Type": content_type} if content_type else {})}
            async with session.post(
                f"{secured.http}/api/orders/execute", data=orjson.dumps(BODY), headers=headers
            ) as resp:
                body = await resp.json()
                assert resp.status == 415, (content_type, body)
                assert body["error"]["details"] == [{"field": "Content-Type", "issue": "must be application/json"}]
        for amount, symbol in (("0.0000000001", "SOL"), ("0.0000009", "USDC")):
            token_in = SOL if symbol == "SOL" else USDC
            token_out = USDC if symbol == "SOL" else SOL
            status, body = await post_order(
                session,
                secured.http,
                {"tokenIn": token_in, "tokenOut": token_out, "amountIn": amount, "slippage": "0.01"},
                auth_header(secret),
            )
            assert status == 400, body
            assert body["error"]["code"] == "AMOUNT_TOO_SMALL"
            assert body["error"]["details"][0]["field"] == "amountIn"
            assert symbol in body["error"]["details"][0]["issue"]
        status, _ = await post_order(
            session,
            secured.http,
            {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "0.000000001", "slippage": "0.01"},
            auth_header(secret),
        )
        assert status == 201, "exactly one base unit is enough"
        async with session.get(f"{secured.http}/api/orders?status=", headers=auth_header(secret)) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["details"][0]["field"] == "status"
    assert await count_orders(secured) == before + 1


async def test_websocket_url_is_wss_behind_tls(secured: Secured) -> None:
    _, secret = await secured.new_key(f"tls-{uuid.uuid4().hex[:6]}")
    async with aiohttp.ClientSession() as session:
        _, plain = await post_order(session, secured.http, BODY, auth_header(secret))
        _, behind = await post_order(
            session,
            secured.http,
            BODY,
            {**auth_header(secret), "X-Forwarded-Proto": "https", "Host": "api.example.com"},
        )
    assert plain["websocketUrl"].startswith("ws://127.0.0.1:")
    assert behind["websocketUrl"] == f"wss://api.example.com/ws/orders/{behind['orderId']}"


async def test_multiplexed_socket_follows_ids_and_mine_without_gaps_or_duplicates(secured: Secured) -> None:
    _, alice = await secured.new_key(f"alice-{uuid.uuid4().hex[:6]}")
    _, bob = await secured.new_key(f"bob-{uuid.uuid4().hex[:6]}")
    async with aiohttp.ClientSession() as session:
        early = [(await post_order(session, secured.http, BODY, auth_header(alice)))[1]["orderId"] for _ in range(2)]
        async with session.ws_connect(f"{secured.ws}/ws/orders", headers=auth_header(alice)) as ws:
            # Bad frames are answered, and change nothing.
            for bad_frame, field in (
                ("not json", "message"),
                ('{"subscribe": ["nope"]}', "subscribe[0]"),
                ('{"subscribe": []}', "subscribe"),
                ('{"watch": "mine"}', "watch"),
            ):
                await ws.send_str(bad_frame)
                answer = await receive(ws)
                assert answer["error"]["code"] == "VALIDATION_FAILED"
                assert answer["error"]["details"][0]["field"] == field
            await ws.send_json({"subscribe": early})
            assert (await receive(ws)) == {"subscribed": early}
            await ws.send_json({"subscribe": "mine"})
            late = []
            events: dict[str, list[dict[str, Any]]] = {}
            acked = False
            async with asyncio.timeout(20):
                while not acked:
                    frame = await receive(ws)
                    if frame == {"subscribed": "mine"}:
                        acked = True
                    else:
                        events.setdefault(frame["orderId"], []).append(frame)
                # Created after the acknowledgement: in the stream. Bob's: never.
                late = [(await post_order(session, secured.http, BODY, auth_header(alice)))[1]["orderId"]]
                bobs = (await post_order(session, secured.http, BODY, auth_header(bob)))[1]["orderId"]
                await asyncio.gather(*(advance(secured.service, oid, 0.01) for oid in [*early, *late, bobs]))
                wanted = {*early, *late}
                while not all(events.get(oid) and events[oid][-1]["status"] == "confirmed" for oid in wanted):
                    frame = await receive(ws)
                    assert "error" not in frame, frame
                    events.setdefault(frame["orderId"], []).append(frame)
            assert set(events) == wanted, "exactly the caller's orders"
            for oid, received in events.items():
                seqs = [e["seq"] for e in received]
                assert seqs == list(range(seqs[0], 6)), (oid, seqs)
                assert [e["status"] for e in received] == CHAIN[seqs[0] - 1 :]
            assert events[late[0]][0]["seq"] == 1 and not events[late[0]][0]["data"].get("snapshot")
            assert events[early[0]][0]["data"]["snapshot"] is True
            await ws.send_json({"unsubscribe": "mine"})
            assert (await receive(ws)) == {"unsubscribed": "mine"}
            await ws.send_json({"unsubscribe": early})
            assert (await receive(ws)) == {"unsubscribed": early}
            # Unsubscribed: a new order of the key no longer arrives.
            quiet = (await post_order(session, secured.http, BODY, auth_header(alice)))[1]["orderId"]
            await advance(secured.service, quiet, 0)
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.5)


async def test_per_order_socket_streams_to_terminal_for_its_owner(secured: Secured) -> None:
    _, secret = await secured.new_key(f"owner-{uuid.uuid4().hex[:6]}")
    async with aiohttp.ClientSession(headers=auth_header(secret)) as session:
        _, created = await post_order(session, secured.http, BODY)
        mover = asyncio.create_task(advance(secured.service, created["orderId"], 0.02))
        events = await follow(session, f"{secured.ws}/ws/orders/{created['orderId']}")
        await mover
    assert events[-1]["status"] == "confirmed"


async def test_the_page_is_served_with_its_assets(secured: Secured) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{secured.http}/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
            html = await resp.text()
        assert '<script src="/static/app.js"' in html and "/static/style.css" in html
        for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
            async with session.get(f"{secured.http}{asset}") as resp:
                assert resp.status == 200 and kind in resp.content_type
        async with session.get(f"{secured.http}/ws/orders", headers=auth_header("dex_x")) as resp:
            assert resp.status == 426, "a plain GET on a WebSocket path"


async def test_absurd_json_numbers_are_400_naming_the_fields_never_500(secured: Secured) -> None:
    _, secret = await secured.new_key(f"huge-{uuid.uuid4().hex[:6]}")
    huge = "1.9311950608095174e+73"  # a JSON number far past any context's precision
    body = f'{{"tokenIn": "{SOL}", "tokenOut": "{USDC}", "amountIn": {huge}, "slippage": 1.1271864952686597e+28}}'
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{secured.http}/api/orders/execute",
            data=body,
            headers={**auth_header(secret), "Content-Type": "application/json"},
        ) as resp,
    ):
        answer = await resp.json()
    assert resp.status == 400, answer
    assert {d["field"] for d in answer["error"]["details"]} == {"amountIn", "slippage"}
