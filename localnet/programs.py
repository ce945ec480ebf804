"""The emulated programs: System, SPL Token, Associated Token Account, Compute
Budget, Memo (v1, v2), Raydium CPMM ``swap_base_input`` and Meteora DLMM ``swap``.

Each takes an ``Invocation`` and returns the compute units it used; a failure
is a ``ProgramError`` with the program's own code, logged the way the program
logs it (Anchor's ``AnchorError occurred. Error Code: ...`` for the venues).
The venue swaps run the exact integer math of ``venues`` at the slot's unix
time, move tokens between the user's accounts and the pool's vaults with
token-program CPIs, and write the pool accounts back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NoReturn

from solders.pubkey import Pubkey

from localnet.bank import Invocation, Program, ProgramError
from localnet.pools import PoolCache, vault_of, write_swap
from venues import cpmm_layout as cpmm
from venues import dlmm_layout as dlmm
from venues.dlmm import DlmmPool
from venues.errors import InsufficientLiquidityError, NoPoolError
from venues.onchain import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    COMPUTE_BUDGET_PROGRAM_ID,
    MEMO_PROGRAM_ID,
    MEMO_V1_PROGRAM_ID,
    METEORA_DLMM_PROGRAM_ID,
    NATIVE_MINT,
    RAYDIUM_CPMM_PROGRAM_ID,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    Account,
    InstructionLayoutError,
    SwapCall,
    associated_token_address,
    decode_swap_instruction,
    token_account,
)
from venues.token_layout import (
    MINT_LEN,
    TOKEN_ACCOUNT_LEN,
    TOKEN_ACCOUNT_RENT,
    LayoutError,
    set_token_amount,
)

ANCHOR_ERRORS = {
    100: ("InstructionMissing", "8 byte instruction identifier not provided"),
    101: ("InstructionFallbackNotFound", "Fallback functions are not supported"),
    102: ("InstructionDidNotDeserialize", "The program could not deserialize the given instruction"),
    2000: ("ConstraintMut", "A mut constraint was violated"),
    2001: ("ConstraintHasOne", "A has one constraint was violated"),
    2003: ("ConstraintRaw", "A raw constraint was violated"),
    2006: ("ConstraintSeeds", "A seeds constraint was violated"),
    2012: ("ConstraintAddress", "An address constraint was violated"),
    2503: ("RequireGtViolated", "A require_gt expression was violated"),
    3002: ("AccountDiscriminatorMismatch", "8 byte discriminator did not match what was expected"),
    3005: ("AccountNotEnoughKeys", "Not enough account keys given to the instruction"),
    3007: ("AccountOwnedByWrongProgram", "The given account is owned by a different program than expected"),
    3008: ("InvalidProgramId", "Program ID was not as expected"),
    3010: ("AccountNotSigner", "The given account did not sign"),
    3012: ("AccountNotInitialized", "The program expected this account to be already initialized"),
}

# SPL Token errors (spl-token ``error.rs``)
TOKEN_INSUFFICIENT_FUNDS = 1
TOKEN_INVALID_MINT = 2
TOKEN_MINT_MISMATCH = 3
TOKEN_OWNER_MISMATCH = 4
TOKEN_MINT_DECIMALS_MISMATCH = 18
TOKEN_ERROR_TEXT = {
    TOKEN_INSUFFICIENT_FUNDS: "insufficient funds",
    TOKEN_INVALID_MINT: "Invalid Mint",
    TOKEN_MINT_MISMATCH: "Account not associated with this Mint",
    TOKEN_OWNER_MISMATCH: "owner does not match",
    TOKEN_MINT_DECIMALS_MISMATCH: "The provided decimals value different from the Mint decimals",
}
SYSTEM_ACCOUNT_ALREADY_IN_USE = 0
SYSTEM_RESULT_WITH_NEGATIVE_LAMPORTS = 1

UNITS = {
    "budget": 150,
    "memo": 6_000,
    "system": 150,
    "transfer": 4_645,
    "transfer_checked": 6_200,
    "ata_create": 20_000,
    "ata_existing": 4_000,
    "cpmm": 28_000,
    "dlmm": 45_000,
    "dlmm_per_bin": 1_500,
}
_U64 = struct.Struct("<Q")


def anchor_fail(inv: Invocation, code: int, names: dict[int, tuple[str, str]], account: str | None = None) -> NoReturn:
    name, message = names.get(code) or ANCHOR_ERRORS.get(code) or ("Unknown", "unknown error")
    where = f"caused by account: {account}" if account else "occurred"
    inv.log(f"AnchorError {where}. Error Code: {name}. Error Number: {code}. Error Message: {message}.")
    raise ProgramError(code)


# -- System program -----------------------------------------------------------------


def system_program(inv: Invocation) -> int:
    data = inv.data
    if len(data) < 4:
        raise ProgramError("InvalidInstructionData")
    kind = int.from_bytes(data[:4], "little")
    if kind != 2 or len(data) != 12:  # Transfer { lamports: u64 }
        raise ProgramError("InvalidInstructionData")
    lamports = _U64.unpack_from(data, 4)[0]
    source, dest = inv.account(0), inv.account(1)
    if not source.signer:
        inv.log(f"Transfer: `from` account {source.key} must sign")
        raise ProgramError("MissingRequiredSignature")
    src = inv.view.get(source.key)
    if src is None or src.lamports < lamports:
        have = src.lamports if src else 0
        inv.log(f"Transfer: insufficient lamports {have}, need {lamports}")
        raise ProgramError(SYSTEM_RESULT_WITH_NEGATIVE_LAMPORTS)
    if src.owner != SYSTEM_PROGRAM_ID or src.data:
        inv.log("Transfer: `from` must not carry data")
        raise ProgramError("InvalidArgument")
    inv.view.set(source.key, Account(src.owner, src.data, src.lamports - lamports))
    dst = inv.view.get(dest.key) or Account(SYSTEM_PROGRAM_ID, b"", 0)
    inv.view.set(dest.key, Account(dst.owner, dst.data, dst.lamports + lamports))
    return UNITS["system"]


# -- SPL Token ------------------------------------------------------------------------


def _token_account(inv: Invocation, key: Pubkey) -> Account:
    account = inv.view.get(key)
    if account is None or account.owner != TOKEN_PROGRAM_ID or len(account.data) != TOKEN_ACCOUNT_LEN:
        raise ProgramError("InvalidAccountData")
    if account.data[108] != 1:
        raise ProgramError("UninitializedAccount")
    return account


def _token_error(inv: Invocation, code: int) -> ProgramError:
    inv.log(f"Error: {TOKEN_ERROR_TEXT[code]}")
    return ProgramError(code)


def move_tokens(
    inv: Invocation,
    source_key: Pubkey,
    dest_key: Pubkey,
    authority: Pubkey,
    signed: bool,
    amount: int,
    mint: Pubkey | None = None,
    decimals: int | None = None,
) -> None:
    """SPL Token ``Transfer`` / ``TransferChecked`` semantics (wrapped SOL moves lamports too)."""
    source = _token_account(inv, source_key)
    dest = _token_account(inv, dest_key)
    source_mint = source.data[0:32]
    if dest.data[0:32] != source_mint:
        raise _token_error(inv, TOKEN_MINT_MISMATCH)
    if mint is not None:
        if bytes(mint) != source_mint:
            raise _token_error(inv, TOKEN_MINT_MISMATCH)
        mint_account = inv.view.get(mint)
        if mint_account is None or mint_account.owner != TOKEN_PROGRAM_ID or len(mint_account.data) != MINT_LEN:
            raise _token_error(inv, TOKEN_INVALID_MINT)
        if decimals is not None and mint_account.data[44] != decimals:
            raise _token_error(inv, TOKEN_MINT_DECIMALS_MISMATCH)
    if source.data[32:64] != bytes(authority):
        raise _token_error(inv, TOKEN_OWNER_MISMATCH)
    if not signed:
        raise ProgramError("MissingRequiredSignature")
    balance = _U64.unpack_from(source.data, 64)[0]
    if balance < amount:
        raise _token_error(inv, TOKEN_INSUFFICIENT_FUNDS)
    native = source.data[109] == 1
    if source_key == dest_key:
        return
    inv.view.set(
        source_key,
        Account(
            source.owner, set_token_amount(source.data, balance - amount), source.lamports - (amount if native else 0)
        ),
    )
    dest = _token_account(inv, dest_key)
    dest_balance = _U64.unpack_from(dest.data, 64)[0]
    inv.view.set(
        dest_key,
        Account(
            dest.owner, set_token_amount(dest.data, dest_balance + amount), dest.lamports + (amount if native else 0)
        ),
    )


def token_program(inv: Invocation) -> int:
    data = inv.data
    if data[:1] == b"\x03" and len(data) == 9:  # Transfer { amount }
        inv.log("Instruction: Transfer")
        source, dest, owner = inv.account(0), inv.account(1), inv.account(2)
        move_tokens(inv, source.key, dest.key, owner.key, owner.signer, _U64.unpack_from(data, 1)[0])
        return UNITS["transfer"]
    if data[:1] == b"\x0c" and len(data) == 10:  # TransferChecked { amount, decimals }
        inv.log("Instruction: TransferChecked")
        source, mint, dest, owner = inv.account(0), inv.account(1), inv.account(2), inv.account(3)
        move_tokens(inv, source.key, dest.key, owner.key, owner.signer, _U64.unpack_from(data, 1)[0], mint.key, data[9])
        return UNITS["transfer_checked"]
    raise ProgramError("InvalidInstructionData")


def cpi_transfer(
    inv: Invocation, source: Pubkey, dest: Pubkey, authority: Pubkey, amount: int, mint: Pubkey, decimals: int
) -> None:
    """A venue program's CPI into the token program (``TransferChecked``)."""
    inv.invoke(TOKEN_PROGRAM_ID)
    inv.log("Instruction: TransferChecked")
    try:
        move_tokens(inv, source, dest, authority, True, amount, mint, decimals)
    except ProgramError as exc:
        inv.logs.append(f"Program {TOKEN_PROGRAM_ID} consumed {UNITS['transfer_checked']} of 200000 compute units")
        inv.logs.append(
            f"Program {TOKEN_PROGRAM_ID} failed: custom program error: {exc.err:#x}"
            if isinstance(exc.err, int)
            else f"Program {TOKEN_PROGRAM_ID} failed: {exc.err}"
        )
        raise
    inv.success(TOKEN_PROGRAM_ID, UNITS["transfer_checked"], 200_000)


# -- Associated Token Account ------------------------------------------------------------


def ata_program(inv: Invocation) -> int:
    data = inv.data
    if data in (b"", b"\x00"):
        idempotent = False
        inv.log("Create")
    elif data == b"\x01":
        idempotent = True
        inv.log("CreateIdempotent")
    else:
        raise ProgramError("InvalidInstructionData")
    payer, ata, owner, mint = inv.account(0), inv.account(1), inv.account(2), inv.account(3)
    inv.account(4)
    inv.account(5)
    if associated_token_address(owner.key, mint.key) != ata.key:
        inv.log("Error: Associated address does not match seed derivation")
        raise ProgramError("InvalidSeeds")
    existing = inv.view.get(ata.key)
    if existing is not None and (existing.owner != SYSTEM_PROGRAM_ID or existing.data):
        if idempotent and existing.owner == TOKEN_PROGRAM_ID and len(existing.data) == TOKEN_ACCOUNT_LEN:
            if existing.data[32:64] != bytes(owner.key):
                inv.log("Error: Owner does not match")
                raise ProgramError("IllegalOwner")
            return UNITS["ata_existing"]
        inv.invoke(SYSTEM_PROGRAM_ID)
        inv.logs.append(f"Allocate: account Address {{ address: {ata.key}, base: None }} already in use")
        inv.logs.append(f"Program {SYSTEM_PROGRAM_ID} failed: custom program error: 0x0")
        raise ProgramError(SYSTEM_ACCOUNT_ALREADY_IN_USE)
    mint_account = inv.view.get(mint.key)
    if mint_account is None or mint_account.owner != TOKEN_PROGRAM_ID or len(mint_account.data) != MINT_LEN:
        raise ProgramError("IllegalOwner" if mint_account is not None else "InvalidAccountData")
    if not payer.signer:
        raise ProgramError("MissingRequiredSignature")
    funder = inv.view.get(payer.key)
    rent_due = TOKEN_ACCOUNT_RENT - (existing.lamports if existing else 0)
    if funder is None or funder.lamports < rent_due:
        inv.invoke(SYSTEM_PROGRAM_ID)
        inv.logs.append(f"Transfer: insufficient lamports {funder.lamports if funder else 0}, need {rent_due}")
        inv.logs.append(f"Program {SYSTEM_PROGRAM_ID} failed: custom program error: 0x1")
        raise ProgramError(SYSTEM_RESULT_WITH_NEGATIVE_LAMPORTS)
    inv.view.set(payer.key, Account(funder.owner, funder.data, funder.lamports - rent_due))
    inv.invoke(SYSTEM_PROGRAM_ID)
    inv.success(SYSTEM_PROGRAM_ID, 150, 200_000)
    inv.invoke(TOKEN_PROGRAM_ID)
    inv.log("Instruction: InitializeAccount3")
    inv.success(TOKEN_PROGRAM_ID, 3_158, 200_000)
    created = token_account(mint.key, owner.key, 0)
    if mint.key == NATIVE_MINT:
        created = Account(created.owner, created.data, TOKEN_ACCOUNT_RENT)
    inv.view.set(ata.key, created)
    return UNITS["ata_create"]


# -- Compute budget and Memo ------------------------------------------------------------


def compute_budget_program(inv: Invocation) -> int:
    data = inv.data
    valid = {b"\x01": 5, b"\x02": 5, b"\x03": 9, b"\x04": 5}  # heap frame, unit limit, unit price, data size
    if valid.get(data[:1]) != len(data):
        raise ProgramError("InvalidInstructionData")
    return UNITS["budget"]


def memo_program(inv: Invocation) -> int:
    for meta in inv.accounts:
        if not meta.signer:
            inv.log(f"Missing required signature for {meta.key}")
            raise ProgramError("MissingRequiredSignature")
    try:
        text = inv.data.decode()
    except UnicodeDecodeError:
        inv.log("Invalid UTF-8, from byte 0")
        raise ProgramError("InvalidInstructionData") from None
    if inv.program_id == MEMO_PROGRAM_ID:
        inv.log(f"Memo (len {len(inv.data)}): {_debug_str(text)}")
    return UNITS["memo"] + 10 * len(inv.data)


def _debug_str(text: str) -> str:
    """Rust's ``{:?}`` of a ``&str``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped.replace(chr(9), chr(92) + "t")}"'


# -- the venues -----------------------------------------------------------------------


class Venues:
    """Raydium CPMM and Meteora DLMM over a shared pool cache."""

    def __init__(self, cache: PoolCache) -> None:
        self.cache = cache

    def _call(self, inv: Invocation, names: dict[int, tuple[str, str]]) -> SwapCall:
        try:
            return decode_swap_instruction(inv.program_id, [m.key for m in inv.accounts], inv.data)
        except InstructionLayoutError as exc:
            anchor_fail(inv, exc.code, names)

    @staticmethod
    def _flags(inv: Invocation, layout: tuple[tuple[str, bool, bool], ...], optional: frozenset[str]) -> None:
        for position, (name, writable, signer) in enumerate(layout):
            meta = inv.accounts[position]
            if name in optional and meta.key == inv.program_id:
                continue
            if signer and not meta.signer:
                anchor_fail(inv, 3010, {}, name)
            if writable and not meta.writable:
                anchor_fail(inv, 2000, {}, name)

    def cpmm(self, inv: Invocation) -> int:
        call = self._call(inv, cpmm.ERRORS)
        inv.log("Instruction: SwapBaseInput")
        self._flags(inv, cpmm.SWAP_BASE_INPUT_ACCOUNTS, frozenset())
        named = call.named
        state = cpmm.decode_pool_state(
            _program_account(inv, call.pool, RAYDIUM_CPMM_PROGRAM_ID, cpmm.is_pool_state, "pool_state")
        )
        if named["amm_config"] != state.amm_config:
            anchor_fail(inv, 2012, {}, "amm_config")
        vaults = (state.token_0_vault, state.token_1_vault)
        if named["input_vault"] not in vaults or named["output_vault"] not in vaults:
            anchor_fail(inv, 2003, {}, "input_vault" if named["input_vault"] not in vaults else "output_vault")
        if named["input_vault"] == named["output_vault"]:
            anchor_fail(inv, 2003, {}, "output_vault")
        for name in ("input_token_program", "output_token_program"):
            if named[name] != TOKEN_PROGRAM_ID:
                anchor_fail(inv, 3008, {}, name)
        zero_for_one = named["input_vault"] == state.token_0_vault
        mint_in, mint_out = (
            (state.token_0_mint, state.token_1_mint) if zero_for_one else (state.token_1_mint, state.token_0_mint)
        )
        for name, key in (
            ("input_token_mint", mint_in),
            ("output_token_mint", mint_out),
            ("observation_state", state.observation_key),
        ):
            if named[name] != key:
                anchor_fail(inv, 2012, {}, name)
        if not state.swap_enabled or inv.block_time < state.open_time:
            anchor_fail(inv, cpmm.ERR_NOT_APPROVED, cpmm.ERRORS)
        if call.amount_in == 0:
            anchor_fail(inv, 2503, {})
        snapshot = self.cache.get(inv.view, call.pool)
        try:
            fill = snapshot.pool.swap(str(mint_in), call.amount_in, inv.block_time)
        except InsufficientLiquidityError:
            anchor_fail(inv, 2503, {})
        if fill.amount_out < call.min_amount_out:
            anchor_fail(inv, cpmm.ERR_EXCEEDED_SLIPPAGE, cpmm.ERRORS)
        decimals = (state.mint_0_decimals, state.mint_1_decimals)
        dec_in, dec_out = decimals if zero_for_one else decimals[::-1]
        after = write_swap(inv.view, snapshot, mint_in, fill)
        cpi_transfer(inv, call.user_token_in, named["input_vault"], call.user, call.amount_in, mint_in, dec_in)
        authority = cpmm.authority_address()
        cpi_transfer(inv, named["output_vault"], call.user_token_out, authority, fill.amount_out, mint_out, dec_out)
        self.cache.remember(inv.view, after)
        return UNITS["cpmm"]

    def dlmm(self, inv: Invocation) -> int:
        call = self._call(inv, dlmm.ERRORS)
        inv.log("Instruction: Swap")
        self._flags(inv, dlmm.SWAP_ACCOUNTS, dlmm.OPTIONAL_SWAP_ACCOUNTS)
        named = call.named
        pair = dlmm.decode_lb_pair(
            _program_account(inv, call.pool, METEORA_DLMM_PROGRAM_ID, dlmm.is_lb_pair, "lb_pair")
        )
        for name, key in (
            ("reserve_x", pair.reserve_x),
            ("reserve_y", pair.reserve_y),
            ("token_x_mint", pair.token_x_mint),
            ("token_y_mint", pair.token_y_mint),
            ("oracle", pair.oracle),
        ):
            if named[name] != key:
                anchor_fail(inv, 2001, {}, name)
        for name in ("token_x_program", "token_y_program"):
            if named[name] != TOKEN_PROGRAM_ID:
                anchor_fail(inv, 2012, {}, name)
        point = inv.block_time if pair.activation_type == dlmm.ACTIVATION_TYPE_TIMESTAMP else inv.slot
        if pair.status != dlmm.PAIR_STATUS_ENABLED or point < pair.activation_point:
            anchor_fail(inv, dlmm.ERR_POOL_DISABLED, dlmm.ERRORS)
        try:
            mint_in = Pubkey(_token_data(inv, call.user_token_in)[0:32])
            mint_out = Pubkey(_token_data(inv, call.user_token_out)[0:32])
        except LayoutError:
            anchor_fail(inv, 3002, {}, "user_token_in")
        if mint_in not in (pair.token_x_mint, pair.token_y_mint) or {mint_in, mint_out} != {
            pair.token_x_mint,
            pair.token_y_mint,
        }:
            anchor_fail(inv, dlmm.ERR_INVALID_TOKEN_MINT, dlmm.ERRORS)
        snapshot = self.cache.get(inv.view, call.pool)
        try:
            fill = snapshot.pool.swap(str(mint_in), call.amount_in, inv.block_time)
        except (InsufficientLiquidityError, NoPoolError):
            anchor_fail(inv, dlmm.ERR_PAIR_INSUFFICIENT_LIQUIDITY, dlmm.ERRORS)
        except ValueError:
            anchor_fail(inv, 6002, dlmm.ERRORS)
        assert isinstance(snapshot.pool, DlmmPool) and isinstance(fill.state, DlmmPool)
        old_active, new_active = snapshot.pool.active_id, fill.state.active_id
        low, high = sorted((old_active, new_active))
        given = set(call.remaining)
        for index in range(dlmm.bin_array_index(low), dlmm.bin_array_index(high) + 1):
            array_key = snapshot.bin_arrays.get(index)
            if array_key is None or array_key not in given:
                anchor_fail(inv, dlmm.ERR_BIN_ARRAY_NOT_FOUND, dlmm.ERRORS)
        if fill.amount_out < call.min_amount_out:
            anchor_fail(inv, dlmm.ERR_EXCEEDED_AMOUNT_SLIPPAGE_TOLERANCE, dlmm.ERRORS)
        decimals = dict(zip(snapshot.mints, snapshot.decimals, strict=True))
        after = write_swap(inv.view, snapshot, mint_in, fill)
        reserve_in, reserve_out = vault_of(snapshot, mint_in), vault_of(snapshot, mint_out)
        cpi_transfer(inv, call.user_token_in, reserve_in, call.user, call.amount_in, mint_in, decimals[mint_in])
        cpi_transfer(inv, reserve_out, call.user_token_out, call.pool, fill.amount_out, mint_out, decimals[mint_out])
        self.cache.remember(inv.view, after)
        return UNITS["dlmm"] + UNITS["dlmm_per_bin"] * (high - low)


def _program_account(inv: Invocation, key: Pubkey, owner: Pubkey, is_kind: Callable[[bytes], bool], name: str) -> bytes:
    """The data of the account ``name`` that ``owner`` must own and ``is_kind`` must recognise, as Anchor checks it."""
    account = inv.view.get(key)
    if account is None:
        anchor_fail(inv, 3012, {}, name)  # AccountNotInitialized
    if account.owner != owner:
        anchor_fail(inv, 3007, {}, name)  # AccountOwnedByWrongProgram
    if not is_kind(account.data):
        anchor_fail(inv, 3002, {}, name)  # AccountDiscriminatorMismatch
    return account.data


def _token_data(inv: Invocation, key: Pubkey) -> bytes:
    account = inv.view.get(key)
    if account is None or account.owner != TOKEN_PROGRAM_ID or len(account.data) != TOKEN_ACCOUNT_LEN:
        raise LayoutError(f"{key} is not a token account")
    return account.data


def programs(cache: PoolCache) -> dict[Pubkey, Program]:
    venues = Venues(cache)
    return {
        SYSTEM_PROGRAM_ID: system_program,
        TOKEN_PROGRAM_ID: token_program,
        ASSOCIATED_TOKEN_PROGRAM_ID: ata_program,
        COMPUTE_BUDGET_PROGRAM_ID: compute_budget_program,
        MEMO_PROGRAM_ID: memo_program,
        MEMO_V1_PROGRAM_ID: memo_program,
        RAYDIUM_CPMM_PROGRAM_ID: venues.cpmm,
        METEORA_DLMM_PROGRAM_ID: venues.dlmm,
    }
