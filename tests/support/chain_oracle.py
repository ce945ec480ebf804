"""What the cluster itself says the engine did: an oracle outside the engine.

Reads the localnet over its public JSON-RPC with solana-py, as any block
explorer would: every transaction the engine's wallet signed
(getSignaturesForAddress, paged), each one's memo (the order it was for), its
error and the wallet's token balance changes (getTransaction), and the
wallet's token balances (getTokenAccountsByOwner). Nothing here reads the
engine's tables.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TokenAccountOpts
from solders.pubkey import Pubkey
from solders.signature import Signature

from venues.onchain import TOKEN_PROGRAM_ID, decode_token_account

ORDER_IN_MEMO = re.compile(r"order=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


@dataclass(frozen=True)
class LandedTx:
    signature: str
    order_id: str | None
    ok: bool
    deltas: dict[str, int]  # mint -> raw change of the wallet's balance


@dataclass
class Ledger:
    txs: list[LandedTx] = field(default_factory=list)

    def swaps_by_order(self) -> Counter[str]:
        """Landed transactions without error, per order named in the memo."""
        return Counter(t.order_id for t in self.txs if t.ok and t.order_id)

    def successful(self, order_id: str) -> list[LandedTx]:
        return [t for t in self.txs if t.ok and t.order_id == order_id]

    def net_deltas(self) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for tx in self.txs:
            for mint, delta in tx.deltas.items():
                total[mint] += delta
        return dict(total)


async def wallet_balances(rpc_url: str, wallet: str) -> dict[str, int]:
    async with AsyncClient(rpc_url, commitment=Confirmed) as client:
        resp = await client.get_token_accounts_by_owner(
            Pubkey.from_string(wallet), TokenAccountOpts(program_id=TOKEN_PROGRAM_ID, encoding="base64")
        )
    out: dict[str, int] = defaultdict(int)
    for keyed in resp.value:
        account = decode_token_account(bytes(keyed.account.data))
        out[str(account.mint)] += account.amount
    return dict(out)


async def ledger(rpc_url: str, wallet: str, until: str | None = None) -> Ledger:
    """Every transaction signed by ``wallet`` (newest first), back to ``until`` (exclusive)."""
    book = Ledger()
    owner = Pubkey.from_string(wallet)
    async with AsyncClient(rpc_url, commitment=Confirmed, timeout=30) as client:
        before: Signature | None = None
        while True:
            page = await client.get_signatures_for_address(
                owner, before=before, until=Signature.from_string(until) if until else None, limit=1000
            )
            if not page.value:
                return book
            for info in page.value:
                book.txs.append(await _landed(client, info.signature, wallet))
            before = page.value[-1].signature


async def newest_signature(rpc_url: str, wallet: str) -> str | None:
    async with AsyncClient(rpc_url, commitment=Confirmed) as client:
        page = await client.get_signatures_for_address(Pubkey.from_string(wallet), limit=1)
    return str(page.value[0].signature) if page.value else None


async def _landed(client: AsyncClient, signature: Signature, wallet: str) -> LandedTx:
    resp = await client.get_transaction(signature, encoding="json", max_supported_transaction_version=0)
    assert resp.value is not None, f"{signature} listed but not readable"
    meta = resp.value.transaction.meta
    assert meta is not None
    deltas: dict[str, int] = defaultdict(int)
    for sign, balances in ((-1, meta.pre_token_balances or []), (1, meta.post_token_balances or [])):
        for bal in balances:
            if str(bal.owner) == wallet:
                deltas[str(bal.mint)] += sign * int(bal.ui_token_amount.amount)
    memo = ORDER_IN_MEMO.search(" ".join(meta.log_messages or []))
    return LandedTx(
        signature=str(signature),
        order_id=memo.group(1) if memo else None,
        ok=meta.err is None,
        deltas={m: d for m, d in deltas.items() if d},
    )
