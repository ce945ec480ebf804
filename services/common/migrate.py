"""Apply SQL migrations at start-up: idempotent, one process at a time.

Files ``migrations/NNN_name.sql`` run in order, each in its own transaction,
recorded in ``schema_migrations``; a PostgreSQL advisory lock serialises
concurrent starters (several orders replicas starting at once).
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)
LOCK_ID = 0x0D3E_0001


async def migrate(conn: asyncpg.Connection, directory: Path, table: str = "schema_migrations") -> list[str]:
    """Apply pending migrations from ``directory``; return the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["name"] for row in await conn.fetch(f"SELECT name FROM {table}")}
        for path in sorted(directory.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(f"INSERT INTO {table} (name) VALUES ($1)", path.name)
            log.info("applied migration %s", path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    return applied
