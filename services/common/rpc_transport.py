"""solana-py's ``AsyncClient`` with its HTTP calls made by aiohttp.

The client is solana-py's own: its methods build the JSON-RPC bodies with
solders and parse every answer with solders, and RPC errors raise its
``RPCException``. Only the transport differs. solana-py posts through httpx2
(httpcore, anyio, h11), which cost 0.8-1.0 ms of client CPU per call on the
development VM; the same call through an aiohttp session costs about 0.3 ms
(measured in process against the localnet, 1,000 ``getLatestBlockhash`` calls
each). The executor makes three calls per order, so this is about 1.8 ms of
CPU per order.

Failures are solana-py's too: a transport error, a timeout or an HTTP error
status raises ``SolanaRpcException``, as its own provider does.

Calls made in the same turn of the event loop (several orders' reads and
sends, under load) go out as one JSON-RPC batch: one HTTP request whose
answer is an array, each answer handed to its own caller as the single answer
solana-py parses. A call alone goes out as a single request. An RPC error is
its own call's; a transport failure is every call's of the batch. At most
``SOLANA_RPC_BATCH_MAX`` calls share a batch (1: none do); a node that
refuses a batch as a whole (an HTTP 4xx, or one error object where the
answers should be: providers that cap or refuse batches) serves nothing of
it, so its calls are sent again one by one, and no batch after that.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.async_http_provider import AsyncHTTPProvider
from solana.rpc.commitment import Commitment, Confirmed
from solana.rpc.jsonrpc import JsonRpcRequestSerializer
from solana.rpc.types import URI

from services.common.config import Settings
from services.common.turn_batches import TurnBatches

log = logging.getLogger(__name__)
JSON = {"Content-Type": "application/json"}
BATCH_MAX = Settings.solana_rpc_batch_max  # calls per batch request, SOLANA_RPC_BATCH_MAX's default


class BatchRefused(Exception):
    """The node refused a batch as a whole (an error status, or one error where the answers should be)."""


class AiohttpProvider(AsyncHTTPProvider):
    """solana-py's HTTP provider, posting through one aiohttp session (opened on the first call, in its loop).

    At most ``batch_max`` calls go in one batch (1: every call alone). A node that refuses a batch as a whole
    (some providers cap batches, or refuse them) gets its calls again one by one, and no batch after that."""

    def __init__(self, endpoint: str, timeout: float, batch_max: int = BATCH_MAX) -> None:
        # Not the base's __init__: it would open an httpx2 client that nothing uses.
        self.endpoint_uri = URI(endpoint)
        self.timeout = timeout
        self.extra_headers = None
        self.batch_max = batch_max
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self._batches: TurnBatches[JsonRpcRequestSerializer, str] = TurnBatches(self._post)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def make_request_unparsed(self, body: JsonRpcRequestSerializer) -> str:
        return await self._batches.submit(body)

    async def _post(self, bodies: list[JsonRpcRequestSerializer]) -> list[str | Exception]:
        size = max(1, self.batch_max)
        parts = await asyncio.gather(*(self._post_part(bodies[i : i + size]) for i in range(0, len(bodies), size)))
        answers = [answer for part in parts for answer in part]
        return [
            answer if isinstance(answer, str) else SolanaRpcException(answer, self.make_request_unparsed, self, body)
            for body, answer in zip(bodies, answers, strict=True)
        ]

    async def _post_part(self, bodies: list[JsonRpcRequestSerializer]) -> list[str | Exception]:
        if len(bodies) > 1:
            try:
                return await self._send_batch(bodies)
            except BatchRefused as exc:
                if self.batch_max > 1:
                    log.warning("the cluster's RPC refused a batch (%s): calls go one by one from now on", exc)
                    self.batch_max = 1
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:  # ValueError: the answer is not JSON
                return [exc] * len(bodies)
        return list(await asyncio.gather(*(self._post_one(body) for body in bodies)))

    async def _post_one(self, body: JsonRpcRequestSerializer) -> str | Exception:
        try:
            return await self._send(body.to_json())
        except (TimeoutError, aiohttp.ClientError) as exc:
            return exc

    async def _send(self, data: str | bytes) -> str:
        async with self._session().post(self.endpoint_uri, data=data, headers=JSON) as response:
            response.raise_for_status()
            return await response.text()

    async def _send_batch(self, bodies: list[JsonRpcRequestSerializer]) -> list[str | Exception]:
        """One batch request: each call under its index as id, each answer given back its call's own id."""
        calls = [orjson.loads(body.to_json()) for body in bodies]
        ids = [call.get("id") for call in calls]
        for n, call in enumerate(calls):
            call["id"] = n
        try:
            answered: Any = orjson.loads(await self._send(orjson.dumps(calls)))
        except aiohttp.ClientResponseError as exc:
            if 400 <= exc.status < 500:  # e.g. 413, or 403 for a plan without batches: no call was served
                raise BatchRefused(f"HTTP {exc.status}") from exc
            raise
        if not isinstance(answered, list):
            raise BatchRefused(str(answered.get("error") if isinstance(answered, dict) else answered))
        by_id = {item.get("id"): item for item in answered if isinstance(item, dict)}
        answers: list[str | Exception] = []
        for n, call_id in enumerate(ids):
            item = by_id.get(n)
            if item is None:
                answers.append(ValueError("the batch's answer has none for this call"))
            else:
                answers.append(orjson.dumps({**item, "id": call_id}).decode())
        return answers

    async def __aenter__(self) -> AiohttpProvider:
        return self

    async def close(self) -> None:
        await self._batches.close()
        if self._http is not None:
            await self._http.close()


class RpcClient(AsyncClient):
    """solana-py's AsyncClient whose calls go through ``AiohttpProvider``."""

    def __init__(
        self, endpoint: str, *, commitment: Commitment = Confirmed, timeout: float = 10.0, batch_max: int = BATCH_MAX
    ) -> None:
        super().__init__(endpoint, commitment=commitment, timeout=timeout)
        self._provider = AiohttpProvider(endpoint, timeout, batch_max)
