"""The engine's connection to a Solana cluster: JSON-RPC and one PubSub stream.

``ClusterStream`` keeps one PubSub WebSocket (solana-py's ``SolanaWsClient``)
open for a whole process and hands each notification to the handler of its
subscription. When the socket drops it reconnects with backoff and calls every
``on_connect`` callback again, so owners resubscribe and catch up from current
state (notifications sent while it was down are gone, as on a real cluster).

A handler is only ever told what its own subscription says: it is registered
only if the socket that confirmed the subscription is still the stream's one
(a subscription confirmed by a socket that dropped meanwhile is refused, so a
reused subscription id on the next socket can never reach it), and
unsubscribing removes only the handler that subscription registered. A
signature that already landed is told at once, often in the same read as the
subscription's confirmation, before its handler exists: such a notification
is held (a bounded number, on this socket only) and handed over when the
handler registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.websocket_api import OverflowPolicy, SolanaWsClient, Subscription
from solders.pubkey import Pubkey
from solders.rpc.responses import SignatureNotification
from solders.signature import Signature

from services.common.rpc_transport import BATCH_MAX, RpcClient

log = logging.getLogger(__name__)

Handler = Callable[[Any], None]
ConnectHook = Callable[[], Awaitable[None]]
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
RPC_TIMEOUT_S = 10.0
EARLY_NOTIFICATIONS = 1024  # signature notifications held for a handler about to register


def rpc_client(url: str, batch_max: int = BATCH_MAX) -> AsyncClient:
    """solana-py's client for the cluster's JSON-RPC (its calls made by aiohttp, at most ``batch_max`` in one
    batch request: ``rpc_transport``)."""
    return RpcClient(url, commitment=Confirmed, timeout=RPC_TIMEOUT_S, batch_max=batch_max)


class ClusterStream:
    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.client: SolanaWsClient | None = None
        self.handlers: dict[int, Handler] = {}
        self.owners: dict[int, Subscription] = {}  # the subscription each handler was registered for
        self.early: OrderedDict[int, Any] = OrderedDict()  # signature notifications that came before their handler
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
        self.owners.clear()
        self.early.clear()
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
                    self._dispatch(note)
                log.warning("cluster stream closed by the server")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
                log.warning("cluster stream down: %s", exc)
            await self._drop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _dispatch(self, note: Any) -> None:
        handler = self.handlers.get(note.subscription)
        if handler is not None:
            handler(note.result)
        elif isinstance(note, SignatureNotification):  # its handler may be about to register
            self.early[note.subscription] = note.result
            while len(self.early) > EARLY_NOTIFICATIONS:
                self.early.popitem(last=False)

    def _client(self) -> SolanaWsClient:
        if self.client is None:
            raise ConnectionError("cluster stream is not connected")
        return self.client

    def _register(self, client: SolanaWsClient, sub: Subscription, handler: Handler) -> Subscription:
        """Register ``handler`` for ``sub``, confirmed by ``client``; refused if the stream moved to another socket."""
        if self.client is not client:
            raise ConnectionError("cluster stream reconnected while subscribing")
        self.handlers[sub.subscription_id] = handler
        self.owners[sub.subscription_id] = sub
        early = self.early.pop(sub.subscription_id, None)
        if early is not None:
            handler(early)
        return sub

    async def program(self, program_id: Pubkey, handler: Handler) -> Subscription:
        client = self._client()
        sub = await client.program_subscribe(program_id=program_id, commitment=Confirmed, encoding="base64")
        return self._register(client, sub, handler)

    async def account(self, pubkey: Pubkey, handler: Handler) -> Subscription:
        client = self._client()
        sub = await client.account_subscribe(pubkey=pubkey, commitment=Confirmed, encoding="base64")
        return self._register(client, sub, handler)

    async def slot(self, handler: Handler) -> Subscription:
        """slotSubscribe: told as each slot begins (what a sniper waits on before a pool's open time)."""
        client = self._client()
        sub = await client.slot_subscribe()
        return self._register(client, sub, handler)

    async def signature(self, signature: Signature, handler: Handler) -> Subscription:
        """signatureSubscribe: ``handler`` gets the one notification (``.value.err``), even if it came first."""
        client = self._client()
        sub = await client.signature_subscribe(signature=signature, commitment=Confirmed)
        return self._register(client, sub, handler)

    async def unsubscribe(self, sub: Subscription) -> None:
        if self.owners.get(sub.subscription_id) is not sub:
            return  # its socket is gone (and a new one may use the id for another subscription)
        del self.owners[sub.subscription_id]
        self.handlers.pop(sub.subscription_id, None)
        client = self.client
        if client is not None:
            with contextlib.suppress(Exception):  # a signature's subscription ends with its notification
                await client.unsubscribe(sub)
