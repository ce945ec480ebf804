"""Restarts, halting, subscriptions and the moving market."""

from __future__ import annotations

import asyncio

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import MemcmpOpts, TxOpts
from solana.rpc.websocket_api import SolanaWsClient
from solders.pubkey import Pubkey
from solders.rpc.config import RpcTransactionLogsFilterMentions
from solders.rpc.responses import AccountNotification, LogsNotification, ProgramNotification, SlotNotification

from tests.localnet.chain import (
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
)
from tests.support.localnet import Localnet, running_localnet
from tests.support.waiting import eventually
from venues.cpmm_layout import POOL_STATE_LEN
from venues.dlmm_layout import decode_lb_pair
from venues.onchain import (
    METEORA_DLMM_PROGRAM_ID,
    RAYDIUM_CPMM_PROGRAM_ID,
    Account,
    associated_token_address,
    create_ata_idempotent_instruction,
    is_pool_account,
    memo_instruction,
)
from venues.pools import METEORA, RAYDIUM
from venues.tokens import SOL, USDC


async def recv(ws: SolanaWsClient, kind: type, timeout: float = 5) -> object:
    """The next notification of ``kind`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            note = await ws.recv()
            if isinstance(note, kind):
                return note


async def test_restart_keeps_the_state_and_a_killed_node_lands_what_it_accepted(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    async with running_localnet({"LOCALNET_LANDING_MS": "1500"}, log_dir=tmp_path_factory.mktemp("restart")) as net:
        async with AsyncClient(net.rpc_url, commitment=Confirmed) as client:
            wallet = await funded_wallet(net)
            owner = wallet.pubkey()
            pool = await load_pool(client, seeded(RAYDIUM, SOL.mint, USDC.mint))
            ata = create_ata_idempotent_instruction(owner, owner, USDC_MINT)
            first = sign(wallet, [*budget(), ata, swap(pool, owner, SOL_MINT, 10**9, 0)], await blockhash(client))
            assert (await send_and_confirm(client, net.ws_url, first)).err is None
            slot = (await client.get_slot()).value
            usdc = await token_balance(client, associated_token_address(owner, USDC_MINT))
            pool = await load_pool(client, pool.address)
            genesis = (await client.get_genesis_hash()).value
            # Right after landing, getTransaction answers from the node's memory of recent transactions.
            recent = await client.get_transaction(first.signatures[0], max_supported_transaction_version=0)

        await net.restart()
        async with AsyncClient(net.rpc_url, commitment=Confirmed) as client:
            assert (await client.get_genesis_hash()).value == genesis  # the same cluster, not a new genesis
            assert (await client.get_slot()).value >= slot
            assert await token_balance(client, associated_token_address(owner, USDC_MINT)) == usdc
            assert (await load_pool(client, pool.address)).reserves == pool.reserves
            found = await client.get_transaction(first.signatures[0], max_supported_transaction_version=0)
            assert found.value is not None and found.value.transaction.meta is not None
            assert found.value.transaction.meta.err is None
            assert found.value == recent.value  # after a restart it comes from the ledger in PostgreSQL, unchanged
            # Accepted (answered with its signature), then the node dies before landing it.
            second = sign(wallet, [*budget(), ata, swap(pool, owner, SOL_MINT, 2 * 10**9, 0)], await blockhash(client))
            sent = await client.send_raw_transaction(bytes(second), TxOpts(skip_preflight=True))
            assert sent.value == second.signatures[0]
        await net.kill()
        await net.start()
        async with AsyncClient(net.rpc_url, commitment=Confirmed) as client:

            async def landed() -> bool:
                statuses = await client.get_signature_statuses([second.signatures[0]], search_transaction_history=True)
                return statuses.value[0] is not None

            await eventually(landed, timeout=10, every=0.1)
            # Resending it now changes nothing: it landed once.
            await client.send_raw_transaction(bytes(second), TxOpts(skip_preflight=True))
            await asyncio.sleep(2)
            ledger = await net.call("localnet_ledger", [{"address": str(owner)}])
            assert [r["signature"] for r in ledger] == [str(first.signatures[0]), str(second.signatures[0])]
            assert (await net.call("localnet_stats"))["pending"] == 0


async def test_halt_stops_landing_and_resume_lands(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    assert await net.call("localnet_halt") == {"halted": True}
    try:
        tx = sign(wallet, [memo_instruction("while halted")], await blockhash(client))
        await client.send_raw_transaction(bytes(tx))
        await asyncio.sleep(0.5)
        assert (await client.get_signature_statuses([tx.signatures[0]])).value == [None]
        assert (await net.call("localnet_stats"))["pending"] == 1
        slot = (await client.get_slot()).value
        await asyncio.sleep(0.5)
        assert (await client.get_slot()).value > slot  # slots keep ticking while halted
    finally:
        assert await net.call("localnet_resume") == {"halted": False}

    async def landed() -> bool:
        return (await client.get_signature_statuses([tx.signatures[0]])).value[0] is not None

    await eventually(landed, timeout=5)


async def test_transactions_that_land_together_are_in_the_ledger_in_the_order_received(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # No landing delay: each is due when received, so the landing order is the order sent.
    together = tmp_path_factory.mktemp("together")
    async with (
        running_localnet({"LOCALNET_LANDING_MS": "0"}, log_dir=together) as net,
        AsyncClient(net.rpc_url, commitment=Confirmed) as client,
    ):
        wallet = await funded_wallet(net)
        owner = wallet.pubkey()
        pool = await load_pool(client, seeded(METEORA, SOL.mint, USDC.mint))
        recent = await blockhash(client)
        txs = [sign(wallet, [*budget(), swap(pool, owner, SOL_MINT, 10**6 + i, 0)], recent) for i in range(5)]
        assert await net.call("localnet_halt") == {"halted": True}
        try:
            for tx in txs:
                await client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True))
        finally:
            assert await net.call("localnet_resume") == {"halted": False}  # all due at once: one commit
        keys = [tx.signatures[0] for tx in txs]

        async def all_landed() -> bool:
            return all(status is not None for status in (await client.get_signature_statuses(keys)).value)

        await eventually(all_landed, timeout=5)
        statuses = (await client.get_signature_statuses(keys)).value
        assert len({status.slot for status in statuses if status is not None}) == 1  # they landed together
        signatures = [str(key) for key in keys]
        for address in (owner, pool.address):  # each row keeps the accounts of its own transaction
            ledger = await net.call("localnet_ledger", [{"address": str(address)}])
            assert [row["signature"] for row in ledger if row["signature"] in signatures] == signatures
        for tx in txs:
            found = await client.get_transaction(tx.signatures[0], max_supported_transaction_version=0)
            assert found.value is not None and found.value.transaction.meta is not None
            assert found.value.transaction.meta.err is None
            message = found.value.transaction.transaction.message  # type: ignore[union-attr]
            assert message.account_keys == tx.message.account_keys


async def test_subscribers_see_pools_move_and_new_pools_appear(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    owner = wallet.pubkey()
    pool = await load_pool(client, seeded(METEORA, SOL.mint, USDC.mint))
    async with SolanaWsClient(net.ws_url) as ws:
        await ws.account_subscribe(pubkey=pool.address, commitment=Confirmed, encoding="base64")
        await ws.program_subscribe(
            program_id=METEORA_DLMM_PROGRAM_ID,
            commitment=Confirmed,
            encoding="base64",
            filters=[904, MemcmpOpts(offset=88, bytes=str(SOL_MINT))],  # LbPairs whose token X is SOL
        )
        await ws.logs_subscribe(filter_=RpcTransactionLogsFilterMentions(owner), commitment=Confirmed)
        await ws.slot_subscribe()
        ata = create_ata_idempotent_instruction(owner, owner, USDC_MINT)
        tx = sign(wallet, [*budget(), ata, swap(pool, owner, SOL_MINT, 30 * 10**9, 0)], await blockhash(client))
        await client.send_raw_transaction(bytes(tx))  # 4,500 USDC: more than the active bin holds

        account = await recv(ws, AccountNotification)
        assert isinstance(account, AccountNotification)
        data = bytes(account.result.value.data)
        assert decode_lb_pair(data).active_id < pool.pool.active_id  # type: ignore[union-attr]
        program = await recv(ws, ProgramNotification)
        assert isinstance(program, ProgramNotification)
        assert program.result.value.pubkey == pool.address
        assert bytes(program.result.value.account.data) == data
        logs = await recv(ws, LogsNotification)
        assert isinstance(logs, LogsNotification)
        assert logs.result.value.signature == tx.signatures[0] and logs.result.value.err is None
        slot = await recv(ws, SlotNotification)
        assert isinstance(slot, SlotNotification) and slot.result.slot > 0
        after = await load_pool(client, pool.address)
        assert after.pool.active_id < pool.pool.active_id  # type: ignore[union-attr]

    async with SolanaWsClient(net.ws_url) as ws:
        await ws.program_subscribe(
            program_id=RAYDIUM_CPMM_PROGRAM_ID, commitment=Confirmed, encoding="base64", filters=[POOL_STATE_LEN]
        )
        mint = (await net.call("localnet_createMint", [{"decimals": 9}]))["mint"]
        created = await net.call(
            "localnet_createPool", [{"venue": "raydium", "mints": [mint, USDC.mint], "reserves": ["1000", "5000"]}]
        )
        note = await recv(ws, ProgramNotification)
        assert isinstance(note, ProgramNotification)
        assert str(note.result.value.pubkey) == created["pool"]
        new = note.result.value.account
        assert is_pool_account(Account(new.owner, bytes(new.data), new.lamports))


async def test_the_market_moves_pool_accounts(tmp_path_factory: pytest.TempPathFactory) -> None:
    async with (
        running_localnet({"MARKET_DRIFT": "true"}, log_dir=tmp_path_factory.mktemp("market")) as net,
        SolanaWsClient(net.ws_url) as ws,
    ):
        await ws.program_subscribe(program_id=RAYDIUM_CPMM_PROGRAM_ID, commitment=Confirmed, encoding="base64")
        await ws.program_subscribe(program_id=METEORA_DLMM_PROGRAM_ID, commitment=Confirmed, encoding="base64")
        moved: set[Pubkey] = set()
        async with asyncio.timeout(20):
            while len(moved) < 3:
                note = await ws.recv()
                assert isinstance(note, ProgramNotification)
                account = note.result.value.account
                if is_pool_account(Account(account.owner, bytes(account.data), account.lamports)):
                    moved.add(note.result.value.pubkey)


async def test_set_price_moves_a_pair_as_an_arbitrage_would(net: Localnet, client: AsyncClient) -> None:
    moved = await net.call("localnet_setPrice", [{"mints": [SOL.mint, USDC.mint], "price": "160"}])
    assert {m["venue"] for m in moved["moved"]} == {"raydium", "meteora"}
    for venue in (RAYDIUM, METEORA):
        pool = await load_pool(client, seeded(venue, SOL.mint, USDC.mint))
        spot = pool.pool.spot_price(SOL.mint).scaleb(9 - 6)
        assert abs(spot / 160 - 1) < 0.003, (venue, spot)
    await net.call("localnet_setPrice", [{"mints": [SOL.mint, USDC.mint], "price": "150"}])


async def test_unsubscribe_ends_notifications(net: Localnet, client: AsyncClient) -> None:
    wallet = await funded_wallet(net)
    owner = wallet.pubkey()
    pool = await load_pool(client, seeded(RAYDIUM, SOL.mint, USDC.mint))
    async with SolanaWsClient(net.ws_url) as ws:
        account = await ws.account_subscribe(pubkey=pool.address, commitment=Confirmed, encoding="base64")
        program = await ws.program_subscribe(program_id=RAYDIUM_CPMM_PROGRAM_ID, encoding="base64")
        slots = await ws.slot_subscribe()
        for sub in (account, program, slots):
            await ws.unsubscribe(sub)  # raises unless the node answers true
        # A slot may tick between subscribing and unsubscribing: its notification
        # came before the unsubscribe's answer and waits in the client's queue.
        while True:
            try:
                await asyncio.wait_for(ws.recv(), 0.05)
            except TimeoutError:
                break
        ata = create_ata_idempotent_instruction(owner, owner, USDC_MINT)
        tx = sign(wallet, [*budget(), ata, swap(pool, owner, SOL_MINT, 10**9, 0)], await blockhash(client))
        assert (await send_and_confirm(client, net.ws_url, tx)).err is None
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.6)
