"""The engine's connection to a Solana cluster: JSON-RPC and one PubSub stream.

``ClusterStream`` keeps one PubSub WebSocket (solana-py's ``SolanaWsClient``)
open for a whole process and hands each notification to the handler of its
subscription. When the socket drops it reconnects with backoff and calls every
``on_connect`` callback again, so owners resubscribe and catch up from current
state (notifications sent while it was down are gone, as on a real cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.websocket_api import OverflowPolicy, SolanaWsClient, Subscription
from solders.pubkey import Pubkey
from solders.signature import Signature

log = logging.getLogger(__name__)

Handler = Callable[[Any], None]
ConnectHook = Callable[[], Awaitable[None]]
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
RPC_TIMEOUT_S = 10.0


def rpc_client(url: str) -> AsyncClient:
    return AsyncClient(url, commitment=Confirmed, timeout=RPC_TIMEOUT_S)


class ClusterStream:
    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.client: SolanaWsClient | None = None
        self.handlers: dict[int, Handler] = {}
        self.hooks: list[ConnectHook] = []
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def on_connect(self, hook: ConnectHook) -> None:
        self.hooks.append(hook)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="cluster-stream")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self._drop()

    async def _drop(self) -> None:
        self.connected.clear()
        self.handlers.clear()
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            try:
                self.client = await SolanaWsClient(self.ws_url, overflow=OverflowPolicy.DROP_OLDEST).connect()
                for hook in self.hooks:
                    await hook()
                self.connected.set()
                delay = RECONNECT_MIN_S
                log.info("cluster stream connected", extra={"url": self.ws_url})
                async for note in self.client:
                    handler = self.handlers.get(note.subscription)
                    if handler is not None:
                        handler(note.result)
                log.warning("cluster stream closed by the server")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
                log.warning("cluster stream down: %s", exc)
            await self._drop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _client(self) -> SolanaWsClient:
        if self.client is None:
            raise ConnectionError("cluster stream is not connected")
        return self.client

    async def program(self, program_id: Pubkey, handler: Handler) -> Subscription:
        sub = await self._client().program_subscribe(program_id=program_id, commitment=Confirmed, encoding="base64")
        self.handlers[sub.subscription_id] = handler
        return sub

    async def account(self, pubkey: Pubkey, handler: Handler) -> Subscription:
        sub = await self._client().account_subscribe(pubkey=pubkey, commitment=Confirmed, encoding="base64")
        self.handlers[sub.subscription_id] = handler
        return sub

    async def slot(self, handler: Handler) -> Subscription:
        """slotSubscribe: told as each slot begins (what a sniper waits on before a pool's open time)."""
        sub = await self._client().slot_subscribe()
        self.handlers[sub.subscription_id] = handler
        return sub

    async def signature(self, signature: Signature, handler: Handler) -> Subscription:
        sub = await self._client().signature_subscribe(signature=signature, commitment=Confirmed)
        self.handlers[sub.subscription_id] = handler
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        self.handlers.pop(sub.subscription_id, None)
        client = self.client
        if client is not None:
            with contextlib.suppress(Exception):
                await client.unsubscribe(sub)
