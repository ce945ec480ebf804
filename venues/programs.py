"""Program ids, program-derived addresses and the Associated Token Account program.

Every address here is the real one: the mainnet program ids, and the PDA seeds
the programs themselves use, so an address computed here is the address the
program would accept on a real cluster.
"""

from __future__ import annotations

import functools
import hashlib

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

SYSTEM_PROGRAM_ID = Pubkey.from_string("11111111111111111111111111111111")
TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM_ID = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
ASSOCIATED_TOKEN_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")  # SPL Memo v2
MEMO_V1_PROGRAM_ID = Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
COMPUTE_BUDGET_PROGRAM_ID = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
RENT_SYSVAR_ID = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
NATIVE_MINT = Pubkey.from_string("So11111111111111111111111111111111111111112")

RAYDIUM_CPMM_PROGRAM_ID = Pubkey.from_string("CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C")
# Meteora DLMM (program "lb_clmm"), as declared in the IDL of MeteoraAg/dlmm-sdk.
METEORA_DLMM_PROGRAM_ID = Pubkey.from_string("LBUZKhRxPF3XUpBCjp4YzTKgLccjZhTSDM9YuVaPwxo")

RAYDIUM = "raydium"
METEORA = "meteora"
VENUE_PROGRAMS: dict[str, Pubkey] = {RAYDIUM: RAYDIUM_CPMM_PROGRAM_ID, METEORA: METEORA_DLMM_PROGRAM_ID}
PROGRAM_VENUES: dict[Pubkey, str] = {program: venue for venue, program in VENUE_PROGRAMS.items()}


def anchor_discriminator(namespace: str, name: str) -> bytes:
    """Anchor's 8-byte tag: ``sha256("<namespace>:<name>")[:8]`` (``global`` for instructions, ``account``)."""
    return hashlib.sha256(f"{namespace}:{name}".encode()).digest()[:8]


def pda(seeds: list[bytes], program_id: Pubkey) -> Pubkey:
    """The program-derived address of ``seeds`` (remembered: the same pools and wallets come back every order,
    and each search hashes until it finds a bump that is off the curve)."""
    return _pda(tuple(seeds), program_id)


@functools.lru_cache(maxsize=16_384)
def _pda(seeds: tuple[bytes, ...], program_id: Pubkey) -> Pubkey:
    return Pubkey.find_program_address(list(seeds), program_id)[0]


# -- Associated Token Account program -------------------------------------------


def associated_token_address(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The ATA of ``owner`` for ``mint`` (classic Token program): ``[owner, token program, mint]``."""
    return pda([bytes(owner), bytes(TOKEN_PROGRAM_ID), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM_ID)


ATA_CREATE = 0
ATA_CREATE_IDEMPOTENT = 1


def create_ata_idempotent_instruction(payer: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    """``CreateIdempotent`` (instruction 1) of the ATA program: a no-op when the account exists."""
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM_ID,
        bytes([ATA_CREATE_IDEMPOTENT]),
        [
            AccountMeta(payer, is_signer=True, is_writable=True),
            AccountMeta(associated_token_address(owner, mint), is_signer=False, is_writable=True),
            AccountMeta(owner, is_signer=False, is_writable=False),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
            AccountMeta(TOKEN_PROGRAM_ID, is_signer=False, is_writable=False),
        ],
    )


def memo_instruction(text: str | bytes, signers: list[Pubkey] | None = None) -> Instruction:
    """SPL Memo v2: the data is the UTF-8 memo; listed accounts must sign."""
    data = text.encode() if isinstance(text, str) else text
    metas = [AccountMeta(s, is_signer=True, is_writable=False) for s in signers or []]
    return Instruction(MEMO_PROGRAM_ID, data, metas)
