"""The plain programs (System, SPL Token, ATA, Memo, Compute Budget) and liquidity control."""

from __future__ import annotations

from decimal import Decimal

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.websocket_api import SolanaWsClient
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction_status import TransactionErrorInstructionError
from spl.token import instructions as spl_token
from spl.token import models as spl_models

from tests.localnet.chain import USDC_MINT, blockhash, funded_wallet, load_pool, seeded, send_and_confirm, sign
from tests.localnet.chain import token_balance as balance
from tests.support.localnet import Localnet, LocalnetRpcError
from venues.onchain import (
    COMPUTE_BUDGET_PROGRAM_ID,
    MEMO_V1_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    associated_token_address,
    create_ata_idempotent_instruction,
    memo_instruction,
)
from venues.pools import METEORA, RAYDIUM
from venues.tokens import SOL, USDT


def token_transfer(source: Pubkey, dest: Pubkey, owner: Pubkey, amount: int, checked: int | None = None) -> Instruction:
    """Built by solana-py's SPL Token client, so the emulated layouts are checked against it."""
    if checked is None:
        return spl_token.transfer(
            spl_models.TransferParams(program_id=TOKEN_PROGRAM_ID, source=source, dest=dest, owner=owner, amount=amount)
        )
    return spl_token.transfer_checked(
        spl_models.TransferCheckedParams(
            program_id=TOKEN_PROGRAM_ID,
            source=source,
            mint=USDC_MINT,
            dest=dest,
            owner=owner,
            amount=amount,
            decimals=checked,
        )
    )


async def test_system_and_token_transfers(net: Localnet, client: AsyncClient) -> None:
    alice, bob = await funded_wallet(net), Keypair()
    a, b = alice.pubkey(), bob.pubkey()
    source, dest = associated_token_address(a, USDC_MINT), associated_token_address(b, USDC_MINT)
    start = await balance(client, source)
    tx = sign(
        alice,
        [
            transfer(TransferParams(from_pubkey=a, to_pubkey=b, lamports=10**9)),
            create_ata_idempotent_instruction(a, b, USDC_MINT),
            token_transfer(source, dest, a, 1_500_000),
            token_transfer(source, dest, a, 500_000, checked=6),
        ],
        await blockhash(client),
    )
    assert (await send_and_confirm(client, net.ws_url, tx)).err is None
    assert (await client.get_balance(b)).value == 10**9
    assert await balance(client, dest) == 2_000_000 and await balance(client, source) == start - 2_000_000

    # Bob tries to spend Alice's tokens: the token program's owner mismatch (0x4); nothing moves.
    await net.call("localnet_fund", [{"pubkey": str(b), "sol": "1"}])
    steal = sign(bob, [token_transfer(source, dest, b, 1)], await blockhash(client))
    landed = await send_and_confirm(client, net.ws_url, steal)
    assert isinstance(landed.err, TransactionErrorInstructionError) and landed.err.err.code == 4  # type: ignore[union-attr]
    # More than she has: insufficient funds (0x1); wrong decimals: 0x12.
    for ix, code in ((token_transfer(dest, source, b, 10**12), 1), (token_transfer(dest, source, b, 1, 9), 18)):
        landed = await send_and_confirm(client, net.ws_url, sign(bob, [ix], await blockhash(client)))
        assert isinstance(landed.err, TransactionErrorInstructionError) and landed.err.err.code == code  # type: ignore[union-attr]
    assert await balance(client, dest) == 2_000_000


async def test_associated_token_account_create_and_memo_v1(net: Localnet, client: AsyncClient) -> None:
    payer = await funded_wallet(net)
    owner = Keypair().pubkey()
    create = spl_token.create_associated_token_account(payer.pubkey(), owner, USDC_MINT)  # Create, with rent
    memo_v1 = Instruction(MEMO_V1_PROGRAM_ID, b"v1 memo", [])
    assert (
        await send_and_confirm(client, net.ws_url, sign(payer, [create, memo_v1], await blockhash(client)))
    ).err is None
    ata = associated_token_address(owner, USDC_MINT)
    assert await balance(client, ata) == 0
    again = sign(payer, [create, memo_instruction("again")], await blockhash(client))
    landed = await send_and_confirm(client, net.ws_url, again)  # Create (not idempotent) of an existing account
    assert isinstance(landed.err, TransactionErrorInstructionError) and landed.err.index == 0
    history = await client.get_signatures_for_address(payer.pubkey())
    assert [h.memo for h in history.value] == ["[5] again", "[7] v1 memo"]


async def test_memo_signers_and_compute_budget_data(net: Localnet, client: AsyncClient) -> None:
    payer = await funded_wallet(net)
    stranger = Keypair().pubkey()
    unsigned_memo = Instruction(
        memo_instruction("x").program_id, b"needs a signer", [AccountMeta(stranger, is_signer=False, is_writable=False)]
    )
    landed = await send_and_confirm(client, net.ws_url, sign(payer, [unsigned_memo], await blockhash(client)))
    assert isinstance(landed.err, TransactionErrorInstructionError)
    assert str(landed.err.err) == "InstructionErrorFieldless.MissingRequiredSignature"
    signed_memo = memo_instruction("signed", [payer.pubkey()])
    assert (await send_and_confirm(client, net.ws_url, sign(payer, [signed_memo], await blockhash(client)))).err is None
    bad_budget = Instruction(COMPUTE_BUDGET_PROGRAM_ID, b"\x09", [])
    landed = await send_and_confirm(client, net.ws_url, sign(payer, [bad_budget], await blockhash(client)))
    assert isinstance(landed.err, TransactionErrorInstructionError)


@pytest.mark.parametrize("venue", [RAYDIUM, METEORA])
async def test_liquidity_grows_and_shrinks(net: Localnet, client: AsyncClient, venue: str) -> None:
    pool = await load_pool(client, seeded(venue, SOL.mint, USDT.mint))
    price = pool.pool.spot_price(SOL.mint)
    async with SolanaWsClient(net.ws_url) as ws:
        await ws.account_subscribe(pubkey=pool.address, commitment=Confirmed, encoding="base64")
        await net.call("localnet_addLiquidity", [{"pool": str(pool.address), "fraction": "0.5"}])
    grown = await load_pool(client, pool.address)
    for before, after in zip(pool.reserves, grown.reserves, strict=True):
        assert abs(Decimal(after) / Decimal(before) - Decimal("1.5")) < Decimal("0.0001")
    assert abs(grown.pool.spot_price(SOL.mint) / price - 1) < Decimal("0.0001")
    await net.call("localnet_removeLiquidity", [{"pool": str(pool.address), "fraction": "0.5"}])
    shrunk = await load_pool(client, pool.address)
    for before, after in zip(grown.reserves, shrunk.reserves, strict=True):
        assert abs(Decimal(after) / Decimal(before) - Decimal("0.5")) < Decimal("0.0001")
    with pytest.raises(LocalnetRpcError) as refused:
        await net.call("localnet_removeLiquidity", [{"pool": str(pool.address), "fraction": "1"}])
    assert refused.value.error["code"] == -32602 and "fraction" in refused.value.error["message"]


async def test_stats_and_ledger(net: Localnet, client: AsyncClient) -> None:
    payer = await funded_wallet(net)
    tx = sign(payer, [memo_instruction("counted")], await blockhash(client))
    assert (await send_and_confirm(client, net.ws_url, tx)).err is None
    stats = await net.call("localnet_stats")
    assert stats["landed"] >= 1 and stats["pending"] == 0 and stats["halted"] is False
    rows = await net.call("localnet_ledger", [{"memo": "counted"}])
    assert [r["signature"] for r in rows] == [str(tx.signatures[0])]
    assert rows[0]["memo"] == "[7] counted" and rows[0]["fee"] == 5_000 and rows[0]["tokenDeltas"] == {}
