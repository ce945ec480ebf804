"""A confirmed order is a real transaction on the cluster, read back with solana-py and solders."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import aiohttp
import grpc
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from dexengine.v1 import router_pb2, router_pb2_grpc
from tests.support import chain_oracle
from tests.support.client import SOL, USDC, follow, post_order
from tests.support.mesh import Mesh
from tests.support.scenarios import localnet
from venues.onchain import MEMO_PROGRAM_ID
from venues.tokens import to_base_units


async def test_a_confirmed_order_is_a_landed_signed_transaction(mesh: Mesh) -> None:
    before = await chain_oracle.wallet_balances(mesh.rpc_url, mesh.wallet)
    async with aiohttp.ClientSession() as session:
        status, body = await post_order(
            session, mesh.http, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "2", "slippage": "0.02"}
        )
        assert status == 201, body
        events = await follow(session, body["websocketUrl"])
        final = events[-1]
        assert final["status"] == "confirmed", final
        async with session.get(f"{mesh.http}/api/orders/{body['orderId']}") as resp:
            order = await resp.json()
    signature = Signature.from_string(final["data"]["txHash"])

    async with AsyncClient(mesh.rpc_url, commitment=Confirmed) as client:
        landed = await client.get_transaction(signature, encoding="base64", max_supported_transaction_version=0)
    assert landed.value is not None
    meta = landed.value.transaction.meta
    assert meta is not None and meta.err is None
    tx = landed.value.transaction.transaction
    assert isinstance(tx, VersionedTransaction)
    # The bytes deserialize with solders, the fee payer is the engine's wallet and its signature verifies.
    tx = VersionedTransaction.from_bytes(bytes(tx))
    payer = tx.message.account_keys[0]
    assert str(payer) == mesh.wallet and tx.signatures[0] == signature
    assert signature.verify(payer, to_bytes_versioned(tx.message))
    # Its memo names the order.
    keys = tx.message.account_keys
    memos = [bytes(ix.data).decode() for ix in tx.message.instructions if keys[ix.program_id_index] == MEMO_PROGRAM_ID]
    assert memos == [f"dexengine order={body['orderId']} attempt=1"]
    # The wallet's token balance changes are the order's amounts, as the cluster saw them.
    after = await chain_oracle.wallet_balances(mesh.rpc_url, mesh.wallet)
    spent = before[SOL] - after[SOL]
    got = after[USDC] - before.get(USDC, 0)
    assert spent == to_base_units(Decimal(order["amountIn"]), 9)
    assert got == to_base_units(Decimal(order["amountOut"]), 6)
    assert (
        Decimal(final["data"]["executedPrice"])
        == (Decimal(got).scaleb(-6) / Decimal(spent).scaleb(-9)).quantize(Decimal("1e-12")).normalize()
    )


async def test_the_executor_signs_from_the_pools_the_router_quoted(mesh: Mesh) -> None:
    """Each venue's pool reaches the executor with the router's answer: the orders land with no getMultipleAccounts.

    A new pair per venue (a Raydium CPMM pool, a Meteora DLMM pool with its bin arrays), so each route is known.
    The localnet counts the JSON-RPC requests it serves (``localnet_stats``), outside the engine.
    """
    async with aiohttp.ClientSession() as session, grpc.aio.insecure_channel(mesh.grpc_target("router")) as channel:
        router = router_pb2_grpc.RouterStub(channel)
        mints = {}
        for venue, symbol in (("raydium", "RAYQ"), ("meteora", "METQ")):
            mint = (await localnet(session, mesh, "createMint", {"decimals": 6, "symbol": symbol}))["mint"]
            new_pool = {"venue": venue, "mints": [mint, "USDC"], "price": "2", "liquidity": "50000"}
            await localnet(session, mesh, "createPool", new_pool)
            mints[venue] = mint
        for venue, mint in mints.items():  # the router's feed has read the new pool and all it depends on
            request = router_pb2.GetQuotesRequest(
                token_in=USDC, token_out=mint, amount_in="10", slippage="0.02", include_pool_accounts=True
            )
            for _ in range(100):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    quoted = await router.GetQuotes(request, timeout=5)
                    if quoted.decision.venue == venue and quoted.pool_accounts:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the router never quoted the new {venue} pool")
            # The swap's accounts only: the pool's state account, and a DLMM pool's mints (no vaults, no bin arrays).
            pool = quoted.decision.legs[0].pool
            by_mints = {str(Pubkey.from_string(USDC)), mint} if venue == "meteora" else set()
            assert {str(Pubkey(a.address)) for a in quoted.pool_accounts} == {pool, *by_mints}, venue
            request.include_pool_accounts = False
            assert not (await router.GetQuotes(request, timeout=5)).pool_accounts, "only when asked for"

        before = (await localnet(session, mesh, "stats"))["requests"]
        orders = []
        for venue, mint in [*mints.items(), *mints.items()]:
            body = {"tokenIn": USDC, "tokenOut": mint, "amountIn": "10", "slippage": "0.02"}
            status, created = await post_order(session, mesh.http, body)
            assert status == 201, created
            events = await follow(session, created["websocketUrl"])
            assert events[-1]["status"] == "confirmed", events
            assert events[-1]["data"]["venue"] == venue, events[-1]
            orders.append(created["orderId"])
        after = (await localnet(session, mesh, "stats"))["requests"]
        ledger = [await localnet(session, mesh, "ledger", {"memo": order_id}) for order_id in orders]
    sent = after.get("sendTransaction", 0) - before.get("sendTransaction", 0)
    assert [len(rows) for rows in ledger] == [1, 1, 1, 1] and all(r[0]["err"] is None for r in ledger), ledger
    assert sent == 4, f"one transaction per order, each landed: {sent} sent"
    assert after.get("getMultipleAccounts", 0) == before.get("getMultipleAccounts", 0), (before, after)
