"""Sending a signed transaction and learning, from the cluster, how it ended.

What the executor's safety rests on, as on a real cluster:
- a signature lands at most once, and its transaction lands whole or not at all;
- a transaction whose blockhash is more than 150 blocks old can never land, so
  once the block height passed ``lastValidBlockHeight`` and the signature is
  still unknown, it is safe to build a new one;
- getSignatureStatuses with searchTransactionHistory answers for any signature
  the cluster ever processed.

Confirmation waits on signatureSubscribe over the PubSub stream, with
getSignatureStatuses polled as a fallback (a dropped socket, a notification
missed while resubscribing). The executed amounts come from the landed
transaction's token balance changes of the wallet, never from our own math.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction_status import InstructionErrorCustom, TransactionErrorInstructionError

from services.common.cluster import ClusterStream
from venues.onchain import Account, PoolSnapshot, decode_pool, dependencies

UNKNOWN = "unknown"
LANDED = "landed"
FAILED = "failed"
EXPIRED = "expired"
POLL_S = 1.0
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


class Cluster:
    def __init__(self, rpc: AsyncClient, stream: ClusterStream) -> None:
        self.rpc = rpc
        self.stream = stream
        self._blockhash: tuple[float, Hash, int] | None = None

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
        """Read pool accounts and what they depend on, and decode them."""
        accounts: dict[Pubkey, Account] = {}
        await self._fetch(addresses, accounts)
        needed = [d for a in addresses if a in accounts for d in dependencies(a, accounts[a])]
        await self._fetch([d for d in dict.fromkeys(needed) if d not in accounts], accounts)
        return {a: decode_pool(a, accounts) for a in addresses if a in accounts}

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

    async def wait(self, signature: Signature, last_valid_height: int) -> TxOutcome:
        """Until the signature lands (with or without an error) or can no longer land."""
        notified: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        sub = None

        def on_notified(result: Any) -> None:
            if not notified.done():
                notified.set_result(result)

        with contextlib.suppress(Exception):  # no stream: polling alone still answers
            sub = await self.stream.signature(signature, on_notified)
        try:
            # Expiry is asked of the cluster (getBlockHeight) only after a poll interval went by unnotified:
            # right after sending, or right after a notification, the signature cannot have expired yet.
            timed_out = False
            while True:
                outcome = await self.status(signature, last_valid_height, check_expiry=timed_out)
                if outcome.status != UNKNOWN:
                    return outcome
                if notified.done():  # notified but not yet readable: a short pause, not a spin
                    await asyncio.sleep(0.05)
                    timed_out = True
                    continue
                try:
                    await asyncio.wait_for(asyncio.shield(notified), POLL_S)
                    timed_out = False
                except TimeoutError:
                    timed_out = True
        finally:
            if sub is not None:
                await self.stream.unsubscribe(sub)

    async def landed(self, signature: Signature, owner: Pubkey) -> Landed:
        resp = await self._call(
            self.rpc.get_transaction(
                signature, encoding="json", commitment=Confirmed, max_supported_transaction_version=0
            )
        )
        if resp.value is None:
            raise ClusterUnavailable(f"transaction {signature} not yet readable")
        meta = resp.value.transaction.meta
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
            slot=resp.value.slot,
            fee_lamports=meta.fee,
            deltas=deltas,
            decimals=decimals,
            logs=list(meta.log_messages or []),
        )
