"""Scenario control: JSON-RPC methods under ``localnet_`` (documented in README.md).

They change the world directly (no transaction, no ledger row), under the
same lock and PostgreSQL commit as everything else, and subscribers see the
accounts change.
"""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from localnet.bank import View, mint_decimals
from localnet.errors import invalid_params
from localnet.node import FUND_LAMPORTS, Node, whole_to_raw
from localnet.pools import vault_of
from localnet.rpc import Rpc, pubkey
from localnet.store import Batch
from venues import cpmm_layout as cpmm
from venues import dlmm_layout as dlmm
from venues.dlmm import DlmmPool, FeeParams, bin_for_price, gaussian_bins
from venues.onchain import Account, PoolSnapshot, mint_account, pool_accounts, pool_address_of
from venues.programs import METEORA, RAYDIUM
from venues.raydium import CPMM_TIERS_PPM, ConstantProductPool
from venues.token_layout import set_token_amount, token_amount


def options(params: list[Any]) -> dict[str, Any]:
    value = params[0] if params else {}
    if not isinstance(value, dict):
        raise invalid_params("Invalid params: expected one object of named parameters")
    return value


def decimal(value: Any, name: str) -> Decimal:
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise invalid_params(f"{name}: {value!r} is not a number") from None
    if not out.is_finite() or out <= 0:
        raise invalid_params(f"{name}: must be a positive number")
    return out


class Scenario:
    def __init__(self, node: Node, rpc: Rpc) -> None:
        self.node = node
        for name in (
            "createMint",
            "createPool",
            "addLiquidity",
            "removeLiquidity",
            "setPrice",
            "setOpenTime",
            "halt",
            "resume",
            "fund",
            "stats",
            "ledger",
            "pools",
        ):
            rpc.methods[f"localnet_{name}"] = getattr(self, name)

    def _decimals(self, view: View, mint: Pubkey, name: str) -> int:
        decimals = mint_decimals(view, mint)
        if decimals is None:
            raise invalid_params(f"{name}: {mint} is not a mint")
        return decimals

    def _mint(self, view: View, value: Any, name: str) -> Pubkey:
        """A mint by address or by symbol."""
        if isinstance(value, str):
            for mint, symbol in self.node.store.symbols.items():
                if symbol == value:
                    return mint
        key = pubkey(value)
        self._decimals(view, key, name)
        return key

    def _snapshot(self, view: View, value: Any) -> PoolSnapshot:
        key = pubkey(value)
        if key not in self.node.pools:
            raise invalid_params(f"pool: {key} is not a pool")
        return self.node.cache.get(view, key)

    # -- mints and pools -------------------------------------------------------------

    async def createMint(self, params: list[Any]) -> Any:
        opts = options(params)
        decimals = opts.get("decimals", 6)
        if not isinstance(decimals, int) or not 0 <= decimals <= 18:
            raise invalid_params("decimals: an integer in [0, 18]")
        symbol = opts.get("symbol")
        if symbol is not None and (not isinstance(symbol, str) or not symbol):
            raise invalid_params("symbol: a non-empty string")
        if symbol in self.node.store.symbols.values():
            raise invalid_params(f"symbol: {symbol} exists already")
        mint = Keypair().pubkey()
        async with self.node.lock:
            view = View(self.node.store.get)
            view.set(mint, mint_account(decimals, 0, self.node.faucet.pubkey()))
            await self.node.apply(view, Batch(mints=[(str(mint), symbol, decimals)]))
        return {"mint": str(mint), "symbol": symbol, "decimals": decimals}

    async def createPool(self, params: list[Any]) -> Any:
        opts = options(params)
        venue = opts.get("venue")
        if venue not in (RAYDIUM, METEORA):
            raise invalid_params('venue: "raydium" or "meteora"')
        mints = opts.get("mints")
        if not isinstance(mints, list) or len(mints) != 2:
            raise invalid_params("mints: two mints [base, quote]")
        open_time = opts.get("openTime", 0)
        if not isinstance(open_time, int) or open_time < 0:
            raise invalid_params("openTime: unix seconds")
        async with self.node.lock:
            view = View(self.node.store.get)
            base, quote = self._mint(view, mints[0], "mints[0]"), self._mint(view, mints[1], "mints[1]")
            if base == quote:
                raise invalid_params("mints: two different mints")
            db, dq = self._decimals(view, base, "mints[0]"), self._decimals(view, quote, "mints[1]")
            pool = self._cpmm(opts, base, quote, db, dq) if venue == RAYDIUM else self._dlmm(opts, base, quote, db, dq)
            try:
                address = pool_address_of(pool)
            except ValueError as exc:
                raise invalid_params(str(exc)) from None
            if view.get(address) is not None:
                raise invalid_params(f"pool {address} exists already (same mints and fee tier / bin step)")
            decimals = (db, dq)
            try:
                address, accounts = pool_accounts(pool, decimals, open_time)
            except ValueError as exc:
                raise invalid_params(str(exc)) from None
            for key, account in accounts.items():
                view.set(key, account)
            await self.node.apply(view)
            self.node.pools.add(address)
            snapshot = self.node.cache.get(View(self.node.store.get), address)
        return self._describe(snapshot)

    @staticmethod
    def _cpmm(opts: dict[str, Any], base: Pubkey, quote: Pubkey, db: int, dq: int) -> ConstantProductPool:
        """createPool's Raydium CPMM pool: ``reserves`` in whole tokens, or ``price`` and ``liquidity``."""
        fee = opts.get("feePpm", 2_500)
        if fee not in CPMM_TIERS_PPM:
            raise invalid_params(f"feePpm: one of {list(CPMM_TIERS_PPM)}")
        if "reserves" in opts:
            reserves = opts["reserves"]
            if not isinstance(reserves, list) or len(reserves) != 2:
                raise invalid_params("reserves: [base, quote] in whole tokens")
            ra = whole_to_raw(reserves[0], db, "reserves[0]")
            rb = whole_to_raw(reserves[1], dq, "reserves[1]")
        else:
            price = decimal(opts.get("price"), "price")
            liquidity = decimal(opts.get("liquidity"), "liquidity")
            rb = whole_to_raw(liquidity, dq, "liquidity")
            ra = int((liquidity / price).scaleb(db))
        if ra <= 0 or rb <= 0:
            raise invalid_params("reserves: both must be positive")
        return ConstantProductPool.cpmm("", str(base), str(quote), ra, rb, fee)

    def _dlmm(self, opts: dict[str, Any], base: Pubkey, quote: Pubkey, db: int, dq: int) -> DlmmPool:
        """createPool's Meteora DLMM pool: ``liquidity`` spread in a Gaussian around ``price``."""
        price = decimal(opts.get("price"), "price")
        bin_step = opts.get("binStep", 10)
        base_factor = opts.get("baseFactor", 10_000)
        width = opts.get("width", 150)
        sigma = float(opts.get("sigma", 25))
        if not isinstance(bin_step, int) or not 1 <= bin_step <= 400:
            raise invalid_params("binStep: 1 to 400")
        if not isinstance(base_factor, int) or not 1 <= base_factor < 65536:
            raise invalid_params("baseFactor: 1 to 65535")
        if not isinstance(width, int) or not 1 <= width <= 1000:
            raise invalid_params("width: 1 to 1000 bins each side")
        liquidity = decimal(opts.get("liquidity"), "liquidity")
        active = bin_for_price(price.scaleb(dq - db), bin_step)
        bins = gaussian_bins(active, bin_step, whole_to_raw(liquidity, dq, "liquidity"), sigma, width)
        return DlmmPool.create(
            "",
            str(base),
            str(quote),
            bin_step,
            active,
            bins,
            FeeParams(base_factor=base_factor),
            now=float(self.node.clock.block_time(self.node.slot())),
        )

    def _describe(self, snapshot: PoolSnapshot) -> dict[str, Any]:
        base, quote = snapshot.mints
        spot = snapshot.pool.spot_price(str(base)).scaleb(snapshot.decimals[0] - snapshot.decimals[1])
        return {
            "pool": str(snapshot.address),
            "venue": snapshot.venue,
            "mints": [str(base), str(quote)],
            "decimals": list(snapshot.decimals),
            "reserves": [str(r) for r in snapshot.reserves],
            "price": str(spot),
            "openTime": snapshot.open_time,
            "accounts": [str(k) for k in snapshot.accounts],
        }

    async def pools(self, params: list[Any]) -> Any:
        del params
        view = View(self.node.store.get)
        return [self._describe(self.node.cache.get(view, k)) for k in sorted(self.node.pools, key=bytes)]

    async def addLiquidity(self, params: list[Any]) -> Any:
        return await self._scale(params, +1)

    async def removeLiquidity(self, params: list[Any]) -> Any:
        return await self._scale(params, -1)

    async def _scale(self, params: list[Any], sign: int) -> Any:
        """Grow (or shrink) a pool's liquidity by ``fraction`` at its current price."""
        opts = options(params)
        fraction = decimal(opts.get("fraction"), "fraction")
        if sign < 0 and fraction >= 1:
            raise invalid_params("fraction: below 1 (a pool keeps some liquidity)")
        factor = 1 + sign * fraction
        async with self.node.lock:
            view = View(self.node.store.get)
            snapshot = self._snapshot(view, opts.get("pool"))
            if snapshot.venue == RAYDIUM:
                for mint, reserve in zip(snapshot.mints, snapshot.reserves, strict=True):
                    self._add_to_vault(view, vault_of(snapshot, mint), int(reserve * factor) - reserve)
            else:
                pool = snapshot.pool
                assert isinstance(pool, DlmmPool)
                changed: dict[int, dict[int, tuple[int, int]]] = {}
                for bin_id, (x, y) in pool.bins.items():
                    if x or y:
                        scaled = (int(x * factor), int(y * factor))
                        changed.setdefault(dlmm.bin_array_index(bin_id), {})[bin_id] = scaled
                for index, amounts in changed.items():
                    key = snapshot.bin_arrays[index]
                    array = view.get(key)
                    assert array is not None
                    view.set(key, Account(array.owner, dlmm.patch_bin_array(array.data, amounts), array.lamports))
                for side, mint in enumerate(snapshot.mints):
                    total = sum(v[side] for arr in changed.values() for v in arr.values())
                    self._add_to_vault(view, vault_of(snapshot, mint), total - snapshot.reserves[side])
            await self.node.apply(view)
            after = self.node.cache.get(View(self.node.store.get), snapshot.address)
        return self._describe(after)

    @staticmethod
    def _add_to_vault(view: View, key: Pubkey, delta: int) -> None:
        account = view.get(key)
        assert account is not None
        native = account.data[109] == 1
        view.set(
            key,
            Account(
                account.owner,
                set_token_amount(account.data, token_amount(account.data) + delta),
                account.lamports + (delta if native else 0),
            ),
        )

    async def setOpenTime(self, params: list[Any]) -> Any:
        opts = options(params)
        open_time = opts.get("openTime")
        if not isinstance(open_time, int) or open_time < 0:
            raise invalid_params("openTime: unix seconds")
        async with self.node.lock:
            view = View(self.node.store.get)
            snapshot = self._snapshot(view, opts.get("pool"))
            account = view.get(snapshot.address)
            assert account is not None
            if snapshot.venue == RAYDIUM:
                data = cpmm.encode_pool_state(replace(cpmm.decode_pool_state(account.data), open_time=open_time))
            else:
                data = dlmm.encode_lb_pair(replace(dlmm.decode_lb_pair(account.data), activation_point=open_time))
            view.set(snapshot.address, Account(account.owner, data, account.lamports))
            await self.node.apply(view)
            after = self.node.cache.get(View(self.node.store.get), snapshot.address)
        return self._describe(after)

    async def setPrice(self, params: list[Any]) -> Any:
        """``{"pool": addr, "price": "151.2"}`` or ``{"mints": [base, quote], "price": ...}`` (quote per base)."""
        opts = options(params)
        price = decimal(opts.get("price"), "price")
        async with self.node.lock:
            view = View(self.node.store.get)
            only = None
            if opts.get("pool") is not None:
                snapshot = self._snapshot(view, opts["pool"])
                only = snapshot.address
                base, quote = snapshot.mints
                if opts.get("mints"):
                    base = self._mint(view, opts["mints"][0], "mints[0]")
                    quote = snapshot.mints[1] if base == snapshot.mints[0] else snapshot.mints[0]
            else:
                mints = opts.get("mints")
                if not isinstance(mints, list) or len(mints) != 2:
                    raise invalid_params("pool or mints: [base, quote] is required")
                base, quote = self._mint(view, mints[0], "mints[0]"), self._mint(view, mints[1], "mints[1]")
            raw = price.scaleb(self._decimals(view, quote, "quote") - self._decimals(view, base, "base"))
            now = self.node.clock.block_time(self.node.slot())
            trades = self.node.market.set_price(view, list(self.node.pools), base, quote, raw, now, only)
            await self.node.apply(view)
            moved = [self._describe(self.node.cache.get(View(self.node.store.get), t.pool)) for t in trades]
        return {"moved": moved}

    # -- flow control ------------------------------------------------------------------

    async def halt(self, params: list[Any]) -> Any:
        del params
        self.node.halted = True
        return {"halted": True}

    async def resume(self, params: list[Any]) -> Any:
        del params
        self.node.halted = False
        self.node.wake.set()
        return {"halted": False}

    # -- wallets and the ledger ------------------------------------------------------------

    async def fund(self, params: list[Any]) -> Any:
        """``{"pubkey": ..., "sol": "10", "tokens": {mint or symbol: "1000"}}``; neither: the genesis funding."""
        if params and isinstance(params[0], str):
            opts: dict[str, Any] = {"pubkey": params[0], **(params[1] if len(params) > 1 else {})}
        else:
            opts = options(params)
        wallet = pubkey(opts.get("pubkey"))
        async with self.node.lock:
            view = View(self.node.store.get)
            if "sol" not in opts and "tokens" not in opts:
                lamports = FUND_LAMPORTS
                tokens = self.node.funding(view)
            else:
                lamports = whole_to_raw(opts.get("sol", 0), 9, "sol")
                raw_tokens = opts.get("tokens") or {}
                if not isinstance(raw_tokens, dict):
                    raise invalid_params("tokens: {mint: amount}")
                tokens = {}
                for name, amount in raw_tokens.items():
                    mint = self._mint(view, name, f"tokens.{name}")
                    tokens[mint] = whole_to_raw(amount, self._decimals(view, mint, name), f"tokens.{name}")
            self.node.credit(view, wallet, lamports, tokens)
            await self.node.apply(view)
        return {"pubkey": str(wallet), "lamports": lamports, "tokens": {str(m): str(a) for m, a in tokens.items()}}

    async def stats(self, params: list[Any]) -> Any:
        del params
        counts = await self.node.store.counts()
        return {
            "landed": counts["landed"],
            "failed": counts["failed"],
            "pending": len(self.node.pending),
            **self.node.stats(),
            "time": time.time(),
        }

    async def ledger(self, params: list[Any]) -> Any:
        """Landed transactions in landing order: ``{"address"?, "memo"?, "limit"? (1000), "afterSeq"? (0)}``."""
        opts = options(params)
        address = str(pubkey(opts["address"])) if opts.get("address") else None
        memo = opts.get("memo")
        limit = int(opts.get("limit", 1000))
        if not 1 <= limit <= 10_000:
            raise invalid_params("limit: 1 to 10000")
        rows = await self.node.store.ledger(address, memo, limit, int(opts.get("afterSeq", 0)))
        return [
            {
                "seq": r["seq"],
                "signature": r["signature"],
                "slot": r["slot"],
                "blockTime": r["block_time"],
                "err": None if r["err"] is None else orjson.loads(r["err"]),
                "fee": r["fee"],
                "memo": r["memo"],
                "tokenDeltas": orjson.loads(r["deltas"]),
            }
            for r in rows
        ]
