"""The simulated chain on real PostgreSQL: signature dedup, landing once, expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.common.migrate import migrate
from services.executor import chain
from services.executor.chain import SimulatedChain, SwapRejected

MIGRATIONS = Path(chain.__file__).parent / "migrations"


@pytest.fixture(scope="module")
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=12)
    assert pool is not None
    async with pool.acquire() as conn:
        await migrate(conn, MIGRATIONS, table="chain_schema_migrations")
    yield pool
    await pool.close()


class CountingProgram:
    """The on-chain program: executes a swap and counts executions."""

    def __init__(self, reject: str = "") -> None:
        self.calls = 0
        self.reject = reject

    async def __call__(self, tx: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0.02)
        if self.reject:
            raise SwapRejected(self.reject, "output below minimum")
        return {"amountOut": "149.5", "fills": []}


def signature() -> str:
    return chain.derive_signature(42, str(uuid.uuid4()), 1)


async def test_signature_is_derived_deterministically() -> None:
    order_id = str(uuid.uuid4())
    assert chain.derive_signature(42, order_id, 1) == chain.derive_signature(42, order_id, 1)
    assert chain.derive_signature(42, order_id, 1) != chain.derive_signature(42, order_id, 2)
    assert 86 <= len(chain.derive_signature(42, order_id, 1)) <= 88


async def test_resending_a_signature_changes_nothing_and_it_lands_once(pool: asyncpg.Pool) -> None:
    program = CountingProgram()
    ledger = SimulatedChain(pool, program)
    sig, order_id = signature(), str(uuid.uuid4())
    lvh = chain.block_height() + chain.BLOCKHASH_VALID_BLOCKS
    assert (await ledger.status(sig, lvh)).status == chain.UNKNOWN
    for _ in range(3):
        await ledger.send(sig, order_id, 1, {"legs": []}, lvh, 0.05)
    assert (await ledger.status(sig, lvh)).status == chain.PENDING
    await asyncio.sleep(0.06)
    results = await asyncio.gather(*(ledger.wait(sig, lvh) for _ in range(10)))
    assert {r.status for r in results} == {chain.LANDED}
    assert program.calls == 1, "ten racing executors, one execution"
    row = await pool.fetchrow("SELECT sends, status FROM chain.transactions WHERE signature = $1", sig)
    assert row["sends"] == 3 and row["status"] == "landed"


async def test_a_rejected_swap_lands_as_failed(pool: asyncpg.Pool) -> None:
    ledger = SimulatedChain(pool, CountingProgram(reject="RAYDIUM_EXCEEDED_SLIPPAGE_0x1e"))
    sig = signature()
    lvh = chain.block_height() + chain.BLOCKHASH_VALID_BLOCKS
    await ledger.send(sig, str(uuid.uuid4()), 1, {"legs": []}, lvh, 0.0)
    status = await ledger.wait(sig, lvh)
    assert status.status == chain.FAILED
    assert status.result == {
        "error": "RAYDIUM_EXCEEDED_SLIPPAGE_0x1e",
        "message": "output below minimum",
        "chainMs": 0.0,
    }


async def test_an_expired_blockhash_never_lands(pool: asyncpg.Pool) -> None:
    program = CountingProgram()
    ledger = SimulatedChain(pool, program)
    sig = signature()
    expired = chain.block_height() - 1
    await ledger.send(sig, str(uuid.uuid4()), 1, {"legs": []}, expired, 0.0)
    assert (await ledger.status(sig, expired)).status == chain.EXPIRED
    assert program.calls == 0
    assert await pool.fetchval("SELECT count(*) FROM chain.transactions WHERE signature = $1", sig) == 0
