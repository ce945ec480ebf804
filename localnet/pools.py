"""Pools as the programs see them: decoded from accounts (cached), and a swap written back.

``PoolCache`` keeps each pool's decoded ``PoolSnapshot`` together with the
very account objects it was decoded from; a lookup through a ``View`` reuses it
only while every one of those accounts is still the same object (nothing wrote
to them), else it decodes again. ``write_swap`` turns a venue math ``Fill`` into
the new pool state accounts (CPMM fees owed; DLMM active bin, volatility and
the changed bins), ``move_reserves`` changes the vault balances directly (the
market's own trades, which have no on-chain counterparty).
"""

from __future__ import annotations

from dataclasses import replace

from solders.pubkey import Pubkey

from localnet.bank import View
from venues import cpmm_layout as cpmm
from venues import dlmm_layout as dlmm
from venues.dlmm import DlmmPool
from venues.fills import Fill
from venues.onchain import Account, PoolSnapshot, decode_pool, dependencies, is_pool_account
from venues.raydium import ConstantProductPool
from venues.token_layout import set_token_amount, token_amount

Entry = tuple[PoolSnapshot, tuple[tuple[Pubkey, Account | None], ...]]
KEEP = 3  # versions per pool: the committed one and those of in-flight simulations


class PoolCache:
    def __init__(self) -> None:
        self.entries: dict[Pubkey, list[Entry]] = {}

    def get(self, view: View, address: Pubkey) -> PoolSnapshot:
        """The pool as ``view`` has it; KeyError/LayoutError when it is not a complete pool."""
        for snapshot, deps in self.entries.get(address, ()):
            if all(view.get(k) is a for k, a in deps):
                return snapshot
        state = view.get(address)
        if state is None or not is_pool_account(state):
            raise KeyError(f"{address} is not a pool")
        accounts: dict[Pubkey, Account] = {address: state}
        for key in dependencies(address, state):
            account = view.get(key)
            if account is not None:
                accounts[key] = account
        snapshot = decode_pool(address, accounts)
        self.remember(view, snapshot)
        return snapshot

    def remember(self, view: View, snapshot: PoolSnapshot) -> None:
        versions = self.entries.setdefault(snapshot.address, [])
        versions.insert(0, (snapshot, tuple((k, view.get(k)) for k in snapshot.accounts)))
        del versions[KEEP:]

    def forget(self, address: Pubkey) -> None:
        self.entries.pop(address, None)


def vault_of(snapshot: PoolSnapshot, mint: Pubkey) -> Pubkey:
    side = 0 if mint == snapshot.mints[0] else 1
    if snapshot.venue == "raydium":
        return snapshot.keys["vault_0" if side == 0 else "vault_1"]
    return snapshot.keys["reserve_x" if side == 0 else "reserve_y"]


def write_swap(view: View, snapshot: PoolSnapshot, mint_in: Pubkey, fill: Fill) -> PoolSnapshot:
    """Write the pool's state after ``fill`` (not the token balances); returns the new snapshot."""
    side_in = 0 if mint_in == snapshot.mints[0] else 1
    reserves = list(snapshot.reserves)
    new_pool = fill.state
    if isinstance(new_pool, ConstantProductPool):
        state_account = view.get(snapshot.address)
        config_account = view.get(snapshot.keys["amm_config"])
        assert state_account is not None and config_account is not None
        state = cpmm.decode_pool_state(state_account.data)
        config = cpmm.decode_amm_config(config_account.data)
        withheld = fill.fee * (config.protocol_fee_rate + config.fund_fee_rate) // cpmm.FEE_RATE_DENOMINATOR
        protocol = fill.fee * config.protocol_fee_rate // cpmm.FEE_RATE_DENOMINATOR
        fund = withheld - protocol
        if side_in == 0:
            state = replace(
                state,
                protocol_fees_token_0=state.protocol_fees_token_0 + protocol,
                fund_fees_token_0=state.fund_fees_token_0 + fund,
            )
        else:
            state = replace(
                state,
                protocol_fees_token_1=state.protocol_fees_token_1 + protocol,
                fund_fees_token_1=state.fund_fees_token_1 + fund,
            )
        view.set(snapshot.address, Account(state_account.owner, cpmm.encode_pool_state(state), state_account.lamports))
        reserves[side_in] += fill.amount_in - withheld
    else:
        assert isinstance(new_pool, DlmmPool) and isinstance(snapshot.pool, DlmmPool)
        old_pool = snapshot.pool
        pair_account = view.get(snapshot.address)
        assert pair_account is not None
        pair = dlmm.decode_lb_pair(pair_account.data)
        vol = new_pool.volatility
        pair = replace(
            pair,
            active_id=new_pool.active_id,
            volatility_accumulator=vol.accumulator,
            volatility_reference=vol.reference,
            index_reference=vol.index_reference,
            last_update_timestamp=int(vol.last_update),
        )
        view.set(snapshot.address, Account(pair_account.owner, dlmm.encode_lb_pair(pair), pair_account.lamports))
        low, high = sorted((old_pool.active_id, new_pool.active_id))
        changed: dict[int, dict[int, tuple[int, int]]] = {}
        for bin_id in range(low, high + 1):
            amounts = new_pool.bins.get(bin_id)
            if amounts is not None and amounts != old_pool.bins.get(bin_id):
                changed.setdefault(dlmm.bin_array_index(bin_id), {})[bin_id] = amounts
        for index, patch in changed.items():
            key = snapshot.bin_arrays[index]
            array = view.get(key)
            assert array is not None
            view.set(key, Account(array.owner, dlmm.patch_bin_array(array.data, patch), array.lamports))
        reserves[side_in] += fill.amount_in
    reserves[1 - side_in] -= fill.amount_out
    return replace(snapshot, pool=new_pool, reserves=(reserves[0], reserves[1]))


def touched_bin_arrays(before: DlmmPool, after: DlmmPool) -> set[int]:
    low, high = sorted((before.active_id, after.active_id))
    return {dlmm.bin_array_index(b) for b in range(low, high + 1)}


def move_reserves(view: View, snapshot: PoolSnapshot, mint_in: Pubkey, amount_in: int, amount_out: int) -> None:
    """Vault balances after a trade with no on-chain counterparty (the market's own)."""
    mint_out = snapshot.mints[1] if mint_in == snapshot.mints[0] else snapshot.mints[0]
    for mint, delta in ((mint_in, amount_in), (mint_out, -amount_out)):
        key = vault_of(snapshot, mint)
        account = view.get(key)
        assert account is not None
        amount = token_amount(account.data) + delta
        lamports = account.lamports + (delta if account.data[109] == 1 else 0)
        view.set(key, Account(account.owner, set_token_amount(account.data, amount), lamports))
