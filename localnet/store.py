"""The cluster's state: accounts in memory, written through to PostgreSQL.

Schema ``localnet`` (created on start): ``meta`` (genesis), ``accounts``,
``transactions`` (the ledger: one row per landed signature), ``pending``
(received, not landed yet) and ``mints`` (symbols of created mints). Every
change reaches PostgreSQL first, in one transaction per batch (the accounts a
batch of landed transactions changed, their ledger rows and the removal of
their pending rows); only after the commit does the in-memory state change
and do subscribers hear of it. A restart loads the accounts back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from solders.pubkey import Pubkey

from venues.onchain import TOKEN_PROGRAM_ID, Account
from venues.token_layout import TOKEN_ACCOUNT_LEN

log = logging.getLogger(__name__)

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS localnet;
CREATE TABLE IF NOT EXISTS localnet.meta (
    key text PRIMARY KEY,
    value jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS localnet.accounts (
    address text PRIMARY KEY,
    owner text NOT NULL,
    lamports bigint NOT NULL,
    data bytea NOT NULL,
    executable boolean NOT NULL DEFAULT false,
    slot bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS localnet.transactions (
    signature text PRIMARY KEY,
    seq bigserial UNIQUE,
    slot bigint NOT NULL,
    block_time bigint NOT NULL,
    err jsonb,
    fee bigint NOT NULL,
    memo text,
    accounts text[] NOT NULL,
    meta text NOT NULL,
    deltas text NOT NULL,
    raw bytea NOT NULL,
    landed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS transactions_accounts ON localnet.transactions USING gin (accounts);
CREATE INDEX IF NOT EXISTS transactions_slot ON localnet.transactions (slot);
CREATE TABLE IF NOT EXISTS localnet.pending (
    signature text PRIMARY KEY,
    raw bytea NOT NULL,
    land_at double precision NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- lz4 instead of the default pglz for the values large enough to be compressed (DLMM bin arrays, rendered
-- metas): a third of a landing's statement time here. A server built without lz4 keeps pglz.
DO $$ BEGIN
    ALTER TABLE localnet.accounts ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE localnet.transactions ALTER COLUMN meta SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN NULL;
END $$;
CREATE TABLE IF NOT EXISTS localnet.mints (
    mint text PRIMARY KEY,
    symbol text,
    decimals integer NOT NULL
);
"""


@dataclass(frozen=True)
class LedgerRow:
    signature: str
    slot: int
    block_time: int
    err: Any  # the TransactionError as JSON, None when it succeeded
    fee: int
    memo: str | None
    accounts: list[str]
    meta: bytes  # getTransaction's "meta", rendered once
    deltas: bytes  # {owner: {mint: delta}} of token balances, for localnet_ledger
    raw: bytes


@dataclass(frozen=True)
class StoredTransaction:
    """What getTransaction reads of a landed transaction."""

    slot: int
    block_time: int
    meta: bytes | str  # the rendered JSON of its "meta"
    raw: bytes


# Landed transactions getTransaction answers from memory (a validator's recent blocks): the engine reads each one
# right after its notification (2,000 is 8 s at 250 landings/s; each holds its rendered meta and raw bytes, ~5 KB).
RECENT_TRANSACTIONS = 2_000

# A landing's writes in one statement: data-modifying WITH clauses run once each, to completion, in the
# statement's one transaction. Ledger rows keep their order (``seq``); a row's accounts travel as one
# space-separated text (base58 has no space), as unnest flattens arrays of arrays.
LANDING_SQL = """
WITH upserted AS (
    INSERT INTO localnet.accounts (address, owner, lamports, data, executable, slot)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::boolean[], $6::bigint[])
    ON CONFLICT (address) DO UPDATE SET owner = EXCLUDED.owner, lamports = EXCLUDED.lamports,
        data = EXCLUDED.data, executable = EXCLUDED.executable, slot = EXCLUDED.slot
    RETURNING 1
), deleted AS (
    DELETE FROM localnet.accounts WHERE address = ANY($7::text[]) RETURNING 1
), landed AS (
    INSERT INTO localnet.transactions (signature, slot, block_time, err, fee, memo, accounts, meta, deltas, raw)
    SELECT t.signature, t.slot, t.block_time, t.err::jsonb, t.fee, t.memo, string_to_array(t.accounts, ' '),
           t.meta, t.deltas, t.raw
    FROM unnest($8::text[], $9::bigint[], $10::bigint[], $11::text[], $12::bigint[], $13::text[], $14::text[],
                $15::text[], $16::text[], $17::bytea[])
         WITH ORDINALITY AS t(signature, slot, block_time, err, fee, memo, accounts, meta, deltas, raw, n)
    ORDER BY t.n
    RETURNING 1
), done AS (
    DELETE FROM localnet.pending WHERE signature = ANY($18::text[]) RETURNING 1
)
SELECT 1
"""


def _landing_args(batch: Batch, executable: set[Pubkey], slot: int) -> list[Any]:
    """LANDING_SQL's parameters, one array per column; ``executable`` the accounts known executable already."""
    kept = [(k, a) for k, a in batch.accounts.items() if a is not None]
    ledger = batch.ledger
    return [
        [str(k) for k, _ in kept],
        [str(a.owner) for _, a in kept],
        [a.lamports for _, a in kept],
        [a.data for _, a in kept],
        [k in batch.executable or k in executable for k, _ in kept],
        [slot for _ in kept],
        [str(k) for k, a in batch.accounts.items() if a is None],
        [r.signature for r in ledger],
        [r.slot for r in ledger],
        [r.block_time for r in ledger],
        [None if r.err is None else orjson.dumps(r.err).decode() for r in ledger],
        [r.fee for r in ledger],
        [r.memo for r in ledger],
        [" ".join(r.accounts) for r in ledger],
        [r.meta.decode() for r in ledger],
        [r.deltas.decode() for r in ledger],
        [r.raw for r in ledger],
        list(batch.pending_done),
    ]


@dataclass
class Batch:
    """Everything one commit writes."""

    accounts: dict[Pubkey, Account | None] = field(default_factory=dict)
    ledger: list[LedgerRow] = field(default_factory=list)
    pending_done: list[str] = field(default_factory=list)
    mints: list[tuple[str, str | None, int]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    executable: set[Pubkey] = field(default_factory=set)

    def empty(self) -> bool:
        return not (self.accounts or self.ledger or self.pending_done or self.mints or self.meta)


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.accounts: dict[Pubkey, Account] = {}
        self.executable: set[Pubkey] = set()
        self.by_program: dict[Pubkey, set[Pubkey]] = defaultdict(set)
        self.tokens_by_owner: dict[Pubkey, set[Pubkey]] = defaultdict(set)
        self.symbols: dict[Pubkey, str] = {}
        self.slot = 0
        self._pending_rows: list[tuple[str, bytes, float, asyncio.Future[None]]] = []
        self._pending_writer: asyncio.Task[None] | None = None
        self._recent: OrderedDict[str, StoredTransaction] = OrderedDict()

    # -- lifecycle -----------------------------------------------------------------

    async def migrate(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('localnet.schema'))")
            await conn.execute(SCHEMA)

    async def load(self) -> None:
        rows = await self.pool.fetch("SELECT address, owner, lamports, data, executable FROM localnet.accounts")
        for row in rows:
            key = Pubkey.from_string(row["address"])
            self._apply(key, Account(Pubkey.from_string(row["owner"]), bytes(row["data"]), row["lamports"]))
            if row["executable"]:
                self.executable.add(key)
        for row in await self.pool.fetch("SELECT mint, symbol FROM localnet.mints WHERE symbol IS NOT NULL"):
            self.symbols[Pubkey.from_string(row["mint"])] = row["symbol"]
        log.info("accounts loaded", extra={"accounts": len(self.accounts)})

    async def get_meta(self, key: str) -> Any:
        raw = await self.pool.fetchval("SELECT value FROM localnet.meta WHERE key = $1", key)
        return None if raw is None else orjson.loads(raw)

    # -- reads ---------------------------------------------------------------------

    def get(self, key: Pubkey) -> Account | None:
        return self.accounts.get(key)

    def program_accounts(self, program: Pubkey) -> Iterable[Pubkey]:
        return self.by_program.get(program, ())

    def token_accounts_of(self, owner: Pubkey) -> Iterable[Pubkey]:
        return self.tokens_by_owner.get(owner, ())

    # -- writes --------------------------------------------------------------------

    def _apply(self, key: Pubkey, account: Account | None) -> None:
        old = self.accounts.get(key)
        if old is not None:
            self.by_program[old.owner].discard(key)
            if old.owner == TOKEN_PROGRAM_ID and len(old.data) == TOKEN_ACCOUNT_LEN:
                self.tokens_by_owner[Pubkey(old.data[32:64])].discard(key)
        if account is None:
            self.accounts.pop(key, None)
            return
        self.accounts[key] = account
        self.by_program[account.owner].add(key)
        if account.owner == TOKEN_PROGRAM_ID and len(account.data) == TOKEN_ACCOUNT_LEN:
            self.tokens_by_owner[Pubkey(account.data[32:64])].add(key)

    async def commit(self, batch: Batch) -> None:
        """One PostgreSQL transaction; the in-memory state changes only once it committed.

        The accounts, the ledger rows and the pending rows a landing writes go as one statement (its own
        transaction, one round trip); the rare batches with mints or genesis meta add their statements to it
        inside an explicit transaction."""
        if batch.empty():
            return
        args = _landing_args(batch, self.executable, self.slot)
        if batch.mints or batch.meta:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(LANDING_SQL, *args)
                if batch.mints:
                    await conn.executemany(
                        """INSERT INTO localnet.mints (mint, symbol, decimals) VALUES ($1, $2, $3)
                           ON CONFLICT (mint) DO UPDATE SET symbol = EXCLUDED.symbol""",
                        batch.mints,
                    )
                for key, value in batch.meta.items():
                    await conn.execute(
                        """INSERT INTO localnet.meta (key, value) VALUES ($1, $2::jsonb)
                           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""",
                        key,
                        orjson.dumps(value).decode(),
                    )
        else:
            await self.pool.execute(LANDING_SQL, *args)
        for row in batch.ledger:
            self._recent[row.signature] = StoredTransaction(row.slot, row.block_time, row.meta, row.raw)
        while len(self._recent) > RECENT_TRANSACTIONS:
            self._recent.popitem(last=False)
        for address, account in batch.accounts.items():
            self._apply(address, account)
        self.executable |= batch.executable
        for mint, symbol, _ in batch.mints:
            if symbol:
                self.symbols[Pubkey.from_string(mint)] = symbol

    # -- pending transactions --------------------------------------------------------

    async def add_pending(self, signature: str, raw: bytes, land_at: float) -> None:
        """Durably queue a received transaction; concurrent calls share one INSERT round trip."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_rows.append((signature, raw, land_at, done))
        if self._pending_writer is None or self._pending_writer.done():
            self._pending_writer = asyncio.create_task(self._write_pending())
        await done

    async def _write_pending(self) -> None:
        while self._pending_rows:
            rows, self._pending_rows = self._pending_rows, []
            try:
                await self.pool.executemany(
                    "INSERT INTO localnet.pending (signature, raw, land_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    [(sig, raw, land_at) for sig, raw, land_at, _ in rows],
                )
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
                for *_, done in rows:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for *_, done in rows:
                if not done.done():
                    done.set_result(None)

    async def load_pending(self) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT signature, raw, land_at FROM localnet.pending ORDER BY land_at")

    async def drop_pending(self, signatures: list[str]) -> None:
        if signatures:
            await self.pool.execute("DELETE FROM localnet.pending WHERE signature = ANY($1::text[])", signatures)

    # -- the ledger ------------------------------------------------------------------

    async def statuses(self, signatures: list[str]) -> dict[str, tuple[int, Any]]:
        rows = await self.pool.fetch(
            "SELECT signature, slot, err FROM localnet.transactions WHERE signature = ANY($1::text[])", signatures
        )
        return {r["signature"]: (r["slot"], None if r["err"] is None else orjson.loads(r["err"])) for r in rows}

    async def recent_signatures(self, since_slot: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT signature, slot, err FROM localnet.transactions WHERE slot >= $1", since_slot
        )

    async def transaction(self, signature: str) -> StoredTransaction | None:
        """getTransaction's row: from memory for the last ``RECENT_TRANSACTIONS`` landed here, else the ledger."""
        recent = self._recent.get(signature)
        if recent is not None:
            return recent
        row = await self.pool.fetchrow(
            "SELECT slot, block_time, meta, raw FROM localnet.transactions WHERE signature = $1", signature
        )
        if row is None:
            return None
        return StoredTransaction(row["slot"], row["block_time"], row["meta"], bytes(row["raw"]))

    async def signatures_for(
        self, address: str, limit: int, before: str | None, until: str | None
    ) -> list[asyncpg.Record] | None:
        """Newest first; None when ``before`` or ``until`` is not a landed signature of this ledger."""
        bounds = {}
        for name, sig in (("before", before), ("until", until)):
            if sig is not None:
                seq = await self.pool.fetchval("SELECT seq FROM localnet.transactions WHERE signature = $1", sig)
                if seq is None:
                    return None if name == "before" else []
                bounds[name] = seq
        return await self.pool.fetch(
            """SELECT signature, slot, block_time, err, memo FROM localnet.transactions
               WHERE accounts @> ARRAY[$1]::text[]
                 AND ($2::bigint IS NULL OR seq < $2) AND ($3::bigint IS NULL OR seq > $3)
               ORDER BY seq DESC LIMIT $4""",
            address,
            bounds.get("before"),
            bounds.get("until"),
            limit,
        )

    async def ledger(self, address: str | None, memo: str | None, limit: int, after_seq: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            """SELECT seq, signature, slot, block_time, err, fee, memo, deltas FROM localnet.transactions
               WHERE ($1::text IS NULL OR accounts @> ARRAY[$1]::text[])
                 AND ($2::text IS NULL OR memo LIKE '%' || $2 || '%') AND seq > $4
               ORDER BY seq LIMIT $3""",
            address,
            memo,
            limit,
            after_seq,
        )

    async def counts(self) -> asyncpg.Record:
        return await self.pool.fetchrow(
            """SELECT count(*) FILTER (WHERE err IS NULL) AS landed, count(*) FILTER (WHERE err IS NOT NULL) AS failed,
                      (SELECT count(*) FROM localnet.pending) AS pending
               FROM localnet.transactions"""
        )
