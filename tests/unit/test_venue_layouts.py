"""On-chain layouts of the venues, checked against the programs' published IDLs.

The IDL excerpts below are transcribed from raydium-io/raydium-cp-swap (IDL
v0.2.0, ``raydium_cp_swap``) and MeteoraAg/dlmm-sdk ``idls/dlmm.json``
(v0.12.0, ``lb_clmm``): discriminators, account order with writable/signer
flags, and argument order and widths.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address
from solders.token.state import Mint as SoldersMint
from solders.token.state import TokenAccount as SoldersTokenAccount
from spl.memo import instructions as spl_memo
from spl.memo.models import MemoParams
from spl.token import instructions as spl_token

from venues import cpmm_layout as cpmm
from venues import dlmm_layout as dlmm
from venues import onchain
from venues.dlmm import DlmmPool
from venues.errors import InsufficientLiquidityError
from venues.onchain import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    METEORA_DLMM_PROGRAM_ID,
    RAYDIUM_CPMM_PROGRAM_ID,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    VENUE_PROGRAMS,
    Account,
    InstructionLayoutError,
    LayoutError,
    PoolSnapshot,
    SwapKeys,
    associated_token_address,
    create_ata_idempotent_instruction,
    decode_mint,
    decode_pool,
    decode_swap_instruction,
    decode_swap_keys,
    decode_token_account,
    dependencies,
    is_pool_account,
    pool_accounts,
    swap_accounts,
    swap_instruction,
)
from venues.pools import METEORA, RAYDIUM, seed_pools
from venues.raydium import ConstantProductPool
from venues.tokens import SOL, TOKENS, USDC

# -- IDL excerpts -----------------------------------------------------------------------


class CpmmIdlInstruction(TypedDict):
    discriminator: list[int]
    accounts: list[tuple[str, bool, bool]]  # (name, writable, signer)
    args: list[tuple[str, str]]


class DlmmIdlInstruction(TypedDict):
    discriminator: list[int]
    accounts: list[tuple[str, bool, bool, bool]]  # (name, writable, signer, optional)
    args: list[tuple[str, str]]


CPMM_IDL_SWAP_BASE_INPUT: CpmmIdlInstruction = {
    "discriminator": [143, 190, 90, 218, 196, 30, 51, 222],
    "accounts": [
        ("payer", False, True),
        ("authority", False, False),
        ("ammConfig", False, False),
        ("poolState", True, False),
        ("inputTokenAccount", True, False),
        ("outputTokenAccount", True, False),
        ("inputVault", True, False),
        ("outputVault", True, False),
        ("inputTokenProgram", False, False),
        ("outputTokenProgram", False, False),
        ("inputTokenMint", False, False),
        ("outputTokenMint", False, False),
        ("observationState", True, False),
    ],
    "args": [("amountIn", "u64"), ("minimumAmountOut", "u64")],
}
CPMM_IDL_ACCOUNTS = {
    "AmmConfig": [218, 244, 33, 104, 203, 203, 43, 111],
    "ObservationState": [122, 174, 197, 53, 129, 9, 165, 132],
    "PoolState": [247, 237, 227, 245, 215, 195, 222, 70],
}
CPMM_IDL_ERRORS = {6000: "notApproved", 6005: "exceededSlippage", 6006: "zeroTradingTokens"}

DLMM_IDL_SWAP: DlmmIdlInstruction = {
    "discriminator": [248, 198, 158, 145, 225, 117, 135, 200],
    "accounts": [  # (name, writable, signer, optional)
        ("lb_pair", True, False, False),
        ("bin_array_bitmap_extension", True, False, True),
        ("reserve_x", True, False, False),
        ("reserve_y", True, False, False),
        ("user_token_in", True, False, False),
        ("user_token_out", True, False, False),
        ("token_x_mint", False, False, False),
        ("token_y_mint", False, False, False),
        ("oracle", True, False, False),
        ("host_fee_in", True, False, True),
        ("user", False, True, False),
        ("token_x_program", False, False, False),
        ("token_y_program", False, False, False),
        ("event_authority", False, False, False),
        ("program", False, False, False),
    ],
    "args": [("amount_in", "u64"), ("min_amount_out", "u64")],
}
DLMM_IDL_ERRORS = {
    6003: "ExceededAmountSlippageTolerance",
    6009: "BinArrayNotFound",
    6012: "PairInsufficientLiquidity",
    6042: "PoolDisabled",
}
WIDTHS = {"u64": 8}

POOLS = seed_pools()
USER = Pubkey.from_string("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")


def chain_accounts() -> dict[Pubkey, Account]:
    """Every seeded pool as accounts, plus the mints."""
    accounts: dict[Pubkey, Account] = {}
    for pool in POOLS.values():
        decimals = tuple(TOKENS[m].decimals for m in pool.mints)
        _, pool_accounts_ = pool_accounts(pool, decimals)  # type: ignore[arg-type]
        accounts.update(pool_accounts_)
    for token in TOKENS.values():
        accounts[Pubkey.from_string(token.mint)] = onchain.mint_account(token.decimals)
    return accounts


ACCOUNTS = chain_accounts()
SNAPSHOTS = {key: decode_pool(Pubkey.from_string(pool.pool_id), ACCOUNTS) for key, pool in POOLS.items()}


def args_of(data: bytes, args: list[tuple[str, str]]) -> list[int]:
    offset, values = 8, []
    for _, kind in args:
        width = WIDTHS[kind]
        values.append(int.from_bytes(data[offset : offset + width], "little"))
        offset += width
    assert offset == len(data), "no bytes beyond the IDL's arguments"
    return values


# -- discriminators and addresses --------------------------------------------------------


def test_discriminators_are_anchors_and_the_idls() -> None:
    assert list(cpmm.SWAP_BASE_INPUT_DISCRIMINATOR) == CPMM_IDL_SWAP_BASE_INPUT["discriminator"]
    assert list(dlmm.SWAP_DISCRIMINATOR) == DLMM_IDL_SWAP["discriminator"]
    assert list(cpmm.POOL_STATE_DISCRIMINATOR) == CPMM_IDL_ACCOUNTS["PoolState"]
    assert list(cpmm.AMM_CONFIG_DISCRIMINATOR) == CPMM_IDL_ACCOUNTS["AmmConfig"]
    assert list(cpmm.OBSERVATION_STATE_DISCRIMINATOR) == CPMM_IDL_ACCOUNTS["ObservationState"]
    for name, tag in (("LbPair", dlmm.LB_PAIR_DISCRIMINATOR), ("BinArray", dlmm.BIN_ARRAY_DISCRIMINATOR)):
        assert tag == hashlib.sha256(f"account:{name}".encode()).digest()[:8]


def test_program_ids_and_pdas_are_mainnets() -> None:
    assert VENUE_PROGRAMS == {"raydium": RAYDIUM_CPMM_PROGRAM_ID, "meteora": METEORA_DLMM_PROGRAM_ID}
    assert str(RAYDIUM_CPMM_PROGRAM_ID) == "CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C"
    assert str(METEORA_DLMM_PROGRAM_ID) == "LBUZKhRxPF3XUpBCjp4YzTKgLccjZhTSDM9YuVaPwxo"
    # Known mainnet addresses, derived here from the programs' seeds.
    assert str(cpmm.amm_config_address(0)) == "D4FPEruKEHrG5TenZ2mpDGEfu1iUvTiqBxvpU8HLBvC2"  # the 0.25 % config
    assert str(cpmm.authority_address()) == "GpMZbSM2GgvTKHJirzeGfMFoaZ8UR2X7F4v8vHTvxFbL"
    assert str(dlmm.event_authority_address()) == "D1ZN9Wj1fRSUQfCjhvnu1hqDMT7hzjzBBpi12nVniYD6"
    sol_usdc = POOLS[(RAYDIUM, frozenset((SOL.mint, USDC.mint)))]
    assert sol_usdc.pool_id == "7JuwJuNU88gurFnyWeiyGKbFmExMWcmRZntn9imEzdny"  # Raydium's CPMM SOL-USDC pool


def test_associated_token_accounts() -> None:
    mint = Pubkey.from_string(USDC.mint)
    assert associated_token_address(USER, mint) == get_associated_token_address(USER, mint)
    ix = create_ata_idempotent_instruction(USER, USER, mint)
    assert ix.program_id == ASSOCIATED_TOKEN_PROGRAM_ID and bytes(ix.data) == b"\x01"
    assert [(m.pubkey, m.is_writable, m.is_signer) for m in ix.accounts] == [
        (USER, True, True),
        (associated_token_address(USER, mint), True, False),
        (USER, False, False),
        (mint, False, False),
        (SYSTEM_PROGRAM_ID, False, False),
        (TOKEN_PROGRAM_ID, False, False),
    ]
    assert ix == spl_token.create_idempotent_associated_token_account(USER, USER, mint)  # solana-py's SPL client
    memo = onchain.memo_instruction("hello", [USER])
    theirs = spl_memo.create_memo(MemoParams(program_id=onchain.MEMO_PROGRAM_ID, signer=USER, message=b"hello"))
    # The same program, data and signer; spl_memo::build_memo marks the signer read-only (solana-py: writable).
    assert (memo.program_id, bytes(memo.data), memo.accounts[0].pubkey, memo.accounts[0].is_signer) == (
        theirs.program_id,
        bytes(theirs.data),
        theirs.accounts[0].pubkey,
        True,
    )
    assert not memo.accounts[0].is_writable


# -- SPL token layouts ------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_token_account_layout_is_spl_tokens(amount: int) -> None:
    mint = Pubkey.from_string(USDC.mint)
    data = onchain.encode_token_account(mint, USER, amount)
    theirs = SoldersTokenAccount.from_bytes(data)
    assert (theirs.mint, theirs.owner, theirs.amount) == (mint, USER, amount)
    assert decode_token_account(data) == onchain.TokenAccount(mint, USER, amount)
    assert len(data) == 165


def test_mint_layout_is_spl_tokens() -> None:
    data = onchain.encode_mint(6, supply=10**12)
    theirs = SoldersMint.from_bytes(data)
    assert (theirs.decimals, theirs.supply, theirs.is_initialized) == (6, 10**12, True)
    assert decode_mint(data) == 6 and len(data) == 82
    with pytest.raises(onchain.LayoutError):
        decode_mint(data + b"\x00")


# -- pool accounts ---------------------------------------------------------------------


def test_pool_account_sizes_and_offsets() -> None:
    ray = SNAPSHOTS[(RAYDIUM, frozenset((SOL.mint, USDC.mint)))]
    met = SNAPSHOTS[(METEORA, frozenset((SOL.mint, USDC.mint)))]
    state = ACCOUNTS[ray.address].data
    assert len(state) == 637 and ACCOUNTS[ray.keys["amm_config"]].data.__len__() == 236
    assert state[8:40] == bytes(ray.keys["amm_config"]) and state[168:200] == bytes(ray.mints[0])
    assert (state[331], state[332]) == ray.decimals
    assert struct.unpack_from("<Q", ACCOUNTS[ray.keys["amm_config"]].data, 12)[0] == 2_500  # trade_fee_rate
    pair = ACCOUNTS[met.address].data
    pool = met.pool
    assert isinstance(pool, DlmmPool)
    assert len(pair) == 904
    assert struct.unpack_from("<i", pair, 76)[0] == pool.active_id
    assert struct.unpack_from("<H", pair, 80)[0] == pool.bin_step
    assert struct.unpack_from("<H", pair, 8)[0] == pool.params.base_factor
    assert pair[88:120] == bytes(met.mints[0]) and pair[120:152] == bytes(met.mints[1])
    assert pair[152:184] == bytes(met.keys["reserve_x"]) and pair[552:584] == bytes(met.keys["oracle"])
    index, key = next(iter(met.bin_arrays.items()))
    array = ACCOUNTS[key].data
    assert len(array) == 10136 and struct.unpack_from("<q", array, 8)[0] == index and array[24:56] == bytes(met.address)
    first = index * 70
    assert struct.unpack_from("<QQ", array, 56) == pool.bins.get(first, (0, 0))
    assert int.from_bytes(array[72:88], "little") > 0  # the bin's Q64.64 price


def test_pool_accounts_are_recognised_and_name_their_dependencies() -> None:
    for snapshot in SNAPSHOTS.values():
        state = ACCOUNTS[snapshot.address]
        assert is_pool_account(state)
        deps = dependencies(snapshot.address, state)
        assert tuple([snapshot.address, *deps]) == snapshot.accounts
        only = {k: ACCOUNTS[k] for k in snapshot.accounts}
        assert decode_pool(snapshot.address, only).reserves == snapshot.reserves  # nothing else needed
    vault = ACCOUNTS[SNAPSHOTS[(RAYDIUM, frozenset((SOL.mint, USDC.mint)))].keys["vault_0"]]
    assert not is_pool_account(vault)
    assert not is_pool_account(Account(RAYDIUM_CPMM_PROGRAM_ID, b"\x00" * 637, 1))


def test_decoded_pools_carry_their_address_mints_and_decimals() -> None:
    for (venue, pair), pool in POOLS.items():
        snapshot = SNAPSHOTS[(venue, pair)]
        assert snapshot.venue == venue and snapshot.pool.pool_id == str(snapshot.address) == pool.pool_id
        assert {str(m) for m in snapshot.mints} == set(pair)
        assert snapshot.decimals == tuple(TOKENS[str(m)].decimals for m in snapshot.mints)
        assert snapshot.open_time == 0


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(POOLS, key=lambda k: POOLS[k].pool_id)), st.booleans(), st.floats(-9, -0.3))
def test_decoded_pools_quote_exactly_like_the_math(key: tuple[str, frozenset[str]], first: bool, size: float) -> None:
    """seed pool -> accounts -> decode_pool: the same output, both directions, many sizes."""
    pool, snapshot = POOLS[key], SNAPSHOTS[key]
    mint_in = pool.mints[0 if first else 1]
    reserve = snapshot.reserves[[str(m) for m in snapshot.mints].index(mint_in)]
    amount = max(1, int(max(reserve, 10**9) * 10**size))
    try:
        expected = pool.swap(mint_in, amount, 1_700_000_000)
    except InsufficientLiquidityError:
        with pytest.raises(InsufficientLiquidityError):
            snapshot.pool.swap(mint_in, amount, 1_700_000_000)
        return
    got = snapshot.pool.swap(mint_in, amount, 1_700_000_000)
    assert (got.amount_out, got.fee) == (expected.amount_out, expected.fee)
    # And the state after the swap, encoded and decoded again, still quotes like the math.
    after = expected.state
    decimals = snapshot.decimals if str(snapshot.mints[0]) == after.mints[0] else snapshot.decimals[::-1]
    withheld = (0, 0, 0, 0)
    if isinstance(after, ConstantProductPool):
        side = 0 if mint_in == str(snapshot.mints[0]) else 1
        owed = [0, 0, 0, 0]
        owed[side] = expected.fee * after.withheld_share_ppm // 1_000_000
        withheld = tuple(owed)  # type: ignore[assignment]
        if str(snapshot.mints[0]) != after.mints[0]:
            withheld = (withheld[1], withheld[0], withheld[3], withheld[2])
    address, accounts = pool_accounts(after, decimals, fees_owed=withheld)
    accounts.update({m: ACCOUNTS[m] for m in snapshot.mints})
    again = decode_pool(address, accounts)
    for mint in after.mints:
        probe = max(1, amount // 3)
        try:
            want = after.swap(mint, probe, 1_700_000_100).amount_out
        except InsufficientLiquidityError:
            continue
        assert again.pool.swap(mint, probe, 1_700_000_100).amount_out == want


# -- swap instructions ------------------------------------------------------------------


def metas(ix: Instruction) -> list[tuple[Pubkey, bool, bool]]:
    return [(m.pubkey, m.is_writable, m.is_signer) for m in ix.accounts]


def swap_keys_of(snapshot: PoolSnapshot) -> SwapKeys:
    """What the executor builds a swap from: decoded from the pool's swap accounts alone (the router's answer)."""
    return decode_swap_keys(snapshot.address, {a: ACCOUNTS[a] for a in swap_accounts(snapshot)})


@pytest.mark.parametrize("key", list(SNAPSHOTS), ids=lambda k: f"{k[0]}-{'-'.join(sorted(k[1]))[:20]}")
def test_swap_keys_from_the_state_account_are_the_full_decodes(key: tuple[str, frozenset[str]]) -> None:
    """The full decode (every account: vaults, bin arrays) is the oracle for the swap's keys read from the state
    account alone (and a DLMM pool's mints)."""
    snapshot = SNAPSHOTS[key]
    needed = swap_accounts(snapshot)
    assert needed[0] == snapshot.address
    assert len(needed) == (3 if snapshot.venue == METEORA else 1)
    keys = swap_keys_of(snapshot)
    assert keys == snapshot.swap_keys
    if snapshot.venue == METEORA:
        pool = snapshot.pool
        assert isinstance(pool, DlmmPool)
        assert keys.active_id == pool.active_id and dict(keys.bin_arrays) == dict(snapshot.bin_arrays)
        with pytest.raises(KeyError, match="token_y_mint"):  # a mint missing: nothing is guessed
            decode_swap_keys(snapshot.address, {a: ACCOUNTS[a] for a in needed[:2]})
    with pytest.raises(LayoutError):
        decode_swap_keys(snapshot.address, {snapshot.address: Account(USER, ACCOUNTS[snapshot.address].data, 1)})


def test_cpmm_swap_base_input_matches_the_idl() -> None:
    snapshot = SNAPSHOTS[(RAYDIUM, frozenset((SOL.mint, USDC.mint)))]
    sol, usdc = Pubkey.from_string(SOL.mint), Pubkey.from_string(USDC.mint)
    ix = swap_instruction(swap_keys_of(snapshot), USER, sol, 123_456_789, 987_654)
    assert ix.program_id == RAYDIUM_CPMM_PROGRAM_ID
    data = bytes(ix.data)
    assert list(data[:8]) == CPMM_IDL_SWAP_BASE_INPUT["discriminator"]
    assert args_of(data, CPMM_IDL_SWAP_BASE_INPUT["args"]) == [123_456_789, 987_654]
    flags = [(w, s) for _, w, s in CPMM_IDL_SWAP_BASE_INPUT["accounts"]]
    assert [(w, s) for _, w, s in metas(ix)] == flags
    vault_in = snapshot.keys["vault_0" if snapshot.mints[0] == sol else "vault_1"]
    vault_out = snapshot.keys["vault_1" if snapshot.mints[0] == sol else "vault_0"]
    assert [m.pubkey for m in ix.accounts] == [
        USER,
        cpmm.authority_address(),
        snapshot.keys["amm_config"],
        snapshot.address,
        associated_token_address(USER, sol),
        associated_token_address(USER, usdc),
        vault_in,
        vault_out,
        TOKEN_PROGRAM_ID,
        TOKEN_PROGRAM_ID,
        sol,
        usdc,
        cpmm.observation_address(snapshot.address),
    ]
    call = decode_swap_instruction(ix.program_id, [m.pubkey for m in ix.accounts], data)
    assert (call.venue, call.pool, call.user, call.amount_in, call.min_amount_out) == (
        "raydium",
        snapshot.address,
        USER,
        123_456_789,
        987_654,
    )
    assert call.user_token_in == associated_token_address(USER, sol) and call.named["input_vault"] == vault_in


@pytest.mark.parametrize("sell_x", [True, False])
def test_dlmm_swap_matches_the_idl(sell_x: bool) -> None:
    snapshot = SNAPSHOTS[(METEORA, frozenset((SOL.mint, USDC.mint)))]
    mint_in, mint_out = snapshot.mints if sell_x else snapshot.mints[::-1]
    ix = swap_instruction(swap_keys_of(snapshot), USER, mint_in, 5 * 10**9, 1)
    assert ix.program_id == METEORA_DLMM_PROGRAM_ID
    data = bytes(ix.data)
    assert list(data[:8]) == DLMM_IDL_SWAP["discriminator"]
    assert args_of(data, DLMM_IDL_SWAP["args"]) == [5 * 10**9, 1]
    fixed = len(DLMM_IDL_SWAP["accounts"])
    for (key, writable, signer), (name, idl_w, idl_s, optional) in zip(
        metas(ix)[:fixed], DLMM_IDL_SWAP["accounts"], strict=True
    ):
        if optional:  # left out: the program id, read-only (Anchor's None)
            assert (key, writable, signer) == (METEORA_DLMM_PROGRAM_ID, False, False), name
        else:
            assert (writable, signer) == (idl_w, idl_s), name
    keys = [m.pubkey for m in ix.accounts]
    assert keys[:fixed] == [
        snapshot.address,
        METEORA_DLMM_PROGRAM_ID,
        snapshot.keys["reserve_x"],
        snapshot.keys["reserve_y"],
        associated_token_address(USER, mint_in),
        associated_token_address(USER, mint_out),
        snapshot.mints[0],
        snapshot.mints[1],
        snapshot.keys["oracle"],
        METEORA_DLMM_PROGRAM_ID,
        USER,
        TOKEN_PROGRAM_ID,
        TOKEN_PROGRAM_ID,
        dlmm.event_authority_address(),
        METEORA_DLMM_PROGRAM_ID,
    ]
    # Remaining accounts: writable bin arrays from the active bin's array, in the swap's direction.
    arrays = keys[fixed:]
    assert arrays and all(w and not s for _, w, s in metas(ix)[fixed:])
    pool = snapshot.pool
    assert isinstance(pool, DlmmPool)
    indexes = [next(i for i, k in snapshot.bin_arrays.items() if k == a) for a in arrays]
    assert indexes[0] == dlmm.bin_array_index(pool.active_id)
    assert indexes == sorted(indexes, reverse=sell_x)
    call = decode_swap_instruction(ix.program_id, keys, data)
    assert (call.venue, call.pool, call.user, call.remaining) == ("meteora", snapshot.address, USER, tuple(arrays))


def test_bad_swap_instructions_are_refused_with_anchors_errors() -> None:
    snapshot = SNAPSHOTS[(RAYDIUM, frozenset((SOL.mint, USDC.mint)))]
    ix = swap_instruction(swap_keys_of(snapshot), USER, Pubkey.from_string(SOL.mint), 10**9, 0)
    keys, data = [m.pubkey for m in ix.accounts], bytes(ix.data)
    cases = [
        (RAYDIUM_CPMM_PROGRAM_ID, keys, b"\x00" * 24, 101),  # unknown discriminator
        (RAYDIUM_CPMM_PROGRAM_ID, keys, data[:20], 102),  # arguments cut short
        (RAYDIUM_CPMM_PROGRAM_ID, keys, data + b"\x00", 102),
        (RAYDIUM_CPMM_PROGRAM_ID, keys[:12], data, 3005),  # an account missing
        (RAYDIUM_CPMM_PROGRAM_ID, [keys[0], USER, *keys[2:]], data, 2006),  # wrong authority PDA
        (TOKEN_PROGRAM_ID, keys, data, 3008),
    ]
    for program, accounts, payload, code in cases:
        with pytest.raises(InstructionLayoutError) as err:
            decode_swap_instruction(program, accounts, payload)
        assert err.value.code == code, (code, str(err.value))


def test_the_programs_error_codes_are_the_idls() -> None:
    assert cpmm.ERR_EXCEEDED_SLIPPAGE == 0x1775 and cpmm.ERR_NOT_APPROVED == 6000
    assert dlmm.ERR_EXCEEDED_AMOUNT_SLIPPAGE_TOLERANCE == 0x1773
    for code, name in CPMM_IDL_ERRORS.items():
        assert cpmm.ERRORS[code][0].lower() == name.lower()
    for code, name in DLMM_IDL_ERRORS.items():
        assert dlmm.ERRORS[code][0] == name
