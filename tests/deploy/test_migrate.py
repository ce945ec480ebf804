"""Migrations as their own step, with their own lock, behind a transaction pooler.

A private PgBouncer in transaction mode (every transaction may get another
server connection, as in front of a managed PostgreSQL) sits in front of a
database of this test's own on the machine's PostgreSQL. Concurrent migrators
apply each file exactly once; no advisory lock outlives its transaction; the
``python -m services.migrate`` entry point (the orders pods' init container)
migrates and then finds nothing to do.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.common.migrate import lock_key, migrate
from tests.deploy.conftest import ROOT, free_port, program
from tests.support.infra import PG_ADMIN_URL

MIGRATORS = 4


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name = f"deploy_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def pgbouncer(database: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of ``database``; yields its URL."""
    binary = program("pgbouncer", "apt-get install -y pgbouncer (Debian's package)")
    base = Path(tempfile.mkdtemp(prefix="dexengine-pgbouncer-"))
    port = free_port()
    (base / "userlist.txt").write_text('"postgres" ""\n')
    (base / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{database} = host=127.0.0.1 port=5432 dbname={database} user=postgres\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {base}/userlist.txt\n"
        "pool_mode = transaction\ndefault_pool_size = 3\nmax_client_conn = 50\n"
        f"logfile = {base}/pgbouncer.log\npidfile = {base}/pgbouncer.pid\n"
    )
    shutil.chown(base, "postgres", "postgres")
    for path in base.iterdir():
        shutil.chown(path, "postgres", "postgres")
    argv = [binary, str(base / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        argv = ["runuser", "-u", "postgres", "--", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not _listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, (base / "pgbouncer.log").read_text()
            time.sleep(0.1)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def write_migrations(directory: Path) -> None:
    directory.mkdir()
    (directory / "001_a.sql").write_text("CREATE TABLE a (id int PRIMARY KEY);")
    # Slow enough that the migrators overlap and have to wait for each other.
    (directory / "002_b.sql").write_text("SELECT pg_sleep(0.3); CREATE TABLE b (id int PRIMARY KEY);")
    (directory / "003_c.sql").write_text("ALTER TABLE a ADD COLUMN note text;")


async def test_concurrent_migrators_behind_a_transaction_pooler_apply_each_file_once(
    pgbouncer: str, database: str, tmp_path: Path
) -> None:
    write_migrations(tmp_path / "migrations")
    conns = [await asyncpg.connect(pgbouncer, statement_cache_size=0) for _ in range(MIGRATORS)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(migrate(c, tmp_path / "migrations", "ledger") for c in conns)), timeout=60
        )
    finally:
        for conn in conns:
            await conn.close()
    applied = sorted(name for names in results for name in names)
    assert applied == ["001_a.sql", "002_b.sql", "003_c.sql"], results
    direct = await asyncpg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}")
    try:
        assert [r["name"] for r in await direct.fetch("SELECT name FROM ledger ORDER BY name")] == applied
        assert await direct.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_name = 'a'") == 2
        # Transaction locks die with their transactions: nothing is left held on a pooled server connection.
        held = await direct.fetch(
            "SELECT * FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2", *lock_key("ledger")
        )
        assert held == []
    finally:
        await direct.close()


async def test_the_migration_step_runs_through_the_pooler_then_has_nothing_to_do(pgbouncer: str) -> None:
    env = {**os.environ, "DATABASE_URL": pgbouncer}
    for expected in ("001_orders.sql", "up to date"):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.migrate", "orders"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"migrations orders: {expected}" in done.stdout + done.stderr


def test_each_ledger_has_its_own_lock() -> None:
    assert lock_key("schema_migrations") != lock_key("other_migrations")
    assert all(0 <= part < 2**31 for part in lock_key("schema_migrations"))
