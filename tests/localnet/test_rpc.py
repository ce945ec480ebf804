"""The JSON-RPC methods a client reads the cluster with, parsed by solana-py/solders."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.core import RPCException
from solana.rpc.models import MemcmpOpts, TokenAccountOpts
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.errors import InvalidParamsMessage

from tests.localnet.chain import SOL_MINT, USDC_MINT, blockhash, budget, funded_wallet, load_pool, seeded, sign
from tests.support.localnet import Localnet
from tests.support.waiting import eventually
from venues import dlmm_layout
from venues.onchain import (
    METEORA_DLMM_PROGRAM_ID,
    RAYDIUM_CPMM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    Account,
    associated_token_address,
    decode_token_account,
    is_pool_account,
    memo_instruction,
)
from venues.pools import METEORA, RAYDIUM, seed_pools
from venues.tokens import SOL, USDC


async def test_cluster_methods(net: Localnet, client: AsyncClient) -> None:
    assert (await client.is_connected()) is True
    version = await client.get_version()
    assert version.value.solana_core
    assert len(str((await client.get_genesis_hash()).value)) >= 32
    slot = (await client.get_slot()).value
    height = (await client.get_block_height()).value
    latest = (await client.get_latest_blockhash()).value
    assert latest.last_valid_block_height == height + 150 and abs(slot - height) <= 1
    epoch = (await client.get_epoch_info()).value
    assert epoch.absolute_slot >= slot
    assert (await client.get_minimum_balance_for_rent_exemption(165)).value == 2_039_280
    assert (await client.get_minimum_balance_for_rent_exemption(82)).value == 1_461_600
    await asyncio.sleep(0.45)
    assert (await client.get_slot()).value > slot  # 400 ms slots
    del net


async def test_fee_for_message(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    message = MessageV0.try_compile(wallet.pubkey(), [*budget(), memo_instruction("x")], [], await blockhash(client))
    assert (await client.get_fee_for_message(message)).value == 5_400


async def test_accounts_and_token_balances(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    owner = wallet.pubkey()
    assert (await client.get_balance(owner)).value == 1_000_000 * 10**9
    usdc = associated_token_address(owner, USDC_MINT)
    balance = (await client.get_token_account_balance(usdc)).value
    assert (balance.amount, balance.decimals, balance.ui_amount_string) == (str(100_000_000 * 10**6), 6, "100000000")
    wsol = (await client.get_token_account_balance(associated_token_address(owner, SOL_MINT))).value
    assert wsol.amount == str(10**6 * 10**9)
    everything = await client.get_token_accounts_by_owner(
        owner, TokenAccountOpts(program_id=TOKEN_PROGRAM_ID, encoding="base64")
    )
    mints = {decode_token_account(bytes(k.account.data)).mint for k in everything.value}
    assert {SOL_MINT, USDC_MINT} <= mints and len(mints) == 6
    only = await client.get_token_accounts_by_owner(owner, TokenAccountOpts(mint=USDC_MINT, encoding="base64"))
    assert [k.pubkey for k in only.value] == [usdc]
    parsed = await client.get_token_accounts_by_owner_json_parsed(owner, TokenAccountOpts(mint=USDC_MINT))
    token_info = cast(dict[str, Any], parsed.value[0].account.data.parsed["info"])  # JSON: the parsed account
    assert token_info["tokenAmount"]["amount"] == str(100_000_000 * 10**6)
    info = await client.get_account_info(usdc, encoding="base64")
    assert info.value is not None and info.value.owner == TOKEN_PROGRAM_ID and len(bytes(info.value.data)) == 165
    assert (await client.get_account_info(Keypair().pubkey())).value is None
    many = await client.get_multiple_accounts([usdc, Keypair().pubkey(), owner], encoding="base64")
    assert [a is not None for a in many.value] == [True, False, True]
    with pytest.raises(RPCException) as refused:
        await client.get_token_account_balance(owner)
    assert isinstance(refused.value.args[0], InvalidParamsMessage)


async def test_program_accounts_with_filters(client: AsyncClient) -> None:
    everything = await client.get_program_accounts(RAYDIUM_CPMM_PROGRAM_ID, encoding="base64")
    pools = [k.pubkey for k in everything.value if is_pool_account(Account(k.account.owner, bytes(k.account.data), 0))]
    raydium = {Pubkey.from_string(p.pool_id) for (venue, _), p in seed_pools().items() if venue == RAYDIUM}
    assert raydium <= set(pools)
    states = await client.get_program_accounts(RAYDIUM_CPMM_PROGRAM_ID, encoding="base64", filters=[637])
    assert {k.pubkey for k in states.value} == set(pools)
    pairs = await client.get_program_accounts(
        METEORA_DLMM_PROGRAM_ID,
        encoding="base64",
        filters=[dlmm_layout.LB_PAIR_LEN, MemcmpOpts(offset=88, bytes=str(SOL_MINT))],
    )
    assert seeded(METEORA, SOL.mint, USDC.mint) in {k.pubkey for k in pairs.value}
    assert all(bytes(k.account.data)[88:120] == bytes(SOL_MINT) for k in pairs.value)
    for key in pools:
        assert min((await load_pool(client, key)).reserves) > 0


async def test_airdrop_is_a_real_transfer(client: AsyncClient) -> None:
    lucky = Keypair().pubkey()
    signature = (await client.request_airdrop(lucky, 2 * 10**9)).value

    async def arrived() -> bool:
        return (await client.get_balance(lucky)).value == 2 * 10**9

    await eventually(arrived, timeout=5)
    found = await client.get_transaction(signature)
    assert found.value is not None and found.value.transaction.meta is not None
    assert found.value.transaction.meta.err is None


async def test_simulation_does_not_change_anything(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    tx = sign(wallet, [*budget(), memo_instruction("simulated")], await blockhash(client))
    result = (await client.simulate_transaction(tx, sig_verify=True)).value
    assert result.err is None and 'Program log: Memo (len 9): "simulated"' in (result.logs or [])
    assert result.units_consumed and result.units_consumed > 0
    replaced = (await client.simulate_transaction(tx, replace_recent_blockhash=True)).value
    assert replaced.replacement_blockhash is not None
    assert (await client.get_balance(wallet.pubkey())).value == 1_000_000 * 10**9
    assert (await client.get_signature_statuses([tx.signatures[0]])).value == [None]


async def test_unknown_methods_and_bad_params_get_the_node_codes(net: Localnet) -> None:
    unknown = await net.call_raw("getNoSuchThing", [])
    assert unknown["error"] == {"code": -32601, "message": "Method not found"}
    bad = await net.call_raw("getBalance", ["not-a-key"])
    assert bad["error"]["code"] == -32602
    bad = await net.call_raw("getAccountInfo", [str(USDC_MINT), {"encoding": "base64", "dataSlice": {"x": 1}}])
    assert bad["error"]["code"] == -32602
    assert (await net.call_raw("getHealth"))["result"] == "ok"
