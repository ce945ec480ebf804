"""The engine's JSON-RPC client (solana-py's AsyncClient over aiohttp) answers as solana-py's own does.

The oracle is solana-py's client with its own httpx2 transport, asking the same
localnet the same questions: equal answers, the same RPC errors, and a
transport failure is solana-py's ``SolanaRpcException`` either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.signature import Signature

from services.common.rpc_transport import RpcClient
from tests.localnet.chain import SOL_MINT, USDC_MINT, seeded
from tests.support.localnet import Localnet, free_port
from venues.pools import METEORA, RAYDIUM
from venues.tokens import SOL, USDC


@pytest.fixture
async def engine(net: Localnet) -> AsyncIterator[RpcClient]:
    rpc = RpcClient(net.rpc_url, timeout=10)
    try:
        yield rpc
    finally:
        await rpc.close()


async def test_answers_are_solana_pys_own(engine: RpcClient, client: AsyncClient) -> None:
    pools = [seeded(RAYDIUM, SOL.mint, USDC.mint), seeded(METEORA, SOL.mint, USDC.mint), Keypair().pubkey()]
    mine = await engine.get_multiple_accounts(pools, encoding="base64", commitment=Confirmed)
    theirs = await client.get_multiple_accounts(pools, encoding="base64", commitment=Confirmed)
    assert mine.value == theirs.value, "the same accounts, decoded by the same solders types"
    assert mine.value[0] is not None and mine.value[2] is None
    for mint in (SOL_MINT, USDC_MINT):
        assert (await engine.get_account_info(mint)).value == (await client.get_account_info(mint)).value
    unknown = Signature.new_unique()
    statuses = await engine.get_signature_statuses([unknown], search_transaction_history=True)
    assert statuses.value == [None]
    assert await engine.is_connected() and await client.is_connected()


async def test_an_rpc_error_is_solana_pys_rpc_exception(engine: RpcClient, client: AsyncClient) -> None:
    garbage = b"\x01" + bytes(64) + b"not a transaction"
    with pytest.raises(RPCException) as mine:
        await engine.send_raw_transaction(garbage, TxOpts(skip_preflight=True))
    with pytest.raises(RPCException) as theirs:
        await client.send_raw_transaction(garbage, TxOpts(skip_preflight=True))
    assert str(mine.value) == str(theirs.value)


async def test_a_transport_failure_is_solana_rpc_exception(net: Localnet) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    for rpc in (RpcClient(nobody, timeout=2), AsyncClient(nobody, timeout=2)):
        try:
            with pytest.raises(SolanaRpcException, match="GetLatestBlockhash"):
                await rpc.get_latest_blockhash()
            with pytest.raises(SolanaRpcException, match="GetHealth"):
                await rpc.is_connected()
        finally:
            await rpc.close()
    wrong_path = RpcClient(f"{net.rpc_url}/no-such-path", timeout=2)
    try:
        with pytest.raises(SolanaRpcException):  # an HTTP error status, as solana-py's raise_for_status
            await wrong_path.get_block_height()
    finally:
        await wrong_path.close()
