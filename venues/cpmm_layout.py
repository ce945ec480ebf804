"""Raydium CPMM (raydium-cp-swap) accounts and the ``swap_base_input`` instruction.

Layouts follow the program's IDL v0.2.0 (``raydium_cp_swap``, program
``CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C``) and ``states/pool.rs`` /
``states/config.rs``: Anchor accounts, 8-byte discriminator
``sha256("account:<Name>")[:8]`` then the fields in IDL order, packed.

- ``PoolState`` (637 bytes, zero-copy packed): amm_config @8, pool_creator @40,
  token_0_vault @72, token_1_vault @104, lp_mint @136, token_0_mint @168,
  token_1_mint @200, token_0_program @232, token_1_program @264,
  observation_key @296, auth_bump @328, status @329, lp_mint_decimals @330,
  mint_0_decimals @331, mint_1_decimals @332, lp_supply @333,
  protocol_fees_token_0 @341, protocol_fees_token_1 @349, fund_fees_token_0
  @357, fund_fees_token_1 @365, open_time @373, recent_epoch @381, padding
  [u64; 31] @389.
- ``AmmConfig`` (236 bytes, borsh): bump @8, disable_create_pool @9, index
  @10, trade_fee_rate @12, protocol_fee_rate @20, fund_fee_rate @28,
  create_pool_fee @36, protocol_owner @44, fund_owner @76, padding [u64; 16] @108.
- ``ObservationState`` (4075 bytes): initialized, observation_index, pool_id,
  100 observations, padding. The localnet creates it and never updates it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solders.pubkey import Pubkey

from venues.programs import RAYDIUM_CPMM_PROGRAM_ID, TOKEN_PROGRAM_ID, anchor_discriminator, pda
from venues.token_layout import LayoutError

DEFAULT_PUBKEY = Pubkey.default()

POOL_STATE_DISCRIMINATOR = anchor_discriminator("account", "PoolState")
AMM_CONFIG_DISCRIMINATOR = anchor_discriminator("account", "AmmConfig")
OBSERVATION_STATE_DISCRIMINATOR = anchor_discriminator("account", "ObservationState")
SWAP_BASE_INPUT_DISCRIMINATOR = anchor_discriminator("global", "swap_base_input")

FEE_RATE_DENOMINATOR = 1_000_000
PROTOCOL_FEE_RATE = 120_000  # of the trade fee, mainnet configs
FUND_FEE_RATE = 40_000
# The mainnet AmmConfig indexes of the localnet's fee tiers (index 0 is the real 0.25 % config D4FPEru...).
CONFIG_INDEX_BY_FEE = {2_500: 0, 10_000: 1, 100: 5}

AUTH_SEED = b"vault_and_lp_mint_auth_seed"
POOL_SEED = b"pool"
POOL_VAULT_SEED = b"pool_vault"
POOL_LP_MINT_SEED = b"pool_lp_mint"
OBSERVATION_SEED = b"observation"
AMM_CONFIG_SEED = b"amm_config"

STATUS_DISABLE_SWAP = 1 << 2

# Program errors (IDL "errors"; Anchor adds 6000 to the enum index).
ERR_NOT_APPROVED = 6000  # swap disabled or before open_time
ERR_EXCEEDED_SLIPPAGE = 6005  # 0x1775
ERR_ZERO_TRADING_TOKENS = 6006
ERR_INVALID_VAULT = 6008
ERRORS = {
    ERR_NOT_APPROVED: ("NotApproved", "Not approved"),
    6003: ("InvalidInput", "InvalidInput"),
    ERR_EXCEEDED_SLIPPAGE: ("ExceededSlippage", "Exceeds desired slippage limit"),
    ERR_ZERO_TRADING_TOKENS: ("ZeroTradingTokens", "Given pool token amount results in zero trading tokens"),
    ERR_INVALID_VAULT: ("InvalidVault", "invaild vault"),
}

# swap_base_input accounts in IDL order: (name, writable, signer).
SWAP_BASE_INPUT_ACCOUNTS: tuple[tuple[str, bool, bool], ...] = (
    ("payer", False, True),
    ("authority", False, False),
    ("amm_config", False, False),
    ("pool_state", True, False),
    ("input_token_account", True, False),
    ("output_token_account", True, False),
    ("input_vault", True, False),
    ("output_vault", True, False),
    ("input_token_program", False, False),
    ("output_token_program", False, False),
    ("input_token_mint", False, False),
    ("output_token_mint", False, False),
    ("observation_state", True, False),
)
SWAP_BASE_INPUT_ARGS = (("amount_in", "u64"), ("minimum_amount_out", "u64"))

_POOL = struct.Struct("<8s" + "32s" * 10 + "BBBBB" + "Q" * 7 + "248x")
_CONFIG = struct.Struct("<8sB?HQQQQ32s32s128x")
POOL_STATE_LEN = _POOL.size  # 637
AMM_CONFIG_LEN = _CONFIG.size  # 236
OBSERVATION_STATE_LEN = 8 + 1 + 2 + 32 + 100 * 40 + 32  # 4075
_SWAP_ARGS = struct.Struct("<8sQQ")


# -- addresses --------------------------------------------------------------------


def authority_address() -> Pubkey:
    return pda([AUTH_SEED], RAYDIUM_CPMM_PROGRAM_ID)


def amm_config_address(index: int) -> Pubkey:
    return pda([AMM_CONFIG_SEED, index.to_bytes(2, "big")], RAYDIUM_CPMM_PROGRAM_ID)


def sorted_mints(mint_a: Pubkey, mint_b: Pubkey) -> tuple[Pubkey, Pubkey]:
    """CPMM requires token_0 < token_1 (byte order of the keys)."""
    return (mint_a, mint_b) if bytes(mint_a) < bytes(mint_b) else (mint_b, mint_a)


def pool_address(amm_config: Pubkey, mint_a: Pubkey, mint_b: Pubkey) -> Pubkey:
    token_0, token_1 = sorted_mints(mint_a, mint_b)
    return pda([POOL_SEED, bytes(amm_config), bytes(token_0), bytes(token_1)], RAYDIUM_CPMM_PROGRAM_ID)


def vault_address(pool: Pubkey, mint: Pubkey) -> Pubkey:
    return pda([POOL_VAULT_SEED, bytes(pool), bytes(mint)], RAYDIUM_CPMM_PROGRAM_ID)


def lp_mint_address(pool: Pubkey) -> Pubkey:
    return pda([POOL_LP_MINT_SEED, bytes(pool)], RAYDIUM_CPMM_PROGRAM_ID)


def observation_address(pool: Pubkey) -> Pubkey:
    return pda([OBSERVATION_SEED, bytes(pool)], RAYDIUM_CPMM_PROGRAM_ID)


# -- accounts ---------------------------------------------------------------------


@dataclass(frozen=True)
class AmmConfig:
    index: int
    trade_fee_rate: int
    protocol_fee_rate: int = PROTOCOL_FEE_RATE
    fund_fee_rate: int = FUND_FEE_RATE
    bump: int = 0
    disable_create_pool: bool = False
    create_pool_fee: int = 150_000_000
    protocol_owner: Pubkey = DEFAULT_PUBKEY
    fund_owner: Pubkey = DEFAULT_PUBKEY


def encode_amm_config(config: AmmConfig) -> bytes:
    return _CONFIG.pack(
        AMM_CONFIG_DISCRIMINATOR,
        config.bump,
        config.disable_create_pool,
        config.index,
        config.trade_fee_rate,
        config.protocol_fee_rate,
        config.fund_fee_rate,
        config.create_pool_fee,
        bytes(config.protocol_owner),
        bytes(config.fund_owner),
    )


def decode_amm_config(data: bytes) -> AmmConfig:
    if len(data) != AMM_CONFIG_LEN or data[:8] != AMM_CONFIG_DISCRIMINATOR:
        raise LayoutError("not a Raydium CPMM AmmConfig account")
    _, bump, disable, index, trade, protocol, fund, create_fee, p_owner, f_owner = _CONFIG.unpack(data)
    return AmmConfig(index, trade, protocol, fund, bump, disable, create_fee, Pubkey(p_owner), Pubkey(f_owner))


@dataclass(frozen=True)
class CpmmPoolState:
    amm_config: Pubkey
    token_0_vault: Pubkey
    token_1_vault: Pubkey
    token_0_mint: Pubkey
    token_1_mint: Pubkey
    observation_key: Pubkey
    mint_0_decimals: int
    mint_1_decimals: int
    open_time: int
    protocol_fees_token_0: int = 0
    protocol_fees_token_1: int = 0
    fund_fees_token_0: int = 0
    fund_fees_token_1: int = 0
    status: int = 0
    pool_creator: Pubkey = DEFAULT_PUBKEY
    lp_mint: Pubkey = DEFAULT_PUBKEY
    token_0_program: Pubkey = TOKEN_PROGRAM_ID
    token_1_program: Pubkey = TOKEN_PROGRAM_ID
    auth_bump: int = 0
    lp_mint_decimals: int = 9
    lp_supply: int = 0
    recent_epoch: int = 0

    def vault_amount_without_fee(self, vault_0: int, vault_1: int) -> tuple[int, int]:
        """What the program trades against: vault balances minus the protocol and fund fees owed."""
        return (
            vault_0 - self.protocol_fees_token_0 - self.fund_fees_token_0,
            vault_1 - self.protocol_fees_token_1 - self.fund_fees_token_1,
        )

    @property
    def swap_enabled(self) -> bool:
        return not self.status & STATUS_DISABLE_SWAP


def encode_pool_state(s: CpmmPoolState) -> bytes:
    return _POOL.pack(
        POOL_STATE_DISCRIMINATOR,
        bytes(s.amm_config),
        bytes(s.pool_creator),
        bytes(s.token_0_vault),
        bytes(s.token_1_vault),
        bytes(s.lp_mint),
        bytes(s.token_0_mint),
        bytes(s.token_1_mint),
        bytes(s.token_0_program),
        bytes(s.token_1_program),
        bytes(s.observation_key),
        s.auth_bump,
        s.status,
        s.lp_mint_decimals,
        s.mint_0_decimals,
        s.mint_1_decimals,
        s.lp_supply,
        s.protocol_fees_token_0,
        s.protocol_fees_token_1,
        s.fund_fees_token_0,
        s.fund_fees_token_1,
        s.open_time,
        s.recent_epoch,
    )


def is_pool_state(data: bytes) -> bool:
    return len(data) == POOL_STATE_LEN and data[:8] == POOL_STATE_DISCRIMINATOR


def decode_pool_state(data: bytes) -> CpmmPoolState:
    if not is_pool_state(data):
        raise LayoutError("not a Raydium CPMM PoolState account")
    (
        _,
        amm_config,
        creator,
        vault_0,
        vault_1,
        lp_mint,
        mint_0,
        mint_1,
        program_0,
        program_1,
        observation,
        auth_bump,
        status,
        lp_decimals,
        decimals_0,
        decimals_1,
        lp_supply,
        protocol_0,
        protocol_1,
        fund_0,
        fund_1,
        open_time,
        recent_epoch,
    ) = _POOL.unpack(data)
    return CpmmPoolState(
        amm_config=Pubkey(amm_config),
        token_0_vault=Pubkey(vault_0),
        token_1_vault=Pubkey(vault_1),
        token_0_mint=Pubkey(mint_0),
        token_1_mint=Pubkey(mint_1),
        observation_key=Pubkey(observation),
        mint_0_decimals=decimals_0,
        mint_1_decimals=decimals_1,
        open_time=open_time,
        protocol_fees_token_0=protocol_0,
        protocol_fees_token_1=protocol_1,
        fund_fees_token_0=fund_0,
        fund_fees_token_1=fund_1,
        status=status,
        pool_creator=Pubkey(creator),
        lp_mint=Pubkey(lp_mint),
        token_0_program=Pubkey(program_0),
        token_1_program=Pubkey(program_1),
        auth_bump=auth_bump,
        lp_mint_decimals=lp_decimals,
        lp_supply=lp_supply,
        recent_epoch=recent_epoch,
    )


def encode_observation_state(pool: Pubkey) -> bytes:
    return OBSERVATION_STATE_DISCRIMINATOR + b"\x00\x00\x00" + bytes(pool) + b"\x00" * (100 * 40 + 32)


# -- swap_base_input ----------------------------------------------------------------


def encode_swap_base_input_args(amount_in: int, minimum_amount_out: int) -> bytes:
    return _SWAP_ARGS.pack(SWAP_BASE_INPUT_DISCRIMINATOR, amount_in, minimum_amount_out)


def decode_swap_base_input_args(data: bytes) -> tuple[int, int]:
    if len(data) != _SWAP_ARGS.size:
        raise LayoutError(f"swap_base_input data is {_SWAP_ARGS.size} bytes, got {len(data)}")
    _, amount_in, minimum_amount_out = _SWAP_ARGS.unpack(data)
    return amount_in, minimum_amount_out
