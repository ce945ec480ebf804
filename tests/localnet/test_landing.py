"""The executor's view of the cluster (``services.executor.landing.Cluster``) against the localnet.

The outcome of a sent transaction comes from its signatureSubscribe notification, without a
getSignatureStatuses read, also when it landed before the subscription; without a stream,
getSignatureStatuses answers. Pools are read with one getMultipleAccounts once known.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from services.common.cluster import ClusterStream, rpc_client
from services.executor import landing
from services.executor.landing import Cluster
from services.executor.transactions import SwapLeg, Wallet, build_swap
from tests.localnet.chain import SOL_MINT, USDC_MINT, funded_wallet, seeded
from tests.support.localnet import Localnet
from tests.support.waiting import eventually
from venues.pools import METEORA, RAYDIUM
from venues.tokens import SOL, USDC

# The localnet's custom program error of a swap below its minimum out, as getSignatureStatuses shows it.
SLIPPAGE = {RAYDIUM: 6005, METEORA: 6003}


def counted(rpc: AsyncClient) -> Counter[str]:
    """Count the JSON-RPC requests ``rpc`` makes, by request type (GetSignatureStatuses, ...)."""
    calls: Counter[str] = Counter()
    provider: Any = rpc._provider
    make_request = provider.make_request

    async def counting(body: Any, parser: Any) -> Any:
        calls[type(body).__name__] += 1
        return await make_request(body, parser)

    provider.make_request = counting
    return calls


def pubsub_requests(cluster: Cluster) -> list[str]:
    """The methods the stream sends on its socket from now on (read off the wire, in the client's socket)."""
    ws = cluster.stream.client._ws  # type: ignore[union-attr]
    assert ws is not None
    methods: list[str] = []
    send = ws.send

    async def recording(message: Any, *args: Any, **kwargs: Any) -> None:
        methods.append(orjson.loads(message)["method"])
        await send(message, *args, **kwargs)

    ws.send = recording  # type: ignore[method-assign]
    return methods


@pytest.fixture
async def cluster(net: Localnet) -> AsyncIterator[Cluster]:
    stream = ClusterStream(net.ws_url)
    stream.start()
    await asyncio.wait_for(stream.connected.wait(), 10)
    cluster = Cluster(rpc_client(net.rpc_url), stream)
    try:
        yield cluster
    finally:
        await cluster.close()


async def a_swap(cluster: Cluster, wallet: Keypair, venue: str, *, min_out: int = 0) -> VersionedTransaction:
    address = seeded(venue, SOL.mint, USDC.mint)
    snapshot = (await cluster.pools([address]))[address]
    blockhash, _ = await cluster.latest_blockhash()
    leg = SwapLeg(snapshot.swap_keys, 10**9, min_out)
    return build_swap(
        Wallet(wallet),
        SOL_MINT,
        USDC_MINT,
        [leg],
        "landing test",
        blockhash,
        compute_unit_limit=400_000,
        priority_fee_micro_lamports=1_000,
    )


@pytest.mark.parametrize("venue", [RAYDIUM, METEORA])
async def test_a_landed_swap_is_known_from_its_notification(net: Localnet, cluster: Cluster, venue: str) -> None:
    wallet = await funded_wallet(net)
    tx = await a_swap(cluster, wallet, venue)
    calls = counted(cluster.rpc)
    _, last_valid = await cluster.latest_blockhash()
    sent = pubsub_requests(cluster)
    await cluster.send(bytes(tx))
    outcome = await cluster.wait(tx.signatures[0], last_valid)
    assert outcome.status == landing.LANDED and outcome.err is None and outcome.slot is not None
    result = await cluster.landed(tx.signatures[0], wallet.pubkey())
    assert result.deltas[str(SOL_MINT)] == -(10**9) and result.deltas[str(USDC_MINT)] > 0
    assert calls == Counter({"SendRawTransaction": 1, "GetTransaction": 1})
    # The node ends a signature's subscription with its notification: no signatureUnsubscribe follows.
    assert sent == ["signatureSubscribe"] and not cluster.stream.handlers


@pytest.mark.parametrize("venue", [RAYDIUM, METEORA])
async def test_a_failed_swap_is_known_from_its_notification_with_its_error(
    net: Localnet, cluster: Cluster, venue: str
) -> None:
    wallet = await funded_wallet(net)
    tx = await a_swap(cluster, wallet, venue, min_out=10**15)  # far above what 1 SOL gets
    calls = counted(cluster.rpc)
    _, last_valid = await cluster.latest_blockhash()
    await cluster.send(bytes(tx))
    outcome = await cluster.wait(tx.signatures[0], last_valid)
    assert outcome.status == landing.FAILED
    assert outcome.err == {"InstructionError": [3, {"Custom": SLIPPAGE[venue]}]}
    assert calls == Counter({"SendRawTransaction": 1})
    # The same outcome as the cluster's status of the signature.
    assert await cluster.status(tx.signatures[0], last_valid) == outcome


async def test_a_signature_that_landed_before_the_subscription_is_told_at_once(net: Localnet, cluster: Cluster) -> None:
    wallet = await funded_wallet(net)
    tx = await a_swap(cluster, wallet, RAYDIUM)
    _, last_valid = await cluster.latest_blockhash()
    await cluster.send(bytes(tx))

    async def landed() -> bool:
        return (await cluster.status(tx.signatures[0], last_valid, check_expiry=False)).status == landing.LANDED

    await eventually(landed, timeout=5, every=0.02)
    calls = counted(cluster.rpc)
    started = time.monotonic()
    outcome = await cluster.wait(tx.signatures[0], last_valid)
    assert outcome.status == landing.LANDED
    assert time.monotonic() - started < landing.POLL_S / 2  # the notification, not the polling fallback
    assert not calls


async def test_without_a_stream_the_status_answers(net: Localnet) -> None:
    cluster = Cluster(rpc_client(net.rpc_url), ClusterStream(net.ws_url))  # never started: no socket
    try:
        wallet = await funded_wallet(net)
        tx = await a_swap(cluster, wallet, RAYDIUM)
        _, last_valid = await cluster.latest_blockhash()
        await cluster.send(bytes(tx))
        outcome = await asyncio.wait_for(cluster.wait(tx.signatures[0], last_valid), 10)
        assert outcome.status == landing.LANDED
    finally:
        await cluster.close()


async def test_a_known_pool_is_read_in_one_call(net: Localnet, cluster: Cluster) -> None:
    addresses = [seeded(RAYDIUM, SOL.mint, USDC.mint), seeded(METEORA, SOL.mint, USDC.mint)]
    first = await cluster.pools(addresses)
    calls = counted(cluster.rpc)
    again = await cluster.pools(addresses)
    assert calls == Counter({"GetMultipleAccounts": 1})
    assert again == first
    # The pools moved: still one call, and what it decodes is what the cluster holds now.
    await net.call("localnet_setPrice", [{"mints": [SOL.mint, USDC.mint], "price": "200"}])
    try:
        calls.clear()
        moved = await cluster.pools(addresses)
        assert calls == Counter({"GetMultipleAccounts": 1})
        assert all(moved[a].reserves != first[a].reserves for a in addresses)
        assert moved == await Cluster(cluster.rpc, cluster.stream).pools(addresses)
        # A pool that needs an account it did not need when last read (a bin array initialized since): a second call.
        cluster._dependencies[addresses[1]] = cluster._dependencies[addresses[1]][:-1]
        calls.clear()
        assert await cluster.pools(addresses) == moved
        assert calls == Counter({"GetMultipleAccounts": 2})
    finally:
        await net.call("localnet_setPrice", [{"mints": [SOL.mint, USDC.mint], "price": "150"}])
