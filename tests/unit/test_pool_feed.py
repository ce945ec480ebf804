"""The router's pool feed with fakes for the cluster: an account update marks the pools that read it
stale and tells the listeners, nothing is decoded until a pool is read, and what is read is what an
eager decode of the latest accounts gives (the quotes do not change)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from solders.pubkey import Pubkey

from services.router.pool_feed import PoolFeed
from venues.onchain import (
    VENUE_PROGRAMS,
    Account,
    PoolSnapshot,
    decode_pool,
    is_pool_account,
    mint_account,
    pool_accounts,
)
from venues.pools import METEORA, RAYDIUM, seed_pools
from venues.tokens import SOL, TOKENS, USDC


class FakeStream:
    def __init__(self) -> None:
        self.hooks: list[Any] = []
        self.watched: list[Pubkey] = []

    def on_connect(self, hook: Any) -> None:
        self.hooks.append(hook)

    async def account(self, pubkey: Pubkey, handler: Any) -> None:
        self.watched.append(pubkey)


class FakeRpc:
    """getMultipleAccounts from a dict of accounts (the cluster's)."""

    def __init__(self, accounts: dict[Pubkey, Account]) -> None:
        self.accounts = accounts

    async def get_multiple_accounts(self, keys: list[Pubkey], **_: Any) -> Any:
        return SimpleNamespace(value=[self.accounts.get(k) for k in keys])


def chain() -> tuple[dict[Pubkey, Account], dict[str, Pubkey]]:
    """The seeded pools' accounts and the SOL/USDC pools' addresses by venue."""
    accounts = {Pubkey.from_string(t.mint): mint_account(t.decimals) for t in TOKENS.values()}
    addresses: dict[str, Pubkey] = {}
    for (venue, mints), pool in seed_pools().items():
        a, b = pool.mints
        address, own = pool_accounts(pool, (TOKENS[a].decimals, TOKENS[b].decimals))  # type: ignore[arg-type]
        accounts.update(own)
        if mints == frozenset((SOL.mint, USDC.mint)):
            addresses[venue] = address
    return accounts, addresses


async def loaded(accounts: dict[Pubkey, Account]) -> PoolFeed:
    """A feed loaded as on connection: the venue programs' accounts, then what the pools need."""
    feed = PoolFeed(FakeRpc(accounts), FakeStream())  # type: ignore[arg-type]
    feed.accounts.update({k: a for k, a in accounts.items() if a.owner in VENUE_PROGRAMS.values()})
    await feed._resolve([k for k, a in feed.accounts.items() if is_pool_account(a)])
    feed.ready.set()
    return feed


def swapped(venue: str, amount: int) -> dict[Pubkey, Account]:
    """The accounts of the seeded SOL/USDC pool of ``venue`` after a swap of ``amount`` lamports in."""
    pool = seed_pools()[(venue, frozenset((SOL.mint, USDC.mint)))]
    after = pool.swap(SOL.mint, amount, time.time()).state
    a, b = after.mints
    _, own = pool_accounts(after, (TOKENS[a].decimals, TOKENS[b].decimals))
    return own


def quotes(feed: PoolFeed) -> list[Any]:
    now = time.time()
    return [
        (p.address, p.reserves, p.pool.swap(SOL.mint, 10**9, now).amount_out)
        for venue in (RAYDIUM, METEORA)
        for p in feed.pools_for(venue, SOL.mint, USDC.mint, now)
    ]


async def test_an_update_is_decoded_when_read_once_and_reads_what_an_eager_decode_gives() -> None:
    accounts, addresses = chain()
    feed = await loaded(accounts)
    told: list[list[PoolSnapshot]] = []
    feed.listeners.append(lambda snapshots, _: told.append(snapshots))
    before = quotes(feed)
    decodes = feed.decodes

    changed = {k: a for venue in (RAYDIUM, METEORA) for k, a in swapped(venue, 200 * 10**9).items() if accounts[k] != a}
    assert len(changed) >= 5  # each pool's state or bin arrays, and vaults
    for key, account in changed.items():
        accounts[key] = account
        feed._apply(key, account)
    assert feed.decodes == decodes  # nothing decoded yet
    assert feed.stale == set(addresses.values())
    # Each update told the listeners which pools it changed.
    assert {s.address for snapshots in told for s in snapshots} == set(addresses.values())

    after = quotes(feed)
    assert feed.decodes == decodes + 2  # once per pool, however many of its accounts changed
    assert after != before
    eager = {a: decode_pool(a, accounts) for a in addresses.values()}
    assert [feed.pools[a] for a in addresses.values()] == list(eager.values())
    fresh = await loaded(accounts)
    assert after == quotes(fresh)
    quotes(feed)
    assert feed.decodes == decodes + 2  # nothing changed since: nothing decoded


async def test_an_account_no_pool_reads_marks_nothing() -> None:
    accounts, _ = chain()
    feed = await loaded(accounts)
    feed._apply(Pubkey.new_unique(), mint_account(6))
    assert not feed.stale


def test_a_bin_array_is_decoded_again_only_when_its_data_changed(monkeypatch: Any) -> None:
    from venues import dlmm_layout

    accounts, addresses = chain()
    decoded: list[bytes] = []
    decode = dlmm_layout.decode_bin_array

    def counted(data: bytes) -> dlmm_layout.BinArray:
        decoded.append(data)
        return decode(data)

    monkeypatch.setattr(dlmm_layout, "decode_bin_array", counted)
    cache: dict[Any, Any] = {}
    first = decode_pool(addresses[METEORA], accounts, cache)
    arrays = len(decoded)
    assert arrays == len(first.bin_arrays)
    # Copies of the same accounts (as a new read gives): nothing decoded again, the same snapshot.
    copies = {k: Account(a.owner, bytes(bytearray(a.data)), a.lamports) for k, a in accounts.items()}
    assert decode_pool(addresses[METEORA], copies, cache) == first
    assert len(decoded) == arrays
    # A swap changes some bin arrays: those alone are decoded, and the snapshot is what no cache gives.
    copies.update(swapped(METEORA, 200 * 10**9))
    after = decode_pool(addresses[METEORA], copies, cache)
    changed = sum(copies[k].data != accounts[k].data for k in first.bin_arrays.values())
    assert 0 < len(decoded) - arrays == changed < arrays
    assert after == decode_pool(addresses[METEORA], copies)
