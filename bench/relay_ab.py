"""The outbox relay's claim, old against new, in one process: ``python -m bench.relay_ab [BATCH ROWS ROUNDS]``.

Old: BEGIN; ``SELECT … FOR UPDATE SKIP LOCKED``; publish; ``DELETE … = ANY``; COMMIT.
New (:mod:`services.orders.relay`): BEGIN; ``DELETE … RETURNING``; publish; COMMIT.

Both publish to the real RabbitMQ (prefix ``relayab.``) from a real PostgreSQL
(database ``relay_ab``, created afresh), alternating which goes first each
round, so a busy machine slows both alike. Per outbox row: CPU of this
process (the relay's Python side) and of its PostgreSQL backend. ``BATCH``
rows are inserted, then one batch published, ``ROWS / BATCH`` times a round.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import asyncpg

from bench.procstat import cpu_seconds
from services.common import config
from services.orders import relay as relaymod

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = "relay_ab"
OLD_CLAIM = (
    "SELECT id, order_id, kind, payload, headers, created_at FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
PAYLOAD = '{"orderId": "x", "status": "routing", "seq": 2, "data": {}}'


class OldRelay(relaymod.OutboxRelay):
    async def publish_batch(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(OLD_CLAIM, self.settings.outbox_batch)
            if not rows:
                return 0
            await asyncio.gather(*(self._publish(row) for row in rows))
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])
        return len(rows)


async def run(batch: int, rows: int, rounds: int) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    os.environ.update({"DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{DATABASE}", "AMQP_PREFIX": "relayab."})
    settings = config.load()
    writer = await asyncpg.connect(settings.database_url)
    await writer.execute(
        """CREATE TABLE outbox (id bigserial PRIMARY KEY, order_id uuid NOT NULL, kind text NOT NULL,
           payload jsonb NOT NULL, headers jsonb NOT NULL DEFAULT '{}'::jsonb,
           created_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
    )
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    backend = int(await pool.fetchval("SELECT pg_backend_pid()"))
    relays: dict[str, relaymod.OutboxRelay] = {
        "old": OldRelay(settings, pool),
        "new": relaymod.OutboxRelay(settings, pool),
    }
    for relay in relays.values():
        await relay._connect()
    per_row: dict[str, list[tuple[float, float]]] = {name: [] for name in relays}
    try:
        for n in range(rounds):
            for name in ("old", "new") if n % 2 == 0 else ("new", "old"):
                own = pg = 0.0
                for _ in range(rows // batch):
                    await writer.executemany(
                        "INSERT INTO outbox (order_id, kind, payload) VALUES (gen_random_uuid(), 'event', $1::jsonb)",
                        [(PAYLOAD,)] * batch,
                    )
                    cpu0, pg0 = time.process_time(), cpu_seconds(backend) or 0.0
                    assert await relays[name].publish_batch() == batch
                    own += time.process_time() - cpu0
                    pg += (cpu_seconds(backend) or 0.0) - pg0
                per_row[name].append((own * 1e6 / rows, pg * 1e6 / rows))
    finally:
        for relay in relays.values():
            if relay.connection is not None:
                await relay.connection.close()
        await pool.close()
        await writer.close()
    for name, values in per_row.items():
        own_us = sorted(v[0] for v in values)
        pg_us = sorted(v[1] for v in values)
        sys.stdout.write(
            f"{name}: {batch}-row batches: relay µs/row median {own_us[len(own_us) // 2]:.0f} (min {own_us[0]:.0f}); "
            f"its PostgreSQL backend µs/row median {pg_us[len(pg_us) // 2]:.0f} (min {pg_us[0]:.0f}); "
            f"{rounds} rounds × {rows} rows\n"
        )


def main() -> None:
    batch, rows, rounds = (int(a) for a in (sys.argv[1:4] + ["1", "300", "8"][len(sys.argv[1:4]) :]))
    asyncio.run(run(batch, rows, rounds))


if __name__ == "__main__":
    main()
