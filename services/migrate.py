"""Run the database migrations once, before the services: ``python -m services.migrate [SET ...]``.

In Kubernetes this is the ``migrate`` init container of the orders pods (the
same image, the same Secret); anywhere else it is one command before the
services start. Each set has its own ledger table and therefore its own
advisory lock (a transaction lock: safe behind a transaction pooler). With no
argument every set runs. Exit status 0 when the schema is current, 1 (with
the error logged) otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.common import config, logs
from services.common.migrate import migrate

log = logging.getLogger("services.migrate")
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MigrationSet:
    directory: Path
    table: str
    dsn: Callable[[config.Settings], str]


# One line per service that owns a schema.
SETS: dict[str, MigrationSet] = {
    "orders": MigrationSet(
        Path(__file__).parent / "orders" / "migrations", "schema_migrations", lambda s: s.database_url
    ),
}


async def run(names: list[str], settings: config.Settings) -> dict[str, list[str]]:
    """Apply the named sets in order; return what each applied."""
    applied: dict[str, list[str]] = {}
    for name in names:
        chosen = SETS[name]
        # No prepared-statement cache: a transaction pooler (PgBouncer) may hand every statement another server.
        conn = await asyncpg.connect(chosen.dsn(settings), timeout=CONNECT_TIMEOUT_S, statement_cache_size=0)
        try:
            applied[name] = await migrate(conn, chosen.directory, chosen.table)
        finally:
            await conn.close()
        log.info("migrations %s: %s", name, ", ".join(applied[name]) or "up to date")
    return applied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", metavar="SET", help=f"one of {', '.join(SETS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sets if name not in SETS]
    if unknown:
        parser.error(f"unknown migration set {', '.join(unknown)}; known: {', '.join(SETS)}")
    settings = config.load()
    logs.setup("migrate", settings.log_level)
    try:
        asyncio.run(run(args.sets or list(SETS), settings))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        log.error("migrations failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
