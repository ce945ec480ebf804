"""Venue swaps on the localnet, driven with solana-py and solders only."""

from __future__ import annotations

import time

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionErrorInstructionError

from tests.localnet.chain import (
    FEE,
    SOL_MINT,
    USDC_MINT,
    blockhash,
    budget,
    funded_wallet,
    load_pool,
    seeded,
    send_and_confirm,
    sign,
    swap,
    token_balance,
    token_deltas,
)
from tests.support.localnet import Localnet
from venues.onchain import (
    VENUE_PROGRAMS,
    associated_token_address,
    create_ata_idempotent_instruction,
    memo_instruction,
)
from venues.pools import METEORA, RAYDIUM
from venues.tokens import SOL, USDC, USDT


async def block_time(client: AsyncClient, signature: object) -> int:
    found = await client.get_transaction(signature, max_supported_transaction_version=0)  # type: ignore[arg-type]
    assert found.value is not None and found.value.block_time is not None
    return found.value.block_time


@pytest.mark.parametrize(("venue", "mint_in", "legacy"), [(RAYDIUM, SOL_MINT, False), (METEORA, USDC_MINT, True)])
async def test_a_swap_lands_with_its_memo_and_the_exact_amounts(
    net: Localnet, client: AsyncClient, venue: str, mint_in: Pubkey, legacy: bool
) -> None:
    wallet = await funded_wallet(net)
    owner = wallet.pubkey()
    pool = await load_pool(client, seeded(venue, SOL.mint, USDC.mint))
    mint_out = USDC_MINT if mint_in == SOL_MINT else SOL_MINT
    amount = 2 * 10**9 if mint_in == SOL_MINT else 300 * 10**6
    quote = pool.pool.swap(str(mint_in), amount, time.time())
    lamports_before = (await client.get_balance(owner)).value
    memo = f"dexengine order=00000000-0000-4000-8000-{venue[:4].encode().hex():0>12} attempt=1"
    tx = sign(
        wallet,
        [
            *budget(),
            create_ata_idempotent_instruction(owner, owner, mint_out),
            swap(pool, owner, mint_in, amount, quote.amount_out * 99 // 100),
            memo_instruction(memo),
        ],
        await blockhash(client),
        legacy=legacy,
    )
    landed = await send_and_confirm(client, net.ws_url, tx)
    assert landed.err is None

    found = await client.get_transaction(landed.signature, encoding="json", max_supported_transaction_version=0)
    assert found.value is not None
    meta = found.value.transaction.meta
    assert meta is not None and meta.err is None and meta.fee == FEE
    assert f'Program log: Memo (len {len(memo)}): "{memo}"' in (meta.log_messages or [])
    # The landed transaction is the one signed: it deserializes and its signature verifies.
    raw = await client.get_transaction(landed.signature, encoding="base64", max_supported_transaction_version=0)
    assert raw.value is not None
    landed_tx = raw.value.transaction.transaction
    assert isinstance(landed_tx, VersionedTransaction) and landed_tx.verify_with_results() == [True]
    assert bytes(landed_tx) == bytes(tx)
    # The token balance changes are the venue's exact math at the landing slot's unix time.
    expected = pool.pool.swap(str(mint_in), amount, await block_time(client, landed.signature))
    assert await token_deltas(client, landed.signature, owner) == {mint_in: -amount, mint_out: expected.amount_out}
    assert (await client.get_balance(owner)).value == lamports_before - FEE
    # And the pool's accounts moved by exactly that.
    after = await load_pool(client, pool.address)
    side_in = pool.mints.index(mint_in)
    assert after.reserves[1 - side_in] == pool.reserves[1 - side_in] - expected.amount_out
    statuses = await client.get_signature_statuses([landed.signature], search_transaction_history=True)
    assert statuses.value[0] is not None and statuses.value[0].err is None
    history = await client.get_signatures_for_address(owner, limit=10)
    assert [s.signature for s in history.value] == [landed.signature]
    assert history.value[0].memo == f"[{len(memo)}] {memo}"


@pytest.mark.parametrize(("venue", "code"), [(RAYDIUM, 0x1775), (METEORA, 0x1773)])
async def test_slippage_is_the_venue_programs_error_in_preflight_and_on_chain(
    net: Localnet, client: AsyncClient, venue: str, code: int
) -> None:
    wallet = await funded_wallet(net)
    owner = wallet.pubkey()
    pool = await load_pool(client, seeded(venue, SOL.mint, USDT.mint))
    quote = pool.pool.swap(SOL.mint, 10**9, time.time())
    usdt = associated_token_address(owner, Pubkey.from_string(USDT.mint))
    before = await token_balance(client, usdt)
    instructions = [*budget(), swap(pool, owner, SOL_MINT, 10**9, quote.amount_out + 1)]
    tx = sign(wallet, instructions, await blockhash(client))

    with pytest.raises(RPCException) as preflight:
        await client.send_raw_transaction(bytes(tx))
    error = preflight.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert (
        error.message
        == f"Transaction simulation failed: Error processing Instruction 2: custom program error: {code:#x}"
    )
    assert isinstance(error.data.err, TransactionErrorInstructionError)
    assert error.data.err.index == 2 and error.data.err.err.code == code  # type: ignore[union-attr]
    assert any(f"Error Number: {code}." in line for line in error.data.logs or [])
    assert (await client.get_signature_statuses([tx.signatures[0]], search_transaction_history=True)).value == [None]

    lamports = (await client.get_balance(owner)).value
    landed = await send_and_confirm(client, net.ws_url, tx, skip_preflight=True)
    assert isinstance(landed.err, TransactionErrorInstructionError)
    assert landed.err.index == 2 and landed.err.err.code == code  # type: ignore[union-attr]
    found = await client.get_transaction(landed.signature, max_supported_transaction_version=0)
    assert found.value is not None and found.value.transaction.meta is not None
    assert found.value.transaction.meta.fee == FEE
    failed = f"Program {VENUE_PROGRAMS[venue]} failed: custom program error: {code:#x}"
    assert failed in (found.value.transaction.meta.log_messages or [])
    # A failed transaction changes nothing but the fee.
    assert await token_balance(client, usdt) == before
    assert (await client.get_balance(owner)).value == lamports - FEE
    assert (await load_pool(client, pool.address)).reserves == pool.reserves


async def test_a_split_with_one_failing_leg_changes_nothing_but_the_fee(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    owner = wallet.pubkey()
    ray = await load_pool(client, seeded(RAYDIUM, SOL.mint, USDC.mint))
    met = await load_pool(client, seeded(METEORA, SOL.mint, USDC.mint))
    good = ray.pool.swap(SOL.mint, 10**9, time.time())
    bad = met.pool.swap(SOL.mint, 10**9, time.time())
    tx = sign(
        wallet,
        [
            *budget(),
            swap(ray, owner, SOL_MINT, 10**9, good.amount_out),
            swap(met, owner, SOL_MINT, 10**9, bad.amount_out + 1),
            memo_instruction("split"),
        ],
        await blockhash(client),
    )
    usdc = associated_token_address(owner, USDC_MINT)
    sol = associated_token_address(owner, SOL_MINT)
    balances = (await token_balance(client, usdc), await token_balance(client, sol))
    lamports = (await client.get_balance(owner)).value
    landed = await send_and_confirm(client, net.ws_url, tx)
    assert isinstance(landed.err, TransactionErrorInstructionError) and landed.err.index == 3
    assert (await token_balance(client, usdc), await token_balance(client, sol)) == balances
    assert (await client.get_balance(owner)).value == lamports - FEE
    assert (await load_pool(client, ray.address)).reserves == ray.reserves
    assert (await load_pool(client, met.address)).reserves == met.reserves
    assert await token_deltas(client, landed.signature, owner) == {}


@pytest.mark.parametrize(("venue", "code"), [(RAYDIUM, 6000), (METEORA, 6042)])
async def test_a_pool_refuses_swaps_before_its_open_time(
    net: Localnet, client: AsyncClient, venue: str, code: int
) -> None:
    mint = (await net.call("localnet_createMint", [{"decimals": 6}]))["mint"]
    open_time = int(time.time()) + 3_600
    created = await net.call(
        "localnet_createPool",
        [{"venue": venue, "mints": [mint, USDC.mint], "price": "2", "liquidity": "50000", "openTime": open_time}],
    )
    assert created["openTime"] == open_time and created["venue"] == venue
    wallet = await funded_wallet(net)
    owner = wallet.pubkey()
    await net.call("localnet_fund", [{"pubkey": str(owner), "tokens": {mint: "1000"}}])
    pool = await load_pool(client, Pubkey.from_string(created["pool"]))
    assert pool.open_time == open_time
    ata = create_ata_idempotent_instruction(owner, owner, USDC_MINT)
    tx = sign(wallet, [*budget(), ata, swap(pool, owner, Pubkey.from_string(mint), 10**6, 1)], await blockhash(client))
    landed = await send_and_confirm(client, net.ws_url, tx)
    assert isinstance(landed.err, TransactionErrorInstructionError)
    assert landed.err.index == 3 and landed.err.err.code == code  # type: ignore[union-attr]

    await net.call("localnet_setOpenTime", [{"pool": created["pool"], "openTime": int(time.time()) - 1}])
    pool = await load_pool(client, pool.address)
    later = swap(pool, owner, Pubkey.from_string(mint), 2 * 10**6, 1)  # not the same transaction again
    tx = sign(wallet, [*budget(), ata, later], await blockhash(client))
    assert (await send_and_confirm(client, net.ws_url, tx)).err is None


async def test_preflight_failure_of_an_unfunded_token_account(net: Localnet, client: AsyncClient) -> None:
    """A wallet without the input token: the token program's own error (insufficient funds, 0x1)."""
    poor = Keypair()
    await net.call("localnet_fund", [{"pubkey": str(poor.pubkey()), "sol": "1", "tokens": {USDC.mint: "1"}}])
    pool = await load_pool(client, seeded(RAYDIUM, SOL.mint, USDC.mint))
    owner = poor.pubkey()
    ata = create_ata_idempotent_instruction(owner, owner, SOL_MINT)
    tx = sign(poor, [*budget(), ata, swap(pool, owner, USDC_MINT, 5 * 10**6, 0)], await blockhash(client))
    with pytest.raises(RPCException) as preflight:
        await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=False))
    error = preflight.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage)
    assert error.message.endswith("Error processing Instruction 3: custom program error: 0x1")
