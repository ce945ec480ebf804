"""The venues' pools as the cluster holds them, kept fresh by subscriptions.

On every (re)connection of the PubSub stream the feed first subscribes
(programSubscribe to both venue programs, accountSubscribe to each pool's
token vaults and mints, which other programs own), then loads everything with
getProgramAccounts and getMultipleAccounts: an update that races the load is
applied after it, never lost. An account update only stores the account and
marks the pools that read it stale, then tells the listeners (the
limit/sniper trigger) which pools changed; a stale pool is decoded when it is
next read (``pools``, ``by_pair``, ``pools_for``: a quote, a trigger's
evaluation), once for however many of its accounts changed meanwhile, and a
DLMM pool's bin arrays are decoded again only if their own account changed.
What is read is always decoded from the latest accounts, so a quote is the
one an eager decode would give. The router holds no market of its own: two
replicas fed by the same cluster quote the same pools identically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey

from services.common.cluster import ClusterStream
from venues.onchain import (
    VENUE_PROGRAMS,
    Account,
    BinArrayCache,
    PoolSnapshot,
    decode_pool,
    dependencies,
    is_pool_account,
    swap_accounts,
)

log = logging.getLogger(__name__)
MAX_ACCOUNTS_PER_CALL = 100
# Told the pools that changed and when the update arrived (time.time()). The snapshots name the pools
# (venue, address, mints) as last decoded; their state is read through the feed, which decodes what changed.
PoolListener = Callable[[list[PoolSnapshot], float], None]


def _account(value: Any) -> Account:
    return Account(owner=value.owner, data=bytes(value.data), lamports=value.lamports)


class PoolFeed:
    def __init__(self, rpc: AsyncClient, stream: ClusterStream) -> None:
        self.rpc = rpc
        self.stream = stream
        self.accounts: dict[Pubkey, Account] = {}
        self._pools: dict[Pubkey, PoolSnapshot] = {}  # as last decoded
        self.stale: set[Pubkey] = set()  # pools with an account changed since they were decoded
        self.bin_arrays: BinArrayCache = {}
        self.readers: dict[Pubkey, set[Pubkey]] = defaultdict(set)  # account -> pools decoded from it
        self.watched: set[Pubkey] = set()  # accounts with an accountSubscribe on this connection
        self._by_pair: dict[tuple[str, frozenset[str]], list[PoolSnapshot]] = {}
        self.decodes = 0
        self.ready = asyncio.Event()
        self.updates = 0
        self.listeners: list[PoolListener] = []
        stream.on_connect(self._on_connect)

    # -- loading ----------------------------------------------------------
    async def _on_connect(self) -> None:
        self.ready.clear()
        self.watched.clear()
        for program in VENUE_PROGRAMS.values():
            await self.stream.program(program, self._on_program_update)
        for program in VENUE_PROGRAMS.values():
            resp = await self.rpc.get_program_accounts(program, encoding="base64")
            for keyed in resp.value:
                self.accounts[keyed.pubkey] = _account(keyed.account)
        await self._resolve([a for a, acc in self.accounts.items() if is_pool_account(acc)])
        self.ready.set()
        log.info("pool feed loaded", extra={"pools": len(self.pools)})
        self._tell(list(self.pools.values()), time.time())  # catch up: whatever moved while disconnected

    async def _fetch(self, addresses: Iterable[Pubkey]) -> None:
        wanted = list(dict.fromkeys(addresses))
        for i in range(0, len(wanted), MAX_ACCOUNTS_PER_CALL):
            chunk = wanted[i : i + MAX_ACCOUNTS_PER_CALL]
            resp = await self.rpc.get_multiple_accounts(chunk, encoding="base64")
            for address, value in zip(chunk, resp.value, strict=True):
                if value is not None:
                    self.accounts[address] = _account(value)

    async def _resolve(self, pools: list[Pubkey]) -> None:
        """Fetch and watch what each pool state account needs, then decode the pools."""
        needed: list[Pubkey] = []
        for address in pools:
            needed.extend(dependencies(address, self.accounts[address]))
        outside = [a for a in needed if a not in self.watched and not self._owned_by_venue(a)]
        for address in outside:
            self.watched.add(address)
            await self.stream.account(address, self._account_handler(address))
        await self._fetch(a for a in needed if a not in self.accounts or a in outside)
        for address in pools:
            self._decode(address)
        self._index()
        if self.ready.is_set():
            self._tell([self._pools[a] for a in pools if a in self._pools], time.time())

    def _owned_by_venue(self, address: Pubkey) -> bool:
        account = self.accounts.get(address)
        return account is not None and account.owner in VENUE_PROGRAMS.values()

    def _decode(self, address: Pubkey) -> bool:
        """Decode the pool from the accounts held now; False (the last snapshot kept) if it cannot be yet."""
        self.stale.discard(address)
        self.decodes += 1
        try:
            snapshot = decode_pool(address, self.accounts, self.bin_arrays)
        except (KeyError, ValueError) as exc:
            log.warning("pool %s not decodable yet: %s", address, exc)
            return False
        old = self._pools.get(address)
        if old is not None:
            for account in old.accounts:
                self.readers[account].discard(address)
        self._pools[address] = snapshot
        for account in snapshot.accounts:
            self.readers[account].add(address)
        return True

    def _index(self) -> None:
        by_pair: dict[tuple[str, frozenset[str]], list[PoolSnapshot]] = defaultdict(list)
        for snapshot in self._pools.values():
            by_pair[(snapshot.venue, frozenset(str(m) for m in snapshot.mints))].append(snapshot)
        self._by_pair = dict(by_pair)

    def _refresh(self) -> None:
        """Decode the stale pools (each once, from the latest accounts)."""
        if not self.stale:
            return
        decoded = [address for address in list(self.stale) if self._decode(address)]
        if decoded:
            self._index()

    # -- updates ------------------------------------------------------------
    def _on_program_update(self, result: Any) -> None:
        keyed = result.value
        self._apply(keyed.pubkey, _account(keyed.account))

    def _account_handler(self, address: Pubkey) -> Callable[[Any], None]:
        return lambda result: self._on_account_update(address, result.value)

    def _on_account_update(self, address: Pubkey, value: Any) -> None:
        if value is not None:
            self._apply(address, _account(value))

    def _apply(self, address: Pubkey, account: Account) -> None:
        self.updates += 1
        self.accounts[address] = account
        if address not in self._pools and is_pool_account(account):
            asyncio.get_running_loop().create_task(self._resolve([address]))  # a new pool opened
            return
        touched = self.readers.get(address, set()) | ({address} if address in self._pools else set())
        if touched:
            self.stale.update(touched)  # decoded when read
            self._tell([self._pools[a] for a in touched], time.time())

    def _tell(self, snapshots: list[PoolSnapshot], at: float) -> None:
        for listener in self.listeners:
            try:
                listener(snapshots, at)
            except Exception:  # a listener's bug must not stop the feed
                log.exception("pool listener failed")

    # -- reading ------------------------------------------------------------
    @property
    def pools(self) -> dict[Pubkey, PoolSnapshot]:
        """Every pool, decoded from the latest accounts."""
        self._refresh()
        return self._pools

    @property
    def by_pair(self) -> dict[tuple[str, frozenset[str]], list[PoolSnapshot]]:
        """The pools by (venue, {mint, mint}), decoded from the latest accounts."""
        self._refresh()
        return self._by_pair

    def pools_for(self, venue: str, mint_in: str, mint_out: str, now: float | None = None) -> list[PoolSnapshot]:
        """Open pools of ``venue`` trading the pair."""
        at = time.time() if now is None else now
        found = self.by_pair.get((venue, frozenset((mint_in, mint_out))), [])
        return [p for p in found if p.open_time <= at] if mint_in != mint_out else []

    def swap_accounts_of(self, pools: Iterable[Pubkey]) -> dict[Pubkey, Account]:
        """The accounts a swap on each pool is built from (``swap_accounts``: its state, a DLMM pool's mints) as
        the feed holds them; a pool not decoded, or one of whose accounts is gone, gives none."""
        decoded = self.pools
        found: dict[Pubkey, Account] = {}
        for address in pools:
            snapshot = decoded.get(address)
            if snapshot is None:
                continue
            needed = swap_accounts(snapshot)
            held = {a: self.accounts[a] for a in needed if a in self.accounts}
            if len(held) == len(needed):
                found.update(held)
        return found

    def decimals(self, mint: str) -> int | None:
        for snapshot in self.pools.values():
            for m, d in zip(snapshot.mints, snapshot.decimals, strict=True):
                if str(m) == mint:
                    return d
        return None

    def has_pair(self, mint_in: str, mint_out: str) -> bool:
        return any(self.pools_for(venue, mint_in, mint_out) for venue in VENUE_PROGRAMS)
