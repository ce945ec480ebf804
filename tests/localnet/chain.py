"""What a client of the localnet does, with solana-py and solders only."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solana.rpc.websocket_api import SolanaWsClient
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import SignatureNotification
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from tests.support.localnet import Localnet
from venues.onchain import Account, PoolSnapshot, decode_pool, dependencies, swap_instruction
from venues.pools import seed_pools
from venues.tokens import SOL, USDC

UNIT_LIMIT = 400_000
UNIT_PRICE = 1_000  # micro-lamports per unit: a 400 lamport priority fee
FEE = 5_000 + 400
SOL_MINT = Pubkey.from_string(SOL.mint)
USDC_MINT = Pubkey.from_string(USDC.mint)


def seeded(venue: str, a: str, b: str) -> Pubkey:
    return Pubkey.from_string(seed_pools()[(venue, frozenset((a, b)))].pool_id)


def swap(pool: PoolSnapshot, owner: Pubkey, mint_in: Pubkey, amount_in: int, min_amount_out: int) -> Instruction:
    """The venue's swap on a pool read whole (``load_pool``)."""
    return swap_instruction(pool.swap_keys, owner, mint_in, amount_in, min_amount_out)


async def load_pool(client: AsyncClient, address: Pubkey) -> PoolSnapshot:
    """getAccountInfo + getMultipleAccounts of its dependencies, decoded."""
    state = (await client.get_account_info(address, encoding="base64")).value
    assert state is not None, f"{address} not found"
    accounts = {address: Account(state.owner, bytes(state.data), state.lamports)}
    deps = dependencies(address, accounts[address])
    for key, found in zip(deps, (await client.get_multiple_accounts(deps, encoding="base64")).value, strict=True):
        assert found is not None, f"{key} not found"
        accounts[key] = Account(found.owner, bytes(found.data), found.lamports)
    return decode_pool(address, accounts)


async def funded_wallet(net: Localnet) -> Keypair:
    wallet = Keypair()
    await net.call("localnet_fund", [{"pubkey": str(wallet.pubkey())}])
    return wallet


def budget() -> list[Instruction]:
    return [set_compute_unit_limit(UNIT_LIMIT), set_compute_unit_price(UNIT_PRICE)]


def sign(
    payer: Keypair,
    instructions: list[Instruction],
    blockhash: Hash,
    *,
    legacy: bool = False,
    signers: list[Keypair] | None = None,
) -> VersionedTransaction:
    message: Message | MessageV0 = (
        Message.new_with_blockhash(instructions, payer.pubkey(), blockhash)
        if legacy
        else MessageV0.try_compile(payer.pubkey(), instructions, [], blockhash)
    )
    return VersionedTransaction(message, signers or [payer])


async def blockhash(client: AsyncClient) -> Hash:
    return (await client.get_latest_blockhash(Confirmed)).value.blockhash


@dataclass(frozen=True)
class Landed:
    signature: Signature
    err: object


async def send_and_confirm(
    client: AsyncClient, ws_url: str, tx: VersionedTransaction, *, skip_preflight: bool = True, timeout: float = 10
) -> Landed:
    """Subscribe to the signature, send, wait for the one notification."""
    signature = tx.signatures[0]
    async with SolanaWsClient(ws_url) as ws:
        await ws.signature_subscribe(signature=signature, commitment=Confirmed)
        sent = await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=skip_preflight))
        assert sent.value == signature
        note = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(note, SignatureNotification)
    return Landed(signature, note.result.value.err)


async def token_deltas(client: AsyncClient, signature: Signature, owner: Pubkey) -> dict[Pubkey, int]:
    """The owner's token balance changes in a landed transaction (getTransaction meta)."""
    found = await client.get_transaction(signature, encoding="json", max_supported_transaction_version=0)
    assert found.value is not None
    meta = found.value.transaction.meta
    assert meta is not None
    out: dict[Pubkey, int] = defaultdict(int)
    for sign_, balances in ((-1, meta.pre_token_balances or []), (1, meta.post_token_balances or [])):
        for bal in balances:
            if bal.owner == owner:
                out[bal.mint] += sign_ * int(bal.ui_token_amount.amount)
    return {m: d for m, d in out.items() if d}


async def token_balance(client: AsyncClient, account: Pubkey) -> int:
    return int((await client.get_token_account_balance(account)).value.amount)
