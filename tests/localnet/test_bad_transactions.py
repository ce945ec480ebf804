"""Bad transactions get the real node's answer and change nothing."""

from __future__ import annotations

import asyncio

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.rpc.errors import InvalidParamsMessage, RpcCustomErrorFieldless, SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionErrorFieldless

from tests.localnet.chain import (
    SOL_MINT,
    blockhash,
    budget,
    funded_wallet,
    load_pool,
    seeded,
    send_and_confirm,
    sign,
    swap,
    token_balance,
)
from tests.support.localnet import Localnet, running_localnet
from tests.support.waiting import eventually
from venues.onchain import associated_token_address, create_ata_idempotent_instruction, memo_instruction
from venues.pools import RAYDIUM
from venues.tokens import SOL, USDC

SETTLE_S = 0.5  # well past the module localnet's 20-40 ms landing latency


async def a_swap(client: AsyncClient, wallet: Keypair, amount: int = 10**9) -> VersionedTransaction:
    pool = await load_pool(client, seeded(RAYDIUM, SOL.mint, USDC.mint))
    owner = wallet.pubkey()
    usdc = Pubkey.from_string(USDC.mint)
    instructions = [
        *budget(),
        create_ata_idempotent_instruction(owner, owner, usdc),
        swap(pool, owner, SOL_MINT, amount, 0),
    ]
    return sign(wallet, instructions, await blockhash(client))


async def state_of(client: AsyncClient, owner: Pubkey) -> tuple[int, int, tuple[int, int]]:
    pool = await load_pool(client, seeded(RAYDIUM, SOL.mint, USDC.mint))
    sol = await token_balance(client, associated_token_address(owner, SOL_MINT))
    return (await client.get_balance(owner)).value, sol, pool.reserves


async def never_lands(client: AsyncClient, signature: Signature) -> None:
    await asyncio.sleep(SETTLE_S)
    statuses = await client.get_signature_statuses([signature], search_transaction_history=True)
    assert statuses.value == [None]
    assert (await client.get_transaction(signature, max_supported_transaction_version=0)).value is None


async def test_unsigned_and_wrongly_signed_transactions_are_refused(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    before = await state_of(client, wallet.pubkey())
    signed = await a_swap(client, wallet)
    message = signed.message
    other = Keypair()
    forged = VersionedTransaction.populate(message, [other.sign_message(to_bytes_versioned(message))])
    unsigned = VersionedTransaction.populate(message, [Signature.default()])
    for tx in (forged, unsigned):
        with pytest.raises(RPCException) as refused:
            await client.send_raw_transaction(bytes(tx))
        assert refused.value.args[0] == RpcCustomErrorFieldless.TransactionSignatureVerificationFailure
        # Without preflight the node forwards it, answers its signature, and the leader drops it.
        sent = await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True))
        assert sent.value == tx.signatures[0]
        await never_lands(client, tx.signatures[0])
    assert await state_of(client, wallet.pubkey()) == before


async def test_malformed_bytes_are_invalid_params(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    raw = bytes(await a_swap(client, wallet))
    for bad in (raw[:40], raw[:-3], b"\x01" + b"\x00" * 10):
        with pytest.raises(RPCException) as refused:
            await client.send_raw_transaction(bad, TxOpts(skip_preflight=True))
        error = refused.value.args[0]
        assert isinstance(error, InvalidParamsMessage)
        assert error.message.startswith("failed to deserialize solana_transaction::versioned::VersionedTransaction")
    answer = await net.call_raw("sendTransaction", ["***", {"encoding": "base64"}])
    assert answer["error"]["code"] == -32602 and answer["error"]["message"].startswith("invalid base64 encoding")
    assert (await client.get_signatures_for_address(wallet.pubkey())).value == []


async def test_an_unknown_blockhash_is_blockhash_not_found(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    before = await state_of(client, wallet.pubkey())
    tx = sign(wallet, [memo_instruction("stale")], Hash.new_unique())
    with pytest.raises(RPCException) as refused:
        await client.send_raw_transaction(bytes(tx))
    error = refused.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert error.message == "Transaction simulation failed: Blockhash not found"
    assert error.data.err == TransactionErrorFieldless.BlockhashNotFound
    sent = await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True))
    assert sent.value == tx.signatures[0]
    await never_lands(client, tx.signatures[0])
    assert await state_of(client, wallet.pubkey()) == before


async def test_a_second_send_of_a_landed_signature_is_already_processed(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    tx = await a_swap(client, wallet, amount=3 * 10**9)
    assert (await send_and_confirm(client, net.ws_url, tx)).err is None
    after_first = await state_of(client, wallet.pubkey())
    with pytest.raises(RPCException) as refused:
        await client.send_raw_transaction(bytes(tx))
    error = refused.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert error.message == "Transaction simulation failed: This transaction has already been processed"
    assert error.data.err == TransactionErrorFieldless.AlreadyProcessed
    for _ in range(3):
        assert (await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True))).value == tx.signatures[0]
    await asyncio.sleep(SETTLE_S)
    assert await state_of(client, wallet.pubkey()) == after_first
    history = await client.get_signatures_for_address(wallet.pubkey())
    assert [s.signature for s in history.value] == [tx.signatures[0]]
    ledger = await net.call("localnet_ledger", [{"address": str(wallet.pubkey())}])
    assert [row["signature"] for row in ledger] == [str(tx.signatures[0])]


async def test_concurrent_sends_of_one_signature_land_once(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    tx = await a_swap(client, wallet, amount=4 * 10**9)
    raw = bytes(tx)
    sends = [client.send_raw_transaction(raw, TxOpts(skip_preflight=True)) for _ in range(20)]
    assert {r.value for r in await asyncio.gather(*sends)} == {tx.signatures[0]}
    await asyncio.sleep(SETTLE_S)
    ledger = await net.call("localnet_ledger", [{"address": str(wallet.pubkey())}])
    assert len(ledger) == 1 and ledger[0]["err"] is None


async def test_a_payer_without_lamports_cannot_pay_the_fee(net: Localnet, client: AsyncClient) -> None:
    nobody = Keypair()
    tx = sign(nobody, [memo_instruction("free lunch")], await blockhash(client))
    with pytest.raises(RPCException) as refused:
        await client.send_raw_transaction(bytes(tx))
    error = refused.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert error.data.err == TransactionErrorFieldless.AccountNotFound
    assert error.message == (
        "Transaction simulation failed: Attempt to debit an account but found no record of a prior credit."
    )
    assert (await net.call("localnet_ledger", [{"address": str(nobody.pubkey())}])) == []


async def test_a_blockhash_that_expires_before_landing_never_lands(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Valid when sent, expired when the cluster gets to land it (landing halted meanwhile): dropped."""
    env = {"LOCALNET_BLOCKHASH_VALID_SLOTS": "4"}
    async with (
        running_localnet(env, log_dir=tmp_path_factory.mktemp("expiry")) as net,
        AsyncClient(net.rpc_url, commitment=Confirmed) as client,
    ):
        wallet = await funded_wallet(net)
        before = await state_of(client, wallet.pubkey())
        latest = (await client.get_latest_blockhash()).value
        assert latest.last_valid_block_height == (await client.get_block_height()).value + 4
        await net.call("localnet_halt")
        tx = sign(wallet, [memo_instruction("too late")], latest.blockhash)
        assert (await client.send_raw_transaction(bytes(tx))).value == tx.signatures[0]  # preflight passes

        async def expired() -> bool:
            return (await client.get_block_height()).value > latest.last_valid_block_height

        await eventually(expired, timeout=10, every=0.2)
        await net.call("localnet_resume")
        await never_lands(client, tx.signatures[0])
        assert await state_of(client, wallet.pubkey()) == before

        async def dropped() -> bool:  # the lander's turn comes after its wait and a commit: on a slow VM, later
            return (await net.call("localnet_stats"))["pending"] == 0

        await eventually(dropped, timeout=10, every=0.1)
        await never_lands(client, tx.signatures[0])  # dropped, not landed
        # Sent after it expired: the preflight says so.
        with pytest.raises(RPCException) as refused:
            await client.send_raw_transaction(bytes(tx))
        assert refused.value.args[0].data.err == TransactionErrorFieldless.BlockhashNotFound
