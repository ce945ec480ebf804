"""A simulated Solana chain with memory (its own PostgreSQL schema).

What it models, because the executor's safety depends on it:
- A transaction is identified by its signature, derived before sending.
  Sending the same signature again is a no-op (signature dedup).
- It lands after the simulated execution latency, executing the swap against
  the venue's pool state *at landing time*; the result is recorded once.
- Each transaction carries ``last_valid_height`` (blockhash + 150 blocks of
  400 ms). One not landed by then never lands: status ``expired``.
- ``status(signature)`` answers unknown / pending / landed / failed / expired,
  which is what a retry asks before it ever builds a new transaction.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import base58
import orjson

SLOT_S = 0.4
BLOCKHASH_VALID_BLOCKS = 150
GENESIS = 1_700_000_000.0

UNKNOWN = "unknown"
PENDING = "pending"
LANDED = "landed"
FAILED = "failed"
EXPIRED = "expired"

# Executes the swap at landing; returns a result dict, or raises SwapRejected.
SwapFn = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class SwapRejected(Exception):
    """The program rejected the swap (slippage, liquidity): the tx lands as failed."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class TxStatus:
    status: str
    result: dict[str, Any] | None = None
    land_after: datetime | None = None


def block_height(now: float | None = None) -> int:
    return int(((now if now is not None else time.time()) - GENESIS) / SLOT_S)


def derive_signature(seed: int, order_id: str, attempt: int) -> str:
    """base58(sha512(seed|order|attempt)): 64 bytes like a real ed25519 signature."""
    return base58.b58encode(hashlib.sha512(f"{seed}|{order_id}|{attempt}".encode()).digest()).decode()


def blockhash(height: int) -> str:
    return base58.b58encode(hashlib.sha256(f"blockhash|{height}".encode()).digest()).decode()


def encode_tx(payload: dict[str, Any]) -> str:
    return base64.b64encode(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).decode()


class SimulatedChain:
    def __init__(self, pool: asyncpg.Pool, swap: SwapFn) -> None:
        self.pool = pool
        self.swap = swap

    async def send(
        self,
        signature: str,
        order_id: str,
        attempt: int,
        payload: dict[str, Any],
        last_valid_height: int,
        latency_s: float,
    ) -> None:
        """Broadcast: accepted once per signature; a resend of a known one changes nothing."""
        if block_height() > last_valid_height:
            return  # the leader drops a transaction with an expired blockhash
        await self.pool.execute(
            """WITH clock AS (SELECT clock_timestamp() AS t)
               INSERT INTO chain.transactions
                   (signature, order_id, attempt, payload, last_valid_height, submitted_at, land_after)
               SELECT $1, $2, $3, $4::jsonb, $5, clock.t, clock.t + $6::interval FROM clock
               ON CONFLICT (signature) DO UPDATE SET sends = chain.transactions.sends + 1""",
            signature,
            uuid.UUID(order_id),
            attempt,
            orjson.dumps(payload).decode(),
            last_valid_height,
            timedelta(seconds=latency_s),
        )

    async def status(self, signature: str, last_valid_height: int) -> TxStatus:
        """getSignatureStatuses with searchTransactionHistory=true, settling what is due."""
        row = await self.pool.fetchrow(
            "SELECT status, result, land_after, clock_timestamp() AS now FROM chain.transactions WHERE signature = $1",
            signature,
        )
        if row is None:
            return TxStatus(EXPIRED if block_height() > last_valid_height else UNKNOWN)
        if row["status"] != PENDING:
            return TxStatus(row["status"], orjson.loads(row["result"]) if row["result"] else None)
        if row["now"] < row["land_after"]:
            return TxStatus(PENDING, land_after=row["land_after"])
        return await self._settle(signature)

    async def _settle(self, signature: str) -> TxStatus:
        """Land a due transaction exactly once (row lock serialises racing executors)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT status, result, payload, submitted_at, land_after FROM chain.transactions "
                "WHERE signature = $1 FOR UPDATE",
                signature,
            )
            assert row is not None
            if row["status"] != PENDING:
                return TxStatus(row["status"], orjson.loads(row["result"]) if row["result"] else None)
            try:
                result = await self.swap(orjson.loads(row["payload"]))
                status = LANDED
            except SwapRejected as exc:
                result = {"error": exc.code, "message": str(exc)}
                status = FAILED
            # The simulated network time, so benchmarks can subtract it exactly.
            result["chainMs"] = round((row["land_after"] - row["submitted_at"]).total_seconds() * 1000, 3)
            await conn.execute(
                """UPDATE chain.transactions SET status = $2, result = $3::jsonb, settled_at = clock_timestamp()
                   WHERE signature = $1""",
                signature,
                status,
                orjson.dumps(result).decode(),
            )
        return TxStatus(status, result)

    async def wait(self, signature: str, last_valid_height: int) -> TxStatus:
        """Poll until the transaction lands, fails or can no longer land."""
        while True:
            status = await self.status(signature, last_valid_height)
            if status.status != PENDING:
                return status
            assert status.land_after is not None
            delay = (status.land_after - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(min(max(delay, 0.005), 1.0))
