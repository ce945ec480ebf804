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


# Every statement is planned once per connection, and that plan reaches rows through their indexes at any size.
# Planning the batched writes (one CTE statement each) took as long as running them: 0.5-0.65 ms of PostgreSQL's
# CPU per execution, half of its time per order at 10 orders/s (docs/benchmark.md, tuning log). A plan made once
# is only safe if it cannot be a size-based choice made on a small table: with the default plan cache a
# connection once kept a hash join over a sequential scan of ``orders``, made while the table was small, and ran
# it at every size since (the benchmark's 5-minute run at 50 orders/s slowed down minute by minute, PostgreSQL
# reading 17 million order rows in 90 s). Every query of this pool looks rows up by key or walks an index, so
# sequential scans (where an index can serve), hash joins and merge joins are off: a plan is a nested loop over
# index scans whatever the statistics said when it was made. A sequential scan that nothing else can replace
# still runs at a penalty cost large enough to trigger JIT compilation, hence JIT off (no query here gains).
SERVER_SETTINGS = {
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
    "jit": "off",
}


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
