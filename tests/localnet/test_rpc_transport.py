"""The engine's JSON-RPC client (solana-py's AsyncClient over aiohttp) answers as solana-py's own does.

The oracle is solana-py's client with its own httpx2 transport, asking the same
localnet the same questions: equal answers, the same RPC errors, and a
transport failure is solana-py's ``SolanaRpcException`` either way.
"""

from __future__ import annotations

import asyncio
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
from tests.support.localnet import Localnet, free_port, running_localnet
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


async def test_calls_made_together_go_as_one_batch_and_answer_as_alone(
    engine: RpcClient, client: AsyncClient, net: Localnet
) -> None:
    pools = [seeded(RAYDIUM, SOL.mint, USDC.mint), seeded(METEORA, SOL.mint, USDC.mint)]
    unknown = Signature.new_unique()
    assert await engine.is_connected()  # the session is open
    before = await net.call("localnet_stats")
    accounts, statuses, mint = await asyncio.gather(
        engine.get_multiple_accounts(pools, encoding="base64", commitment=Confirmed),
        engine.get_signature_statuses([unknown], search_transaction_history=True),
        engine.get_account_info(SOL_MINT),
    )
    after = await net.call("localnet_stats")
    assert after["posts"] - before["posts"] == 2, "one post for the three calls, one for the stats before it"
    served = {m: after["requests"].get(m, 0) - before["requests"].get(m, 0) for m in after["requests"]}
    assert served["getMultipleAccounts"] == served["getSignatureStatuses"] == served["getAccountInfo"] == 1
    # The oracle: solana-py's own client, asked one call at a time.
    assert accounts.value == (await client.get_multiple_accounts(pools, encoding="base64")).value
    assert statuses.value == [None]
    assert mint.value == (await client.get_account_info(SOL_MINT)).value


async def test_an_rpc_error_in_a_batch_is_its_own_calls(engine: RpcClient, client: AsyncClient) -> None:
    garbage = b"\x01" + bytes(64) + b"not a transaction"
    sent, blockhash = await asyncio.gather(
        engine.send_raw_transaction(garbage, TxOpts(skip_preflight=True)),
        engine.get_latest_blockhash(Confirmed),
        return_exceptions=True,
    )
    assert isinstance(sent, RPCException)
    with pytest.raises(RPCException) as theirs:
        await client.send_raw_transaction(garbage, TxOpts(skip_preflight=True))
    assert str(sent) == str(theirs.value)
    # A new localnet may be at block height 0; a blockhash is valid for some blocks from any height.
    assert not isinstance(blockhash, BaseException) and blockhash.value.last_valid_block_height > 0


async def test_a_transport_failure_fails_every_call_of_the_batch() -> None:
    rpc = RpcClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        blockhash, health = await asyncio.gather(rpc.get_latest_blockhash(), rpc.is_connected(), return_exceptions=True)
        assert isinstance(blockhash, SolanaRpcException) and "GetLatestBlockhash" in str(blockhash)
        assert isinstance(health, SolanaRpcException) and "GetHealth" in str(health), "each names its own call"
    finally:
        await rpc.close()


async def test_no_batch_holds_more_than_batch_max_calls(net: Localnet) -> None:
    rpc = RpcClient(net.rpc_url, timeout=10, batch_max=2)
    try:
        assert await rpc.is_connected()
        before = (await net.call("localnet_stats"))["posts"]
        blockhashes = await asyncio.gather(*(rpc.get_latest_blockhash(Confirmed) for _ in range(5)))
        assert (await net.call("localnet_stats"))["posts"] - before == 3 + 1, "2 + 2 + 1, and the stats call"
        assert all(b.value.last_valid_block_height > 0 for b in blockhashes)
    finally:
        await rpc.close()


async def test_a_node_that_refuses_batches_gets_the_calls_one_by_one_and_no_batch_after(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider that caps batches (the localnet at 1 here) refuses a larger one whole and serves none of it."""
    async with running_localnet({"LOCALNET_RPC_BATCH_MAX": "1"}, log_dir=tmp_path_factory.mktemp("capped")) as capped:
        rpc = RpcClient(capped.rpc_url, timeout=10)
        try:
            assert await rpc.is_connected()
            before = await capped.call("localnet_stats")
            unknown = Signature.new_unique()
            statuses, mint, blockhash = await asyncio.gather(
                rpc.get_signature_statuses([unknown], search_transaction_history=True),
                rpc.get_account_info(SOL_MINT),
                rpc.get_latest_blockhash(Confirmed),
            )
            after = await capped.call("localnet_stats")
            assert statuses.value == [None] and mint.value is not None and blockhash.value.last_valid_block_height > 0
            assert after["posts"] - before["posts"] == 1 + 3 + 1, "the refused batch, each call alone, the stats"
            served = sum(after["requests"].values()) - sum(before["requests"].values())
            assert served == 3 + 1, "the refused batch served nothing: each call once, and the stats call"
            assert any("refused a batch" in r.getMessage() for r in caplog.records)
            await asyncio.gather(rpc.get_block_height(Confirmed), rpc.get_block_height(Confirmed))
            assert (await capped.call("localnet_stats"))["posts"] - after["posts"] == 2 + 1, "no batch after it"
        finally:
            await rpc.close()
