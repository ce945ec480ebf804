"""Building and signing an order's swap transaction with solders.

One versioned (v0) transaction per attempt: a compute budget, an idempotent
creation of the output token account, one venue swap instruction per leg
(each with its own minimum out, enforced by the venue program on chain) and a
Memo naming the order. The fee payer and the swapping owner is the engine's
wallet. Signing is local; the signature is known before anything is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from venues.onchain import PoolSnapshot, create_ata_idempotent_instruction, memo_instruction, swap_instruction


def load_keypair(path: str) -> Keypair:
    """A keypair file as ``solana-keygen`` writes it: a JSON array of 64 bytes."""
    try:
        raw = json.loads(Path(path).read_text())
        return Keypair.from_bytes(bytes(raw))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"SOLANA_KEYPAIR: cannot read a keypair from {path!r}: {exc}") from exc


def write_keypair(path: str, keypair: Keypair) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(list(bytes(keypair))))
    target.chmod(0o600)


@dataclass(frozen=True)
class SwapLeg:
    snapshot: PoolSnapshot
    amount_in: int  # base units of the order's token_in
    min_amount_out: int  # base units of token_out


def memo_text(order_id: str, attempt: int) -> str:
    return f"dexengine order={order_id} attempt={attempt}"


def build_swap(
    wallet: Keypair,
    mint_in: Pubkey,
    mint_out: Pubkey,
    legs: list[SwapLeg],
    memo: str,
    blockhash: Hash,
    *,
    compute_unit_limit: int,
    priority_fee_micro_lamports: int,
) -> VersionedTransaction:
    owner = wallet.pubkey()
    instructions = [
        set_compute_unit_limit(compute_unit_limit),
        set_compute_unit_price(priority_fee_micro_lamports),
        create_ata_idempotent_instruction(owner, owner, mint_out),
        *(swap_instruction(leg.snapshot, owner, mint_in, leg.amount_in, leg.min_amount_out) for leg in legs),
        memo_instruction(memo),
    ]
    message = MessageV0.try_compile(owner, instructions, [], blockhash)
    return VersionedTransaction(message, [wallet])
