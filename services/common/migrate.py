"""Apply SQL migrations: idempotent, one process at a time, safe behind a transaction pooler.

Files ``migrations/NNN_name.sql`` run in order, each in its own transaction,
recorded in ``schema_migrations`` (or the ``table`` given). Concurrent
migrators (a migration step and replicas starting at once) serialise on a
*transaction-scoped* advisory lock of their own (one per ledger table, see
:func:`lock_key`), taken inside each migration's transaction. A session lock
(``pg_advisory_lock``) would outlive its transaction on a pooled server
connection behind PgBouncer in transaction mode, or be released on another;
a transaction lock lives and dies with the one transaction that holds it.

When nothing is pending, the check is one read and takes no lock, so a
service that still calls :func:`migrate` at start after the migration step
(``python -m services.migrate``) has run costs one query.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)
LOCK_CLASS = 0x0D3E  # first key of the two-key advisory lock: "dexengine migrations"


def lock_key(table: str) -> tuple[int, int]:
    """The advisory lock of one migration ledger: its own, so two ledgers never wait on each other."""
    return LOCK_CLASS, zlib.crc32(table.encode()) & 0x7FFF_FFFF


async def pending(conn: asyncpg.Connection, directory: Path, table: str = "schema_migrations") -> list[Path]:
    """Migration files not yet recorded in ``table`` (all of them when the table does not exist)."""
    files = sorted(directory.glob("*.sql"))
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    done = {row["name"] for row in await conn.fetch(f"SELECT name FROM {table}")} if exists else set()
    return [path for path in files if path.name not in done]


async def migrate(conn: asyncpg.Connection, directory: Path, table: str = "schema_migrations") -> list[str]:
    """Apply pending migrations from ``directory``; return the names applied (by this call)."""
    todo = await pending(conn, directory, table)
    applied: list[str] = []
    for path in todo:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *lock_key(table))
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table}"
                " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            # Another migrator may have applied it while this one waited for the lock.
            if await conn.fetchval(f"SELECT 1 FROM {table} WHERE name = $1", path.name):
                continue
            await conn.execute(path.read_text())
            await conn.execute(f"INSERT INTO {table} (name) VALUES ($1)", path.name)
        log.info("applied migration %s", path.name)
        applied.append(path.name)
    return applied
