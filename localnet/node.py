"""The cluster: receiving, landing, the market, genesis and funding.

Every state change (landing a batch of transactions, a market tick, a
scenario command) runs under one lock, on a ``View`` over the committed
accounts, and is committed to PostgreSQL in one transaction before the
in-memory state changes and subscribers are told. A signature lands at most
once: a landed one is remembered for as long as its blockhash could still be
valid (300 slots), and a transaction whose blockhash has expired by its
landing time is dropped, never landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import asyncpg
import base58
import orjson
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from localnet.bank import Bank, Outcome, TxError, View, fee_of, mint_decimals, sanitize
from localnet.clock import MAX_PROCESSING_AGE, SLOT_S, SlotClock
from localnet.config import Settings
from localnet.errors import (
    INTERNAL_ERROR,
    SEND_TRANSACTION_PREFLIGHT_FAILURE,
    TRANSACTION_SIGNATURE_VERIFICATION_FAILURE,
    RpcError,
    invalid_params,
)
from localnet.market import Market
from localnet.pools import PoolCache
from localnet.programs import programs
from localnet.store import Batch, LedgerRow, Store
from venues.dlmm import DlmmPool
from venues.onchain import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    COMPUTE_BUDGET_PROGRAM_ID,
    MEMO_PROGRAM_ID,
    MEMO_V1_PROGRAM_ID,
    METEORA_DLMM_PROGRAM_ID,
    NATIVE_MINT,
    RAYDIUM_CPMM_PROGRAM_ID,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    Account,
    associated_token_address,
    is_pool_account,
    mint_account,
    pool_accounts,
    token_account,
)
from venues.pools import seed_pools
from venues.raydium import ConstantProductPool
from venues.token_layout import set_token_amount, token_amount
from venues.tokens import TOKENS

log = logging.getLogger("localnet.node")

PACKET_DATA_SIZE = 1232
TX_TYPE_NAME = "solana_transaction::versioned::VersionedTransaction"
FAUCET_LAMPORTS = 500_000_000 * 10**9
FUND_LAMPORTS = 1_000_000 * 10**9
FUND_WHOLE_TOKENS = 100_000_000
FUND_WHOLE_SOL = 1_000_000
NATIVE_LOADER = Pubkey.from_string("NativeLoader1111111111111111111111111111111")
BPF_UPGRADEABLE_LOADER = Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111")
REMEMBER_SLOTS = 2 * MAX_PROCESSING_AGE  # landed signatures kept for dedup: longer than any blockhash lives
RATE_WINDOW_S = 10.0


class Listener(Protocol):
    def slot(self, slot: int) -> None: ...

    def accounts(self, slot: int, changed: dict[Pubkey, Account | None]) -> None: ...

    def landed(self, slot: int, txs: list[Landed]) -> None: ...

    def received(self, signature: str) -> None: ...


@dataclass(frozen=True)
class Landed:
    signature: str
    err: Any
    logs: list[str]
    keys: list[Pubkey]


@dataclass(order=True)
class Pending:
    land_at: float
    seq: int
    signature: str = field(compare=False)
    raw: bytes = field(compare=False)
    tx: VersionedTransaction = field(compare=False)


def transaction_json(tx: VersionedTransaction) -> dict[str, Any]:
    """The ``json`` encoding of a transaction, as getTransaction returns it."""
    message = tx.message
    header = message.header
    out: dict[str, Any] = {
        "accountKeys": [str(k) for k in message.account_keys],
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "recentBlockhash": str(message.recent_blockhash),
        "instructions": [
            {
                "programIdIndex": ix.program_id_index,
                "accounts": list(bytes(ix.accounts)),
                "data": base58.b58encode(bytes(ix.data)).decode(),
                "stackHeight": None,
            }
            for ix in message.instructions
        ],
    }
    if isinstance(message, MessageV0):
        out["addressTableLookups"] = []
    return {"signatures": [str(s) for s in tx.signatures], "message": out}


def version_of(tx: VersionedTransaction) -> str | int:
    return 0 if isinstance(tx.message, MessageV0) else "legacy"


def memos_of(tx: VersionedTransaction) -> list[str]:
    """The memos a transaction's message carries (executed or not), as the node extracts them."""
    keys = tx.message.account_keys
    return [
        bytes(ix.data).decode(errors="replace")
        for ix in tx.message.instructions
        if keys[ix.program_id_index] in (MEMO_PROGRAM_ID, MEMO_V1_PROGRAM_ID)
    ]


def memo_field(memos: list[str]) -> str | None:
    """How the node shows memos in getSignaturesForAddress: ``[len] text`` joined by ``; ``."""
    return "; ".join(f"[{len(m.encode())}] {m}" for m in memos) if memos else None


class Node:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.store = Store(pool)
        self.cache = PoolCache()
        self.bank = Bank(programs(self.cache), mint_decimals)
        self.clock = SlotClock(time.time(), Hash.default())
        self.rng = random.Random(settings.market_seed + 1)
        self.heap: list[Pending] = []
        self.pending: dict[str, Pending] = {}
        self.recent: dict[str, tuple[int, Any]] = {}
        self._recent_order: deque[tuple[int, str]] = deque()
        self.halted = False
        self.requests: Counter[str] = Counter()  # JSON-RPC requests served since start, by method
        self.posts = 0  # HTTP requests served since start: one per single request or batch
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.pools: set[Pubkey] = set()
        self.listeners: list[Listener] = []
        self.faucet = Keypair()
        self.market = Market(
            self.cache,
            self.symbol_of,
            settings.market_seed,
            drift=settings.market_drift,
            trend_bps_per_s=settings.trend_bps_per_s,
        )
        self._seq = 0
        self._landed_at: deque[tuple[float, int]] = deque()
        self.tasks: list[asyncio.Task[None]] = []
        self.healthy = True

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.migrate()
        genesis = await self.store.get_meta("genesis")
        if genesis is None:
            genesis = await self._genesis()
        else:
            await self.store.load()
        self.clock = SlotClock(
            float(genesis["time"]), Hash.from_string(genesis["hash"]), self.settings.blockhash_valid_slots
        )
        self.faucet = Keypair.from_bytes(bytes(genesis["faucet"]))
        self.store.slot = self.clock.slot()
        await self.fund_at_genesis(self.settings.fund)
        for program in (RAYDIUM_CPMM_PROGRAM_ID, METEORA_DLMM_PROGRAM_ID):
            for key in list(self.store.program_accounts(program)):
                account = self.store.get(key)
                if account is not None and is_pool_account(account):
                    self.pools.add(key)
        remember = max(REMEMBER_SLOTS, 2 * self.clock.valid_slots)
        for row in await self.store.recent_signatures(max(0, self.clock.slot() - remember)):
            self._remember(row["signature"], row["slot"], None if row["err"] is None else orjson.loads(row["err"]))
        for row in await self.store.load_pending():
            try:
                tx = VersionedTransaction.from_bytes(bytes(row["raw"]))
            except ValueError:
                continue
            self._queue(Pending(row["land_at"], self._next_seq(), row["signature"], bytes(row["raw"]), tx))
        self.tasks = [
            asyncio.create_task(self._lander(), name="lander"),
            asyncio.create_task(self._market_loop(), name="market"),
            asyncio.create_task(self._slot_loop(), name="slots"),
        ]
        log.info(
            "cluster up",
            extra={"slot": self.clock.slot(), "pools": len(self.pools), "pending": len(self.pending)},
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _genesis(self) -> dict[str, Any]:
        faucet = Keypair()
        genesis = {
            "time": time.time(),
            "hash": str(Hash(secrets.token_bytes(32))),
            "faucet": list(bytes(faucet)),
        }
        batch = Batch(meta={"genesis": genesis})
        for program, loader in (
            (SYSTEM_PROGRAM_ID, NATIVE_LOADER),
            (COMPUTE_BUDGET_PROGRAM_ID, NATIVE_LOADER),
            (TOKEN_PROGRAM_ID, BPF_UPGRADEABLE_LOADER),
            (ASSOCIATED_TOKEN_PROGRAM_ID, BPF_UPGRADEABLE_LOADER),
            (MEMO_PROGRAM_ID, BPF_UPGRADEABLE_LOADER),
            (MEMO_V1_PROGRAM_ID, BPF_UPGRADEABLE_LOADER),
            (RAYDIUM_CPMM_PROGRAM_ID, BPF_UPGRADEABLE_LOADER),
            (METEORA_DLMM_PROGRAM_ID, BPF_UPGRADEABLE_LOADER),
        ):
            batch.accounts[program] = Account(loader, b"" if loader == NATIVE_LOADER else bytes(36), 1_141_440)
            batch.executable.add(program)
        batch.accounts[faucet.pubkey()] = Account(SYSTEM_PROGRAM_ID, b"", FAUCET_LAMPORTS)
        for token in TOKENS.values():
            batch.accounts[Pubkey.from_string(token.mint)] = mint_account(token.decimals, 0, faucet.pubkey())
            batch.mints.append((token.mint, token.symbol, token.decimals))
        for pool in seed_pools().values():
            assert isinstance(pool, ConstantProductPool | DlmmPool)
            mint_a, mint_b = pool.mints
            _, accounts = pool_accounts(pool, (TOKENS[mint_a].decimals, TOKENS[mint_b].decimals))
            batch.accounts.update(accounts)
        await self.store.commit(batch)
        log.info("genesis", extra={"accounts": len(batch.accounts)})
        return genesis

    # -- reads -------------------------------------------------------------------------

    def symbol_of(self, mint: Pubkey) -> str | None:
        return self.store.symbols.get(mint)

    def slot(self) -> int:
        return self.clock.slot()

    def status(self, signature: str) -> tuple[int, Any] | None:
        return self.recent.get(signature)

    def _remember(self, signature: str, slot: int, err: Any) -> None:
        self.recent[signature] = (slot, err)
        self._recent_order.append((slot, signature))
        horizon = self.clock.slot() - max(REMEMBER_SLOTS, 2 * self.clock.valid_slots)
        while self._recent_order and self._recent_order[0][0] < horizon:
            _, old = self._recent_order.popleft()
            self.recent.pop(old, None)

    def stats(self) -> dict[str, Any]:
        now = time.time()
        while self._landed_at and self._landed_at[0][0] < now - RATE_WINDOW_S:
            self._landed_at.popleft()
        count = sum(n for _, n in self._landed_at)
        span = min(RATE_WINDOW_S, now - self._landed_at[0][0]) if self._landed_at else RATE_WINDOW_S
        return {
            "landedPerSecond": round(count / max(span, 1.0), 2),
            "halted": self.halted,
            "slot": self.slot(),
            "requests": dict(self.requests),
            "posts": self.posts,
        }

    # -- receiving -----------------------------------------------------------------------

    def parse(self, raw: bytes, encoded_len: int) -> VersionedTransaction:
        if len(raw) > PACKET_DATA_SIZE:
            raise invalid_params(
                f"base64 encoded {TX_TYPE_NAME} too large: {encoded_len} bytes (max: encoded/raw 1644/1232)"
            )
        try:
            tx = VersionedTransaction.from_bytes(raw)
        except ValueError as exc:
            raise invalid_params(f"failed to deserialize {TX_TYPE_NAME}: io error: {exc}") from None
        try:
            sanitize(tx)
        except TxError as exc:
            raise invalid_params(f"invalid transaction: {exc}") from None
        return tx

    @staticmethod
    def verified(tx: VersionedTransaction) -> bool:
        try:
            return all(tx.verify_with_results()) and len(tx.signatures) == tx.message.header.num_required_signatures
        except ValueError:
            return False

    async def submit(self, raw: bytes, tx: VersionedTransaction, skip_preflight: bool) -> str:
        """sendTransaction: the signature, once the transaction is queued (or dropped, as a leader would)."""
        signature = str(tx.signatures[0])
        if not skip_preflight:
            if not self.verified(tx):
                raise RpcError(TRANSACTION_SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure")
            self.preflight(tx)
        elif not self.verified(tx) or signature in self.recent or not self.clock.is_valid(tx.message.recent_blockhash):
            log.info("dropped on receipt", extra={"signature": signature})
            return signature
        if signature in self.pending or signature in self.recent:
            return signature
        lo, hi = self.settings.landing_ms
        delay_ms = self.rng.uniform(lo, hi) if hi > lo else lo
        land_at = time.time() + delay_ms / 1000
        entry = Pending(land_at, self._next_seq(), signature, raw, tx)
        self.pending[signature] = entry
        # A transaction that lands later is queued durably first, so that a restart still lands it. One due at
        # once (no landing delay, not halted) is recorded by the landing's own commit, moments later: a crash
        # before it drops the transaction, as a leader that dies drops what it received.
        if delay_ms > 0 or self.halted:
            try:
                await self.store.add_pending(signature, raw, land_at)
            except (OSError, asyncpg.PostgresError) as exc:
                self.pending.pop(signature, None)
                raise RpcError(INTERNAL_ERROR, f"Internal error: {exc}") from None
        heapq.heappush(self.heap, entry)
        self.wake.set()
        for listener in self.listeners:
            listener.received(signature)
        return signature

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _queue(self, entry: Pending) -> None:
        self.pending[entry.signature] = entry
        heapq.heappush(self.heap, entry)

    def preflight(self, tx: VersionedTransaction) -> Outcome:
        outcome = self.simulate(tx)
        if outcome.err is not None:
            raise RpcError(
                SEND_TRANSACTION_PREFLIGHT_FAILURE,
                f"Transaction simulation failed: {outcome.err}",
                self.simulation_value(outcome, None),
            )
        return outcome

    def simulate(self, tx: VersionedTransaction, replace_blockhash: bool = False) -> Outcome:
        slot = self.clock.slot()
        if str(tx.signatures[0]) in self.recent:
            return Outcome(TxError.of("AlreadyProcessed"), 0, [], 0, None)
        if not replace_blockhash and not self.clock.is_valid(tx.message.recent_blockhash, slot):
            return Outcome(TxError.of("BlockhashNotFound"), 0, [], 0, None)
        return self.bank.execute(tx, View(self.store.get), slot, self.clock.block_time(slot))

    def simulation_value(self, outcome: Outcome, replacement: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "err": None if outcome.err is None else outcome.err.json,
            "logs": outcome.logs,
            "accounts": None,
            "unitsConsumed": outcome.units,
            "returnData": None,
            "innerInstructions": None,
            "replacementBlockhash": replacement,
            "loadedAccountsDataSize": 0,
            "fee": outcome.fee or None,
        }

    def fee_for_message(self, message: Message | MessageV0) -> int | None:
        if not self.clock.is_valid(message.recent_blockhash):
            return None
        return fee_of(message)

    # -- landing -------------------------------------------------------------------------

    async def _lander(self) -> None:
        while True:
            self.wake.clear()
            if self.halted or not self.heap:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.wake.wait()
                continue
            delay = self.heap[0].land_at - time.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
                continue
            now = time.time()
            due: list[Pending] = []
            while self.heap and self.heap[0].land_at <= now and len(due) < 2_000:
                due.append(heapq.heappop(self.heap))
            try:
                async with self.lock:
                    await self._land(due)
                self.healthy = True
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("landing failed; retrying", extra={"transactions": len(due)})
                self.healthy = False
                for entry in due:
                    heapq.heappush(self.heap, entry)
                await asyncio.sleep(0.5)

    async def _land(self, due: list[Pending]) -> None:
        slot = self.clock.slot()
        block_time = self.clock.block_time(slot)
        self.store.slot = slot
        view = View(self.store.get)
        rows: list[LedgerRow] = []
        landed: list[Landed] = []
        statuses: list[tuple[str, Any]] = []
        for entry in due:
            if entry.signature in self.recent:
                continue  # landed already: a signature lands at most once
            if not self.clock.is_valid(entry.tx.message.recent_blockhash, slot):
                log.info("expired before landing", extra={"signature": entry.signature})
                continue
            outcome = self.bank.execute(entry.tx, view, slot, block_time)
            if outcome.view is None:
                log.info("dropped", extra={"signature": entry.signature, "err": str(outcome.err)})
                continue
            outcome.view.merge_into_parent()
            err = None if outcome.err is None else outcome.err.json
            rows.append(self._ledger_row(entry, outcome, slot, block_time))
            keys = list(entry.tx.message.account_keys)
            landed.append(Landed(entry.signature, err, outcome.logs, keys))
            statuses.append((entry.signature, err))
        batch = Batch(accounts=view.writes, ledger=rows, pending_done=[e.signature for e in due])
        await self.store.commit(batch)
        for entry in due:
            self.pending.pop(entry.signature, None)
        for signature, err in statuses:
            self._remember(signature, slot, err)
        if rows:
            now = time.time()
            self._landed_at.append((now, len(rows)))
            while self._landed_at and self._landed_at[0][0] < now - RATE_WINDOW_S:
                self._landed_at.popleft()
        self._notify_accounts(slot, view.writes)
        if landed:
            for listener in self.listeners:
                listener.landed(slot, landed)

    def _ledger_row(self, entry: Pending, outcome: Outcome, slot: int, block_time: int) -> LedgerRow:
        err = None if outcome.err is None else outcome.err.json
        pre_tokens, post_tokens = outcome.token_balances
        meta: dict[str, Any] = {
            "err": err,
            "status": {"Ok": None} if err is None else {"Err": err},
            "fee": outcome.fee,
            "preBalances": outcome.pre_balances,
            "postBalances": outcome.post_balances,
            "innerInstructions": [],
            "logMessages": outcome.logs,
            "preTokenBalances": pre_tokens,
            "postTokenBalances": post_tokens,
            "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []},
            "computeUnitsConsumed": outcome.units,
        }
        deltas: dict[str, dict[str, int]] = {}
        for sign, balances in ((-1, pre_tokens), (1, post_tokens)):
            for bal in balances:
                per_owner = deltas.setdefault(bal["owner"], {})
                per_owner[bal["mint"]] = per_owner.get(bal["mint"], 0) + sign * int(bal["uiTokenAmount"]["amount"])
        deltas = {o: {m: d for m, d in ms.items() if d} for o, ms in deltas.items()}
        return LedgerRow(
            signature=entry.signature,
            slot=slot,
            block_time=block_time,
            err=err,
            fee=outcome.fee,
            memo=memo_field(memos_of(entry.tx)),
            accounts=[str(k) for k in entry.tx.message.account_keys],
            meta=orjson.dumps(meta),
            deltas=orjson.dumps({o: ms for o, ms in deltas.items() if ms}),
            raw=entry.raw,
        )

    def _notify_accounts(self, slot: int, changed: dict[Pubkey, Account | None]) -> None:
        if changed:
            for listener in self.listeners:
                listener.accounts(slot, changed)

    # -- the market and the slots ------------------------------------------------------------

    async def _market_loop(self) -> None:
        while True:
            await asyncio.sleep(SLOT_S)
            if not self.settings.market_drift:
                continue
            try:
                async with self.lock:
                    view = View(self.store.get)
                    self.market.advance(view, list(self.pools), time.time())
                    await self.apply(view)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("market tick failed")

    async def _slot_loop(self) -> None:
        last = self.clock.slot()
        while True:
            await asyncio.sleep(max(0.0, self.clock.slot_start(last + 1) - time.time()) + 0.001)
            slot = self.clock.slot()
            if slot != last:
                last = slot
                for listener in self.listeners:
                    listener.slot(slot)

    async def apply(self, view: View, batch: Batch | None = None) -> None:
        """Commit a view's writes outside any transaction (market, scenario control); caller holds the lock."""
        batch = batch or Batch()
        batch.accounts.update(view.writes)
        if batch.empty():
            return
        self.store.slot = self.clock.slot()
        await self.store.commit(batch)
        self._notify_accounts(self.store.slot, view.writes)

    # -- funding -------------------------------------------------------------------------

    async def fund_at_genesis(self, wallets: Iterable[Pubkey]) -> None:
        """Fund each wallet once (remembered in meta ``funded``): SOL and every seeded token."""
        funded = set(await self.store.get_meta("funded") or [])
        todo = [w for w in wallets if str(w) not in funded]
        if not todo:
            return
        async with self.lock:
            view = View(self.store.get)
            for wallet in todo:
                self.credit(view, wallet, FUND_LAMPORTS, self.funding(view))
            await self.apply(view, Batch(meta={"funded": sorted(funded | {str(w) for w in todo})}))
        log.info("funded", extra={"wallets": [str(w) for w in todo]})

    def funding(self, view: View) -> dict[Pubkey, int]:
        """What a funded wallet gets of every named mint: 1M SOL as wSOL, 100M of each other token."""
        out = {}
        for mint in self.store.symbols:
            decimals = mint_decimals(view, mint)
            if decimals is not None:
                out[mint] = (FUND_WHOLE_SOL if mint == NATIVE_MINT else FUND_WHOLE_TOKENS) * 10**decimals
        return out

    def credit(self, view: View, wallet: Pubkey, lamports: int, tokens: dict[Pubkey, int]) -> None:
        """Add lamports and token balances (in the wallet's ATAs, created as needed)."""
        account = view.get(wallet) or Account(SYSTEM_PROGRAM_ID, b"", 0)
        if lamports:
            view.set(wallet, Account(account.owner, account.data, account.lamports + lamports))
        for mint, amount in tokens.items():
            if mint_decimals(view, mint) is None:
                raise invalid_params(f"{mint} is not a mint")
            ata = associated_token_address(wallet, mint)
            existing = view.get(ata)
            if existing is None:
                view.set(ata, token_account(mint, wallet, amount))
                continue
            new_amount = token_amount(existing.data) + amount
            extra = amount if existing.data[109] == 1 else 0
            view.set(
                ata, Account(existing.owner, set_token_amount(existing.data, new_amount), existing.lamports + extra)
            )

    def airdrop_transaction(self, to: Pubkey, lamports: int) -> VersionedTransaction:
        slot = self.clock.slot()
        ix = transfer(TransferParams(from_pubkey=self.faucet.pubkey(), to_pubkey=to, lamports=lamports))
        message = Message.new_with_blockhash([ix], self.faucet.pubkey(), self.clock.blockhash(slot))
        return VersionedTransaction(message, [self.faucet])


def whole_to_raw(amount: Decimal | str | int | float, decimals: int, field_name: str) -> int:
    try:
        value = Decimal(str(amount))
    except ArithmeticError:
        raise invalid_params(f"{field_name}: {amount!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise invalid_params(f"{field_name}: must be a non-negative number")
    return int(value.scaleb(decimals))
