"""asyncpg pool set-up and the errors that mean "database unavailable"."""

from __future__ import annotations

import asyncio

import asyncpg
from asyncpg import exceptions as pgerr

# Errors that say the database cannot be reached right now (as opposed to a
# bug or a constraint): callers answer UNAVAILABLE and retry later.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    pgerr.PostgresConnectionError,
    pgerr.OperatorInterventionError,
    pgerr.InterfaceError,
    pgerr.TooManyConnectionsError,
)


async def _reset(conn: asyncpg.Connection) -> None:
    """Release a pooled connection without asyncpg's default reset round trip.

    The default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release (one more round trip per query; ~7 % of the
    orders service's CPU under load). Pooled connections here never change
    session state: LISTEN uses its own connection and the migration lock is
    released in a ``finally``. An abandoned transaction is still rolled back.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# Every statement is planned for its own parameters. The batched writes take arrays whose length changes from
# batch to batch; with the default plan cache, after five executions a connection may keep a generic plan made
# for a guessed array length and the table's size at that moment (a hash join over a sequential scan of a table
# that was small then), and use it at every size since: the benchmark's 5-minute run at 50 orders/s slowed
# down minute by minute, PostgreSQL reading 17 million order rows in 90 s (docs/benchmark.md, tuning log).
SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(dsn: str, size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        command_timeout=10,
        max_inactive_connection_lifetime=60,
        reset=_reset,
        server_settings=SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> bool:
    try:
        return await pool.fetchval("SELECT 1", timeout=1) == 1
    except (*UNAVAILABLE_ERRORS, pgerr.PostgresError):
        return False
