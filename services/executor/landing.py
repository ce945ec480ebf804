"""Sending a signed transaction and learning, from the cluster, how it ended.

What the executor's safety rests on, as on a real cluster:
- a signature lands at most once, and its transaction lands whole or not at all;
- a transaction whose blockhash is more than 150 blocks old can never land, so
  once the block height passed ``lastValidBlockHeight`` and the signature is
  still unknown, it is safe to build a new one;
- getSignatureStatuses with searchTransactionHistory answers for any signature
  the cluster ever processed.

Confirmation waits on signatureSubscribe over the PubSub stream: its one
notification says the signature landed, at the subscription's commitment, and
carries the transaction's error, so it is the outcome (landed or failed) with
no further read. The stream tells a subscription only its own notifications
(``ClusterStream``). getSignatureStatuses is the fallback, polled once a poll
interval passed unnotified (a dropped socket, a notification missed while
resubscribing, no stream at all); expiry is only ever decided there, from the
block height against ``lastValidBlockHeight``. The executed amounts come from
the landed transaction's token balance changes of the wallet, never from our
own math.

JSON-RPC calls per order on the happy path: sendTransaction, getTransaction;
getLatestBlockhash once per ``BLOCKHASH_REUSE_S``. The pools come with the
router's answer (the accounts its quote was decoded from); getMultipleAccounts
(the pools and what they depend on, in one call once a pool was read) only
when they do not (an order left in building, an older router).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solana.rpc.websocket_api import Subscription
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSignatureResponse
from solders.signature import Signature
from solders.transaction_status import InstructionErrorCustom, TransactionErrorInstructionError

from services.common.cluster import ClusterStream
from venues.onchain import (
    Account,
    BinArrayCache,
    PoolSnapshot,
    SwapKeys,
    decode_pool,
    decode_swap_keys,
    dependencies,
)

UNKNOWN = "unknown"
LANDED = "landed"
FAILED = "failed"
EXPIRED = "expired"
POLL_S = 1.0
READABLE_TRIES = 3  # getTransaction of a signature just notified: an RPC node may serve it a moment later
READABLE_PAUSE_S = 0.05
BLOCKHASH_REUSE_S = 5.0  # a blockhash is valid ~60 s; reusing one for a few seconds saves a call per order


class ClusterUnavailable(Exception):
    """The cluster's RPC did not answer (connection refused, timeout, 5xx)."""


@dataclass(frozen=True)
class TxOutcome:
    status: str
    err: Any = None  # the transaction error as JSON (landed with an error)
    slot: int | None = None


@dataclass(frozen=True)
class Landed:
    """What the wallet's token accounts did in a landed transaction."""

    slot: int
    fee_lamports: int
    deltas: dict[str, int]  # mint -> raw change of the owner's balance (+ received, - spent)
    decimals: dict[str, int]
    logs: list[str] = field(default_factory=list)


def _err_json(err: Any) -> Any:
    """A transaction error as the JSON-RPC shows it: ``{"InstructionError": [i, {"Custom": n}]}``."""
    if err is None:
        return None
    if isinstance(err, TransactionErrorInstructionError):
        detail = err.err
        shown: Any = {"Custom": detail.code} if isinstance(detail, InstructionErrorCustom) else str(detail)
        return {"InstructionError": [err.index, shown]}
    return str(err)


def _notified_outcome(result: Any) -> TxOutcome | None:
    """A signatureNotification's outcome: landed, or failed with its error; None if it says neither."""
    value = getattr(result, "value", None)
    if not isinstance(value, RpcSignatureResponse):  # e.g. a "received" notification: not landed yet
        return None
    slot = result.context.slot
    return TxOutcome(LANDED, None, slot) if value.err is None else TxOutcome(FAILED, _err_json(value.err), slot)


class Cluster:
    def __init__(self, rpc: AsyncClient, stream: ClusterStream) -> None:
        self.rpc = rpc
        self.stream = stream
        self._blockhash: tuple[float, Hash, int] | None = None
        self._dependencies: dict[Pubkey, list[Pubkey]] = {}  # pool -> what it needed when last read
        self._bin_arrays: BinArrayCache = {}  # decoded DLMM bin arrays, reused while their data is unchanged

    async def healthy(self) -> bool:
        """The cluster answers getHealth."""
        try:
            resp = await self.rpc.is_connected()
        except Exception:  # noqa: BLE001 - any failure of the probe means not healthy
            return False
        return bool(resp)

    async def close(self) -> None:
        await self.stream.close()
        await self.rpc.close()

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (TimeoutError, SolanaRpcException, OSError) as exc:
            raise ClusterUnavailable(f"cluster RPC unavailable: {exc}") from exc

    async def latest_blockhash(self) -> tuple[Hash, int]:
        now = time.monotonic()
        if self._blockhash is None or now - self._blockhash[0] > BLOCKHASH_REUSE_S:
            resp = await self._call(self.rpc.get_latest_blockhash(Confirmed))
            self._blockhash = (now, resp.value.blockhash, resp.value.last_valid_block_height)
        return self._blockhash[1], self._blockhash[2]

    async def block_height(self) -> int:
        resp = await self._call(self.rpc.get_block_height(Confirmed))
        return int(resp.value)

    async def pools(self, addresses: list[Pubkey]) -> dict[Pubkey, PoolSnapshot]:
        """Read pool accounts and what they depend on, and decode them.

        One getMultipleAccounts reads each pool with what it depended on when last read; only
        what a pool now needs beyond that (a DLMM pool's active bin moved to another bin array, a
        pool never read) takes a second call. Every account decoded is read by this call.
        """
        guessed = [d for a in addresses for d in self._dependencies.get(a, ())]
        accounts: dict[Pubkey, Account] = {}
        await self._fetch(list(dict.fromkeys([*addresses, *guessed])), accounts)
        needed: list[Pubkey] = []
        for address in addresses:
            if address in accounts:
                self._dependencies[address] = deps = dependencies(address, accounts[address])
                needed.extend(deps)
        fetched = set(addresses) | set(guessed)
        await self._fetch([d for d in dict.fromkeys(needed) if d not in fetched], accounts)
        return {a: decode_pool(a, accounts, self._bin_arrays) for a in addresses if a in accounts}

    @staticmethod
    def swap_keys(addresses: list[Pubkey], accounts: Mapping[Pubkey, Account]) -> dict[Pubkey, SwapKeys] | None:
        """What a swap on each pool names, decoded from accounts read elsewhere (the router's answer: each pool's
        ``swap_accounts``), or None if any of them cannot be (an account missing): the caller reads the pools
        from the cluster instead."""
        try:
            return {a: decode_swap_keys(a, accounts) for a in addresses}
        except (KeyError, ValueError):
            return None

    async def _fetch(self, addresses: list[Pubkey], into: dict[Pubkey, Account]) -> None:
        if not addresses:
            return
        resp = await self._call(self.rpc.get_multiple_accounts(addresses, encoding="base64"))
        for address, value in zip(addresses, resp.value, strict=True):
            if value is not None:
                into[address] = Account(owner=value.owner, data=bytes(value.data), lamports=value.lamports)

    async def send(self, raw: bytes) -> None:
        """Broadcast. A signature the cluster already processed is not an error here."""
        try:
            await self._call(self.rpc.send_raw_transaction(raw, TxOpts(skip_preflight=True)))
        except RPCException as exc:
            if "already been processed" in str(exc) or "AlreadyProcessed" in str(exc):
                return
            raise

    async def status(self, signature: Signature, last_valid_height: int, *, check_expiry: bool = True) -> TxOutcome:
        """Landed, failed, unknown, or (``check_expiry``: one more call, getBlockHeight) expired."""
        resp = await self._call(self.rpc.get_signature_statuses([signature], search_transaction_history=True))
        found = resp.value[0]
        if found is not None:
            if found.err is not None:
                return TxOutcome(FAILED, _err_json(found.err), found.slot)
            return TxOutcome(LANDED, None, found.slot)
        if check_expiry and await self.block_height() > last_valid_height:
            # Once more, in case it landed between the two reads: after this it cannot.
            again = (
                await self._call(self.rpc.get_signature_statuses([signature], search_transaction_history=True))
            ).value[0]
            if again is not None:
                return TxOutcome(FAILED if again.err is not None else LANDED, _err_json(again.err), again.slot)
            return TxOutcome(EXPIRED)
        return TxOutcome(UNKNOWN)

    async def wait(
        self, signature: Signature, last_valid_height: int, send: Awaitable[None] | None = None
    ) -> TxOutcome:
        """Until the signature lands (with or without an error) or can no longer land.

        The signatureSubscribe notification is the outcome. Without one for a poll interval
        (or without a stream), getSignatureStatuses answers, and only it decides expiry.
        ``send`` (the sendTransaction) is awaited while the subscription is on its way: the two round
        trips overlap, and a transaction that lands before its subscription is told at once.
        """
        notified: asyncio.Future[TxOutcome] = asyncio.get_running_loop().create_future()
        sub = None

        def on_notified(result: Any) -> None:
            outcome = _notified_outcome(result)
            if outcome is not None and not notified.done():
                notified.set_result(outcome)

        subscribing = asyncio.create_task(self._subscribe(signature, on_notified))
        try:
            try:
                if send is not None:
                    await send
            finally:
                sub = await subscribing  # even when the send failed: its subscription is ended below
            if sub is None:  # nothing will tell us: ask at once
                outcome = await self.status(signature, last_valid_height, check_expiry=False)
                if outcome.status != UNKNOWN:
                    return outcome
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        return await asyncio.shield(notified)
                # A poll interval without a notification: ask, and (only here) whether it expired.
                outcome = await self.status(signature, last_valid_height)
                if outcome.status != UNKNOWN:
                    return outcome
        finally:
            if sub is not None:
                await self.stream.unsubscribe(sub)

    async def _subscribe(self, signature: Signature, handler: Callable[[Any], None]) -> Subscription | None:
        """signatureSubscribe, or None without a stream (polling alone still answers)."""
        try:
            return await self.stream.signature(signature, handler)
        except Exception:  # noqa: BLE001 - no stream: polling answers
            return None

    async def landed(self, signature: Signature, owner: Pubkey) -> Landed:
        for attempt in range(READABLE_TRIES):
            resp = await self._call(
                self.rpc.get_transaction(
                    signature, encoding="json", commitment=Confirmed, max_supported_transaction_version=0
                )
            )
            # Each solders getter copies what it returns out of Rust: the transaction is taken once.
            value = resp.value
            if value is not None:
                break
            if attempt + 1 < READABLE_TRIES:
                await asyncio.sleep(READABLE_PAUSE_S)
        else:
            raise ClusterUnavailable(f"transaction {signature} not yet readable")
        meta = value.transaction.meta
        assert meta is not None
        deltas: dict[str, int] = {}
        decimals: dict[str, int] = {}
        wallet = str(owner)
        for sign, balances in ((-1, meta.pre_token_balances or []), (1, meta.post_token_balances or [])):
            for bal in balances:
                if str(bal.owner) != wallet:
                    continue
                mint = str(bal.mint)
                deltas[mint] = deltas.get(mint, 0) + sign * int(bal.ui_token_amount.amount)
                decimals[mint] = bal.ui_token_amount.decimals
        return Landed(
            slot=value.slot,
            fee_lamports=meta.fee,
            deltas=deltas,
            decimals=decimals,
            logs=list(meta.log_messages or []),
        )
