"""Meteora DLMM (program ``lb_clmm``) accounts and the ``swap`` instruction.

Layouts follow ``idls/dlmm.json`` of MeteoraAg/dlmm-sdk (v0.12.0, bytemuck
``repr(C)`` zero-copy accounts, 8-byte Anchor discriminator first):

- ``LbPair`` (904 bytes): parameters (StaticParameters, 32 bytes) @8:
  base_factor u16 @8, filter_period u16 @10, decay_period u16 @12,
  reduction_factor u16 @14, variable_fee_control u32 @16,
  max_volatility_accumulator u32 @20, min_bin_id i32 @24, max_bin_id i32 @28,
  protocol_share u16 @32, base_fee_power_factor u8 @34, function_type u8 @35,
  collect_fee_mode u8 @36; v_parameters (VariableParameters, 32 bytes) @40:
  volatility_accumulator u32 @40, volatility_reference u32 @44,
  index_reference i32 @48, last_update_timestamp i64 @56; bump_seed @72,
  bin_step_seed @73, pair_type @75, active_id i32 @76, bin_step u16 @80,
  status u8 @82, require_base_factor_seed @83, base_factor_seed @84,
  activation_type u8 @86, creator_pool_on_off_control @87, token_x_mint @88,
  token_y_mint @120, reserve_x @152, reserve_y @184, protocol_fee (x, y u64)
  @216, reward_infos @264 (zero), oracle @552, bin_array_bitmap [u64; 16] @584,
  last_updated_at i64 @712, pre_activation_swap_address @752, base_key @784,
  activation_point u64 @816, pre_activation_duration u64 @824, creator @848,
  token_mint_x/y_program_flag @880/@881, version @882.
- ``BinArray`` (10136 bytes): index i64 @8, version u8 @16, lb_pair @24, then
  70 ``Bin`` of 144 bytes from @56: amount_x u64 +0, amount_y u64 +8,
  price u128 (Q64.64) +16, liquidity_supply u128 +32, the rest zero.
- ``Oracle``: idx, active_size, length (u64 each); the localnet keeps length 0.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from solders.pubkey import Pubkey

from venues.programs import METEORA_DLMM_PROGRAM_ID, anchor_discriminator, pda
from venues.token_layout import LayoutError

DEFAULT_PUBKEY = Pubkey.default()

LB_PAIR_DISCRIMINATOR = anchor_discriminator("account", "LbPair")
BIN_ARRAY_DISCRIMINATOR = anchor_discriminator("account", "BinArray")
ORACLE_DISCRIMINATOR = anchor_discriminator("account", "Oracle")
SWAP_DISCRIMINATOR = anchor_discriminator("global", "swap")

MAX_BIN_PER_ARRAY = 70
BIN_ARRAY_BITMAP_SIZE = 512  # the LbPair bitmap covers bin array indexes [-512, 511]
ACTIVATION_TYPE_SLOT = 0
ACTIVATION_TYPE_TIMESTAMP = 1
PAIR_TYPE_PERMISSIONLESS = 0
PAIR_STATUS_ENABLED = 0
MAX_BIN_ID = 443_636

BIN_ARRAY_SEED = b"bin_array"
ORACLE_SEED = b"oracle"
EVENT_AUTHORITY_SEED = b"__event_authority"
BITMAP_SEED = b"bitmap"

ERR_EXCEEDED_AMOUNT_SLIPPAGE_TOLERANCE = 6003  # 0x1773
ERR_BIN_ARRAY_NOT_FOUND = 6009
ERR_INVALID_TOKEN_MINT = 6010
ERR_PAIR_INSUFFICIENT_LIQUIDITY = 6012
ERR_INVALID_BIN_ARRAY = 6027
ERR_POOL_DISABLED = 6042  # the pair is disabled or not activated yet
ERRORS = {
    6002: ("InvalidInput", "Invalid input data"),
    ERR_EXCEEDED_AMOUNT_SLIPPAGE_TOLERANCE: ("ExceededAmountSlippageTolerance", "Exceeded amount slippage tolerance"),
    ERR_BIN_ARRAY_NOT_FOUND: ("BinArrayNotFound", "Bin array not found"),
    ERR_INVALID_TOKEN_MINT: ("InvalidTokenMint", "Invalid token mint"),
    ERR_PAIR_INSUFFICIENT_LIQUIDITY: ("PairInsufficientLiquidity", "Pair insufficient liquidity"),
    ERR_INVALID_BIN_ARRAY: ("InvalidBinArray", "Invalid bin array"),
    ERR_POOL_DISABLED: ("PoolDisabled", "Pool disabled"),
}

# swap accounts in IDL order: (name, writable, signer). Optional accounts
# (bin_array_bitmap_extension, host_fee_in) left out are passed as the program
# id, read-only, as Anchor clients do. Bin arrays follow as remaining accounts.
SWAP_ACCOUNTS: tuple[tuple[str, bool, bool], ...] = (
    ("lb_pair", True, False),
    ("bin_array_bitmap_extension", True, False),
    ("reserve_x", True, False),
    ("reserve_y", True, False),
    ("user_token_in", True, False),
    ("user_token_out", True, False),
    ("token_x_mint", False, False),
    ("token_y_mint", False, False),
    ("oracle", True, False),
    ("host_fee_in", True, False),
    ("user", False, True),
    ("token_x_program", False, False),
    ("token_y_program", False, False),
    ("event_authority", False, False),
    ("program", False, False),
)
OPTIONAL_SWAP_ACCOUNTS = frozenset({"bin_array_bitmap_extension", "host_fee_in"})
SWAP_ARGS = (("amount_in", "u64"), ("min_amount_out", "u64"))

_LB_PAIR = struct.Struct(
    "<8s"
    "HHHHIIiiHBBB3x"  # StaticParameters
    "IIi4xq8x"  # VariableParameters
    "B2sBiHBB2sBB"  # bump_seed .. creator_pool_on_off_control
    "32s32s32s32s"  # token_x_mint, token_y_mint, reserve_x, reserve_y
    "QQ"  # protocol_fee
    "32x288x"  # _padding_1, reward_infos
    "32s16Qq32x"  # oracle, bin_array_bitmap, last_updated_at, _padding_2
    "32s32sQQ8xQ32s"  # pre_activation_swap_address .. creator
    "BBB21x"  # program flags, version, _reserved
)
LB_PAIR_LEN = _LB_PAIR.size  # 904
_BIN_ARRAY_HEADER = struct.Struct("<8sqB7x32s")
_BIN = struct.Struct("<QQ16s16s96x")
BIN_LEN = _BIN.size  # 144
BIN_ARRAY_LEN = _BIN_ARRAY_HEADER.size + MAX_BIN_PER_ARRAY * BIN_LEN  # 10136
_AMOUNTS = struct.Struct("<QQ")
ORACLE_LEN = 8 + 24
_SWAP_ARGS = struct.Struct("<8sQQ")


# -- addresses --------------------------------------------------------------------


def lb_pair_address(mint_x: Pubkey, mint_y: Pubkey, bin_step: int, base_factor: int) -> Pubkey:
    """``derive_lb_pair_pda2``: [min(mints), max(mints), bin_step le, base_factor le]."""
    low, high = (mint_x, mint_y) if bytes(mint_x) < bytes(mint_y) else (mint_y, mint_x)
    return pda(
        [bytes(low), bytes(high), bin_step.to_bytes(2, "little"), base_factor.to_bytes(2, "little")],
        METEORA_DLMM_PROGRAM_ID,
    )


def reserve_address(lb_pair: Pubkey, mint: Pubkey) -> Pubkey:
    return pda([bytes(lb_pair), bytes(mint)], METEORA_DLMM_PROGRAM_ID)


def oracle_address(lb_pair: Pubkey) -> Pubkey:
    return pda([ORACLE_SEED, bytes(lb_pair)], METEORA_DLMM_PROGRAM_ID)


@functools.lru_cache(maxsize=8192)
def bin_array_address(lb_pair: Pubkey, index: int) -> Pubkey:
    """A PDA (a search for an off-curve hash, tens of microseconds): remembered, as every decode of a pool asks it."""
    return pda([BIN_ARRAY_SEED, bytes(lb_pair), index.to_bytes(8, "little", signed=True)], METEORA_DLMM_PROGRAM_ID)


def event_authority_address() -> Pubkey:
    return pda([EVENT_AUTHORITY_SEED], METEORA_DLMM_PROGRAM_ID)


def bin_array_index(bin_id: int) -> int:
    """The bin array holding ``bin_id``: floor(bin_id / 70)."""
    return bin_id // MAX_BIN_PER_ARRAY


# -- LbPair -------------------------------------------------------------------------


@dataclass(frozen=True)
class LbPair:
    base_factor: int
    filter_period: int
    decay_period: int
    reduction_factor: int
    variable_fee_control: int
    max_volatility_accumulator: int
    volatility_accumulator: int
    volatility_reference: int
    index_reference: int
    last_update_timestamp: int
    active_id: int
    bin_step: int
    token_x_mint: Pubkey
    token_y_mint: Pubkey
    reserve_x: Pubkey
    reserve_y: Pubkey
    oracle: Pubkey
    bin_array_bitmap: tuple[int, ...]  # 16 u64 words, bit (index + 512) set when the bin array exists
    activation_point: int
    activation_type: int = ACTIVATION_TYPE_TIMESTAMP
    status: int = PAIR_STATUS_ENABLED
    pair_type: int = PAIR_TYPE_PERMISSIONLESS
    protocol_share: int = 0
    base_fee_power_factor: int = 0
    min_bin_id: int = -MAX_BIN_ID
    max_bin_id: int = MAX_BIN_ID
    protocol_fee_x: int = 0
    protocol_fee_y: int = 0
    bump_seed: int = 0
    last_updated_at: int = 0
    creator: Pubkey = DEFAULT_PUBKEY

    def bin_array_indexes(self) -> list[int]:
        """Indexes of the bin arrays the bitmap marks as initialized, ascending."""
        out = []
        for word_index, word in enumerate(self.bin_array_bitmap):
            bits = word
            while bits:
                low = bits & -bits
                out.append(word_index * 64 + low.bit_length() - 1 - BIN_ARRAY_BITMAP_SIZE)
                bits ^= low
        return out


def bitmap_with(indexes: list[int] | set[int]) -> tuple[int, ...]:
    words = [0] * 16
    for index in indexes:
        bit = index + BIN_ARRAY_BITMAP_SIZE
        if not 0 <= bit < 2 * BIN_ARRAY_BITMAP_SIZE:
            raise ValueError(f"bin array index {index} is outside the LbPair bitmap (needs the extension account)")
        words[bit // 64] |= 1 << (bit % 64)
    return tuple(words)


def encode_lb_pair(p: LbPair) -> bytes:
    return _LB_PAIR.pack(
        LB_PAIR_DISCRIMINATOR,
        p.base_factor,
        p.filter_period,
        p.decay_period,
        p.reduction_factor,
        p.variable_fee_control,
        p.max_volatility_accumulator,
        p.min_bin_id,
        p.max_bin_id,
        p.protocol_share,
        p.base_fee_power_factor,
        0,
        0,
        p.volatility_accumulator,
        p.volatility_reference,
        p.index_reference,
        p.last_update_timestamp,
        p.bump_seed,
        p.bin_step.to_bytes(2, "little"),
        p.pair_type,
        p.active_id,
        p.bin_step,
        p.status,
        0,
        p.base_factor.to_bytes(2, "little"),
        p.activation_type,
        0,
        bytes(p.token_x_mint),
        bytes(p.token_y_mint),
        bytes(p.reserve_x),
        bytes(p.reserve_y),
        p.protocol_fee_x,
        p.protocol_fee_y,
        bytes(p.oracle),
        *p.bin_array_bitmap,
        p.last_updated_at,
        bytes(Pubkey.default()),
        bytes(Pubkey.default()),
        p.activation_point,
        0,
        0,
        bytes(p.creator),
        0,
        0,
        0,
    )


def is_lb_pair(data: bytes) -> bool:
    return len(data) == LB_PAIR_LEN and data[:8] == LB_PAIR_DISCRIMINATOR


def decode_lb_pair(data: bytes) -> LbPair:
    if not is_lb_pair(data):
        raise LayoutError("not a Meteora DLMM LbPair account")
    f = _LB_PAIR.unpack(data)
    return LbPair(
        base_factor=f[1],
        filter_period=f[2],
        decay_period=f[3],
        reduction_factor=f[4],
        variable_fee_control=f[5],
        max_volatility_accumulator=f[6],
        min_bin_id=f[7],
        max_bin_id=f[8],
        protocol_share=f[9],
        base_fee_power_factor=f[10],
        volatility_accumulator=f[13],
        volatility_reference=f[14],
        index_reference=f[15],
        last_update_timestamp=f[16],
        bump_seed=f[17],
        pair_type=f[19],
        active_id=f[20],
        bin_step=f[21],
        status=f[22],
        activation_type=f[25],
        token_x_mint=Pubkey(f[27]),
        token_y_mint=Pubkey(f[28]),
        reserve_x=Pubkey(f[29]),
        reserve_y=Pubkey(f[30]),
        protocol_fee_x=f[31],
        protocol_fee_y=f[32],
        oracle=Pubkey(f[33]),
        bin_array_bitmap=tuple(f[34:50]),
        last_updated_at=f[50],
        activation_point=f[53],
        creator=Pubkey(f[56]),
    )


# -- BinArray ---------------------------------------------------------------------


def encode_bin_array(
    lb_pair: Pubkey, index: int, bins: dict[int, tuple[int, int]], prices: dict[int, int] | None = None
) -> bytes:
    """A bin array with ``bins`` (bin id -> (amount_x, amount_y)); bins it lacks are empty.

    ``prices`` gives each bin's Q64.64 price (bin id -> price); missing ones are written as 0.
    """
    parts = [_BIN_ARRAY_HEADER.pack(BIN_ARRAY_DISCRIMINATOR, index, 1, bytes(lb_pair))]
    lower = index * MAX_BIN_PER_ARRAY
    for bin_id in range(lower, lower + MAX_BIN_PER_ARRAY):
        x, y = bins.get(bin_id, (0, 0))
        price = (prices or {}).get(bin_id, 0)
        liquidity = min(price * x + (y << 64), (1 << 128) - 1)
        parts.append(_BIN.pack(x, y, price.to_bytes(16, "little"), liquidity.to_bytes(16, "little")))
    return b"".join(parts)


def is_bin_array(data: bytes) -> bool:
    return len(data) == BIN_ARRAY_LEN and data[:8] == BIN_ARRAY_DISCRIMINATOR


@dataclass(frozen=True)
class BinArray:
    index: int
    lb_pair: Pubkey
    bins: dict[int, tuple[int, int]]  # every bin of the array, empty ones included

    def price(self, data: bytes, bin_id: int) -> int:
        offset = _BIN_ARRAY_HEADER.size + (bin_id - self.index * MAX_BIN_PER_ARRAY) * BIN_LEN + 16
        return int.from_bytes(data[offset : offset + 16], "little")


def decode_bin_array(data: bytes) -> BinArray:
    if not is_bin_array(data):
        raise LayoutError("not a Meteora DLMM BinArray account")
    _, index, _, lb_pair = _BIN_ARRAY_HEADER.unpack_from(data)
    lower = index * MAX_BIN_PER_ARRAY
    base = _BIN_ARRAY_HEADER.size
    bins = {lower + i: _AMOUNTS.unpack_from(data, base + i * BIN_LEN) for i in range(MAX_BIN_PER_ARRAY)}
    return BinArray(index, Pubkey(lb_pair), bins)


def encode_oracle() -> bytes:
    return ORACLE_DISCRIMINATOR + b"\x00" * 24


# -- swap -------------------------------------------------------------------------


def encode_swap_args(amount_in: int, min_amount_out: int) -> bytes:
    return _SWAP_ARGS.pack(SWAP_DISCRIMINATOR, amount_in, min_amount_out)


def decode_swap_args(data: bytes) -> tuple[int, int]:
    if len(data) != _SWAP_ARGS.size:
        raise LayoutError(f"swap data is {_SWAP_ARGS.size} bytes, got {len(data)}")
    _, amount_in, min_amount_out = _SWAP_ARGS.unpack(data)
    return amount_in, min_amount_out


def patch_bin_array(data: bytes, amounts: dict[int, tuple[int, int]]) -> bytes:
    """The bin array with new (amount_x, amount_y) for some of its bins (liquidity supply follows)."""
    buf = bytearray(data)
    index = struct.unpack_from("<q", buf, 8)[0]
    lower = index * MAX_BIN_PER_ARRAY
    for bin_id, (x, y) in amounts.items():
        offset = _BIN_ARRAY_HEADER.size + (bin_id - lower) * BIN_LEN
        if not 0 <= bin_id - lower < MAX_BIN_PER_ARRAY:
            raise ValueError(f"bin {bin_id} is not in bin array {index}")
        price = int.from_bytes(buf[offset + 16 : offset + 32], "little")
        liquidity = min(price * x + (y << 64), (1 << 128) - 1)
        _AMOUNTS.pack_into(buf, offset, x, y)
        buf[offset + 32 : offset + 48] = liquidity.to_bytes(16, "little")
    return bytes(buf)
