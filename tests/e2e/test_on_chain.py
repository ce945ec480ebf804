"""A confirmed order is a real transaction on the cluster, read back with solana-py and solders."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.message import to_bytes_versioned
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from tests.support import chain_oracle
from tests.support.client import SOL, USDC, follow, post_order
from tests.support.mesh import Mesh
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
