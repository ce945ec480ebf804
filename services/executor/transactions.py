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
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from venues.onchain import SwapKeys, create_ata_idempotent_instruction, memo_instruction, swap_instruction


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


class Wallet:
    """The engine's keypair with its public key derived once.

    solders derives a keypair's public key on every ``pubkey()`` (~40 µs, a
    scalar multiplication), and ``VersionedTransaction(message, [keypair])``
    derives it twice more besides signing. The wallet signs the message's
    bytes once and places the signature itself.
    """

    __slots__ = ("keypair", "pubkey")

    def __init__(self, keypair: Keypair) -> None:
        self.keypair = keypair
        self.pubkey = keypair.pubkey()

    def sign(self, message: MessageV0) -> VersionedTransaction:
        """``message`` signed by this wallet, its only signer and fee payer."""
        if message.header.num_required_signatures != 1 or message.account_keys[0] != self.pubkey:
            raise ValueError("the wallet must be the message's only signer")
        return VersionedTransaction.populate(message, [self.keypair.sign_message(to_bytes_versioned(message))])


@dataclass(frozen=True)
class SwapLeg:
    pool: SwapKeys
    amount_in: int  # base units of the order's token_in
    min_amount_out: int  # base units of token_out


def memo_text(order_id: str, attempt: int) -> str:
    return f"dexengine order={order_id} attempt={attempt}"


def build_swap(
    wallet: Wallet,
    mint_in: Pubkey,
    mint_out: Pubkey,
    legs: list[SwapLeg],
    memo: str,
    blockhash: Hash,
    *,
    compute_unit_limit: int,
    priority_fee_micro_lamports: int,
) -> VersionedTransaction:
    owner = wallet.pubkey
    instructions = [
        set_compute_unit_limit(compute_unit_limit),
        set_compute_unit_price(priority_fee_micro_lamports),
        create_ata_idempotent_instruction(owner, owner, mint_out),
        *(swap_instruction(leg.pool, owner, mint_in, leg.amount_in, leg.min_amount_out) for leg in legs),
        memo_instruction(memo),
    ]
    message = MessageV0.try_compile(owner, instructions, [], blockhash)
    return wallet.sign(message)
