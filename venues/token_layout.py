"""The SPL Token program's account layouts: Mint (82 bytes) and Account (165 bytes).

Offsets as in spl-token ``state.rs`` (``Pack`` layouts, little endian,
``COption`` = u32 tag + value).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solders.pubkey import Pubkey

MINT_LEN = 82
TOKEN_ACCOUNT_LEN = 165
ACCOUNT_STATE_INITIALIZED = 1

# Rent-exempt minimums the real cluster charges (lamports per byte-year * 2 years).
MINT_RENT = 1_461_600
TOKEN_ACCOUNT_RENT = 2_039_280

_U64 = struct.Struct("<Q")
_NONE = b"\x00" * 4 + b"\x00" * 32


class LayoutError(ValueError):
    """Account data that does not have the layout it claims (length, discriminator, tag)."""


@dataclass(frozen=True)
class TokenAccount:
    mint: Pubkey
    owner: Pubkey
    amount: int


def _coption_pubkey(key: Pubkey | None) -> bytes:
    return _NONE if key is None else b"\x01\x00\x00\x00" + bytes(key)


def encode_mint(decimals: int, supply: int = 0, mint_authority: Pubkey | None = None) -> bytes:
    """``Mint { mint_authority, supply, decimals, is_initialized, freeze_authority }``."""
    return _coption_pubkey(mint_authority) + _U64.pack(supply) + bytes([decimals, 1]) + _NONE


def decode_mint(data: bytes) -> int:
    """The mint's decimals."""
    if len(data) != MINT_LEN:
        raise LayoutError(f"an SPL mint is {MINT_LEN} bytes, got {len(data)}")
    if data[45] != 1:
        raise LayoutError("mint is not initialized")
    return data[44]


def mint_supply(data: bytes) -> int:
    return int(_U64.unpack_from(data, 36)[0])


def set_mint_supply(data: bytes, supply: int) -> bytes:
    return data[:36] + _U64.pack(supply) + data[44:]


def encode_token_account(mint: Pubkey, owner: Pubkey, amount: int, native_rent: int | None = None) -> bytes:
    """``Account { mint, owner, amount, delegate, state, is_native, delegated_amount, close_authority }``.

    ``native_rent`` marks a wrapped-SOL account (``is_native = Some(rent_exempt_reserve)``).
    """
    is_native = b"\x00" * 12 if native_rent is None else b"\x01\x00\x00\x00" + _U64.pack(native_rent)
    return (
        bytes(mint)
        + bytes(owner)
        + _U64.pack(amount)
        + _NONE
        + bytes([ACCOUNT_STATE_INITIALIZED])
        + is_native
        + _U64.pack(0)
        + _NONE
    )


def decode_token_account(data: bytes) -> TokenAccount:
    if len(data) != TOKEN_ACCOUNT_LEN:
        raise LayoutError(f"an SPL token account is {TOKEN_ACCOUNT_LEN} bytes, got {len(data)}")
    if data[108] != ACCOUNT_STATE_INITIALIZED:
        raise LayoutError("token account is not initialized")
    return TokenAccount(Pubkey(data[0:32]), Pubkey(data[32:64]), int(_U64.unpack_from(data, 64)[0]))


def token_amount(data: bytes) -> int:
    return int(_U64.unpack_from(data, 64)[0])


def set_token_amount(data: bytes, amount: int) -> bytes:
    if not 0 <= amount < 1 << 64:
        raise OverflowError("token amount out of u64 range")
    return data[:64] + _U64.pack(amount) + data[72:]


def is_native_token_account(data: bytes) -> bool:
    return data[109] == 1
