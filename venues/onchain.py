"""The venues on chain: pool accounts <-> the exact math, and the swap instructions.

Both sides of the wire use this module: the localnet stores pools as these
accounts and executes these instructions; a router reads the accounts
(``getMultipleAccounts``), ``decode_pool`` turns them into the same math
objects the programs run, and an executor builds ``swap_instruction`` from a
pool's ``SwapKeys`` (``decode_swap_keys``: the state account alone, and a
DLMM pool's mints; no vaults, no bin arrays).
Layout details and sources: ``venues.cpmm_layout``, ``venues.dlmm_layout``,
``venues.token_layout``, ``venues.programs``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from venues import cpmm_layout as cpmm
from venues import dlmm_layout as dlmm
from venues.dlmm import DlmmPool, FeeParams, Volatility, price_q64
from venues.programs import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    COMPUTE_BUDGET_PROGRAM_ID,
    MEMO_PROGRAM_ID,
    MEMO_V1_PROGRAM_ID,
    METEORA,
    METEORA_DLMM_PROGRAM_ID,
    NATIVE_MINT,
    PROGRAM_VENUES,
    RAYDIUM,
    RAYDIUM_CPMM_PROGRAM_ID,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    VENUE_PROGRAMS,
    anchor_discriminator,
    associated_token_address,
    create_ata_idempotent_instruction,
    memo_instruction,
)
from venues.raydium import ConstantProductPool
from venues.token_layout import (
    MINT_RENT,
    TOKEN_ACCOUNT_RENT,
    LayoutError,
    TokenAccount,
    decode_mint,
    decode_token_account,
    encode_mint,
    encode_token_account,
)

__all__ = [
    "ASSOCIATED_TOKEN_PROGRAM_ID",
    "COMPUTE_BUDGET_PROGRAM_ID",
    "MEMO_PROGRAM_ID",
    "MEMO_V1_PROGRAM_ID",
    "METEORA_DLMM_PROGRAM_ID",
    "NATIVE_MINT",
    "RAYDIUM_CPMM_PROGRAM_ID",
    "SYSTEM_PROGRAM_ID",
    "TOKEN_PROGRAM_ID",
    "VENUE_PROGRAMS",
    "Account",
    "InstructionLayoutError",
    "LayoutError",
    "PoolSnapshot",
    "SwapCall",
    "SwapKeys",
    "TokenAccount",
    "anchor_discriminator",
    "associated_token_address",
    "create_ata_idempotent_instruction",
    "decode_mint",
    "decode_pool",
    "decode_swap_instruction",
    "decode_swap_keys",
    "decode_token_account",
    "dependencies",
    "encode_mint",
    "encode_token_account",
    "is_pool_account",
    "memo_instruction",
    "pool_accounts",
    "swap_accounts",
    "swap_instruction",
]

# Anchor framework errors the localnet answers for malformed venue instructions.
ANCHOR_INSTRUCTION_FALLBACK_NOT_FOUND = 101
ANCHOR_INSTRUCTION_DID_NOT_DESERIALIZE = 102
ANCHOR_CONSTRAINT_MUT = 2000
ANCHOR_CONSTRAINT_SIGNER = 2002
ANCHOR_CONSTRAINT_SEEDS = 2006
ANCHOR_CONSTRAINT_ADDRESS = 2012
ANCHOR_ACCOUNT_NOT_ENOUGH_KEYS = 3005
ANCHOR_ACCOUNT_DISCRIMINATOR_MISMATCH = 3002
ANCHOR_INVALID_PROGRAM_ID = 3008


@dataclass(frozen=True)
class Account:
    """An account as ``getAccountInfo`` shows it."""

    owner: Pubkey
    data: bytes
    lamports: int


class InstructionLayoutError(ValueError):
    """A venue instruction that does not match the program's IDL; ``code`` is the Anchor error it raises."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- pools ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSnapshot:
    venue: str  # "raydium" | "meteora"
    address: Pubkey  # the pool state account (CPMM PoolState / DLMM LbPair)
    mints: tuple[Pubkey, Pubkey]  # (token_0, token_1) / (token_x, token_y)
    decimals: tuple[int, int]
    reserves: tuple[int, int]  # raw units of each mint the pool can pay out
    pool: ConstantProductPool | DlmmPool  # the math; pool.pool_id == str(address)
    open_time: int  # unix seconds from which it trades (CPMM open_time / DLMM activation_point)
    accounts: tuple[Pubkey, ...]  # every account it was decoded from (state + dependencies)
    # The other accounts a swap names: CPMM amm_config, vault_0, vault_1,
    # observation; DLMM reserve_x, reserve_y, oracle, and bin_arrays (index -> address).
    keys: Mapping[str, Pubkey] = field(default_factory=dict, compare=False, repr=False)
    bin_arrays: Mapping[int, Pubkey] = field(default_factory=dict, compare=False, repr=False)

    @property
    def swap_keys(self) -> SwapKeys:
        """What a swap on this pool names (``decode_swap_keys`` reads the same from fewer accounts)."""
        active_id = self.pool.active_id if isinstance(self.pool, DlmmPool) else None
        return SwapKeys(self.venue, self.address, self.mints, self.decimals, self.keys, self.bin_arrays, active_id)


@dataclass(frozen=True)
class SwapKeys:
    """What building a swap on a pool needs: the accounts its instruction names, the pool's mints and decimals,
    and for a DLMM pool its initialized bin arrays (index -> address) and active bin. No reserves, no bins: the
    amounts come from the quote, and the program checks the minimum out."""

    venue: str
    address: Pubkey
    mints: tuple[Pubkey, Pubkey]
    decimals: tuple[int, int]
    keys: Mapping[str, Pubkey]
    bin_arrays: Mapping[int, Pubkey] = field(default_factory=dict)
    active_id: int | None = None  # DLMM


def is_pool_account(account: Account) -> bool:
    """A CPMM PoolState or a DLMM LbPair, owned by its program."""
    if account.owner == RAYDIUM_CPMM_PROGRAM_ID:
        return cpmm.is_pool_state(account.data)
    if account.owner == METEORA_DLMM_PROGRAM_ID:
        return dlmm.is_lb_pair(account.data)
    return False


def dependencies(address: Pubkey, account: Account) -> list[Pubkey]:
    """The other accounts ``decode_pool`` needs for this pool account."""
    if account.owner == RAYDIUM_CPMM_PROGRAM_ID and cpmm.is_pool_state(account.data):
        state = cpmm.decode_pool_state(account.data)
        return [state.amm_config, state.token_0_vault, state.token_1_vault]
    if account.owner == METEORA_DLMM_PROGRAM_ID and dlmm.is_lb_pair(account.data):
        pair = dlmm.decode_lb_pair(account.data)
        return [
            pair.reserve_x,
            pair.reserve_y,
            pair.token_x_mint,
            pair.token_y_mint,
            *_bin_arrays(address, pair).values(),
        ]
    raise LayoutError("not a venue pool account")


def _need(accounts: Mapping[Pubkey, Account], key: Pubkey, what: str) -> Account:
    account = accounts.get(key)
    if account is None:
        raise KeyError(f"{what} {key} is missing")
    return account


# A DLMM bin array decoded, with the sums of its bins' amounts (x, y), by address; an entry is
# reused while the account in ``accounts`` holds the data it was decoded from.
BinArrayCache = MutableMapping[Pubkey, tuple[Account, "dlmm.BinArray", int, int]]


def decode_pool(
    address: Pubkey, accounts: Mapping[Pubkey, Account], cache: BinArrayCache | None = None
) -> PoolSnapshot:
    """The pool at ``address`` from its accounts (the state and its ``dependencies``).

    With ``cache``, a DLMM pool's bin arrays are decoded only when their account's data changed
    since the last decode; the snapshot is the same as without it.
    """
    state_account = _need(accounts, address, "pool account")
    if state_account.owner == RAYDIUM_CPMM_PROGRAM_ID:
        return _decode_cpmm(address, state_account, accounts)
    if state_account.owner == METEORA_DLMM_PROGRAM_ID:
        return _decode_dlmm(address, state_account, accounts, cache)
    raise LayoutError(f"{address} is not owned by a venue program")


def _bin_array(key: Pubkey, account: Account, cache: BinArrayCache | None) -> tuple[dlmm.BinArray, int, int]:
    if cache is not None:
        hit = cache.get(key)
        if hit is not None and (hit[0] is account or hit[0].data == account.data):
            return hit[1], hit[2], hit[3]
    array = dlmm.decode_bin_array(account.data)
    sum_x = sum(x for x, _ in array.bins.values())
    sum_y = sum(y for _, y in array.bins.values())
    if cache is not None:
        cache[key] = (account, array, sum_x, sum_y)
    return array, sum_x, sum_y


def _decode_cpmm(address: Pubkey, state_account: Account, accounts: Mapping[Pubkey, Account]) -> PoolSnapshot:
    state = cpmm.decode_pool_state(state_account.data)
    config = cpmm.decode_amm_config(_need(accounts, state.amm_config, "AmmConfig").data)
    vault_0 = decode_token_account(_need(accounts, state.token_0_vault, "token_0_vault").data).amount
    vault_1 = decode_token_account(_need(accounts, state.token_1_vault, "token_1_vault").data).amount
    reserve_0, reserve_1 = state.vault_amount_without_fee(vault_0, vault_1)
    pool = ConstantProductPool(
        str(address),
        str(state.token_0_mint),
        str(state.token_1_mint),
        reserve_0,
        reserve_1,
        fee_numerator=config.trade_fee_rate,
        fee_denominator=cpmm.FEE_RATE_DENOMINATOR,
        withheld_share_ppm=config.protocol_fee_rate + config.fund_fee_rate,
        slippage_code="RAYDIUM_CPMM_EXCEEDED_SLIPPAGE_0x1775",
    )
    return PoolSnapshot(
        venue=RAYDIUM,
        address=address,
        mints=(state.token_0_mint, state.token_1_mint),
        decimals=(state.mint_0_decimals, state.mint_1_decimals),
        reserves=(reserve_0, reserve_1),
        pool=pool,
        open_time=state.open_time,
        accounts=(address, state.amm_config, state.token_0_vault, state.token_1_vault),
        keys=_cpmm_keys(state),
    )


def _cpmm_keys(state: cpmm.CpmmPoolState) -> dict[str, Pubkey]:
    return {
        "amm_config": state.amm_config,
        "vault_0": state.token_0_vault,
        "vault_1": state.token_1_vault,
        "observation": state.observation_key,
    }


def _dlmm_keys(pair: dlmm.LbPair) -> dict[str, Pubkey]:
    return {"reserve_x": pair.reserve_x, "reserve_y": pair.reserve_y, "oracle": pair.oracle}


def _bin_arrays(address: Pubkey, pair: dlmm.LbPair) -> dict[int, Pubkey]:
    """The bin arrays the pair's bitmap marks as initialized: index -> address, ascending."""
    return {index: dlmm.bin_array_address(address, index) for index in pair.bin_array_indexes()}


def _dlmm_decimals(pair: dlmm.LbPair, accounts: Mapping[Pubkey, Account]) -> tuple[int, int]:
    """The decimals of the pair's (token_x, token_y), from their mint accounts."""
    return (
        decode_mint(_need(accounts, pair.token_x_mint, "token_x_mint").data),
        decode_mint(_need(accounts, pair.token_y_mint, "token_y_mint").data),
    )


def _decode_dlmm(
    address: Pubkey, state_account: Account, accounts: Mapping[Pubkey, Account], cache: BinArrayCache | None
) -> PoolSnapshot:
    pair = dlmm.decode_lb_pair(state_account.data)
    decimals = _dlmm_decimals(pair, accounts)
    bins: dict[int, tuple[int, int]] = {}
    arrays = _bin_arrays(address, pair)
    reserve_x = reserve_y = 0  # each array holds its own bin ids: the sums of the arrays are the pool's
    for index, key in arrays.items():
        array, sum_x, sum_y = _bin_array(key, _need(accounts, key, "bin array"), cache)
        if array.index != index or array.lb_pair != address:
            raise LayoutError(f"bin array {key} does not belong to {address} at index {index}")
        bins.update(array.bins)
        reserve_x += sum_x
        reserve_y += sum_y
    if not bins:
        raise LayoutError(f"{address} has no bin arrays")
    pool = DlmmPool(
        str(address),
        str(pair.token_x_mint),
        str(pair.token_y_mint),
        pair.bin_step,
        pair.active_id,
        bins,
        FeeParams(
            base_factor=pair.base_factor,
            filter_period=float(pair.filter_period),
            decay_period=float(pair.decay_period),
            reduction_factor=pair.reduction_factor,
            variable_fee_control=pair.variable_fee_control,
            max_volatility_accumulator=pair.max_volatility_accumulator,
        ),
        Volatility(
            accumulator=pair.volatility_accumulator,
            reference=pair.volatility_reference,
            index_reference=pair.index_reference,
            last_update=float(pair.last_update_timestamp),
        ),
    )
    return PoolSnapshot(
        venue=METEORA,
        address=address,
        mints=(pair.token_x_mint, pair.token_y_mint),
        decimals=decimals,
        reserves=(reserve_x, reserve_y),
        pool=pool,
        open_time=pair.activation_point,
        accounts=(address, pair.reserve_x, pair.reserve_y, pair.token_x_mint, pair.token_y_mint, *arrays.values()),
        keys=_dlmm_keys(pair),
        bin_arrays=arrays,
    )


def swap_accounts(snapshot: PoolSnapshot) -> tuple[Pubkey, ...]:
    """The accounts ``decode_swap_keys`` reads for this pool: its state account, and a DLMM pool's mints (their
    decimals; a CPMM pool state records its own)."""
    return (snapshot.address, *snapshot.mints) if snapshot.venue == METEORA else (snapshot.address,)


def decode_swap_keys(address: Pubkey, accounts: Mapping[Pubkey, Account]) -> SwapKeys:
    """The pool at ``address`` as a swap on it names it, from its ``swap_accounts``: what
    ``decode_pool(...).swap_keys`` gives, without the vaults or the bin arrays' data. A DLMM pool's bin arrays are
    the ones its bitmap marks as initialized."""
    state_account = _need(accounts, address, "pool account")
    if state_account.owner == RAYDIUM_CPMM_PROGRAM_ID:
        state = cpmm.decode_pool_state(state_account.data)
        mints = (state.token_0_mint, state.token_1_mint)
        return SwapKeys(RAYDIUM, address, mints, (state.mint_0_decimals, state.mint_1_decimals), _cpmm_keys(state))
    if state_account.owner == METEORA_DLMM_PROGRAM_ID:
        pair = dlmm.decode_lb_pair(state_account.data)
        decimals = _dlmm_decimals(pair, accounts)
        arrays = _bin_arrays(address, pair)
        if not arrays:
            raise LayoutError(f"{address} has no bin arrays")
        mints = (pair.token_x_mint, pair.token_y_mint)
        return SwapKeys(METEORA, address, mints, decimals, _dlmm_keys(pair), arrays, pair.active_id)
    raise LayoutError(f"{address} is not owned by a venue program")


# -- encoding pools as accounts ----------------------------------------------------------


def cpmm_config(fee_ppm: int) -> tuple[Pubkey, cpmm.AmmConfig]:
    """The AmmConfig of a CPMM fee tier and its address."""
    index = cpmm.CONFIG_INDEX_BY_FEE.get(fee_ppm)
    if index is None:
        raise ValueError(f"no CPMM AmmConfig with a {fee_ppm} ppm trade fee")
    return cpmm.amm_config_address(index), cpmm.AmmConfig(index=index, trade_fee_rate=fee_ppm)


def cpmm_pool_address(mint_a: Pubkey, mint_b: Pubkey, fee_ppm: int) -> Pubkey:
    return cpmm.pool_address(cpmm_config(fee_ppm)[0], mint_a, mint_b)


def dlmm_pool_address(mint_x: Pubkey, mint_y: Pubkey, bin_step: int, base_factor: int) -> Pubkey:
    return dlmm.lb_pair_address(mint_x, mint_y, bin_step, base_factor)


def pool_address_of(pool: ConstantProductPool | DlmmPool) -> Pubkey:
    """Where a math pool lives on chain (its PDA)."""
    if isinstance(pool, ConstantProductPool):
        if pool.fee_denominator != cpmm.FEE_RATE_DENOMINATOR:
            raise ValueError("only CPMM pools (fee over 10^6) live on chain here")
        return cpmm_pool_address(Pubkey.from_string(pool.mint_a), Pubkey.from_string(pool.mint_b), pool.fee_numerator)
    return dlmm_pool_address(
        Pubkey.from_string(pool.mint_x), Pubkey.from_string(pool.mint_y), pool.bin_step, pool.params.base_factor
    )


def pool_accounts(
    pool: ConstantProductPool | DlmmPool,
    decimals: tuple[int, int],
    open_time: int = 0,
    fees_owed: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> tuple[Pubkey, dict[Pubkey, Account]]:
    """Every account of a pool (not its mints): the inverse of ``decode_pool``.

    ``decimals`` are those of the pool's (mint_a, mint_b) / (mint_x, mint_y).
    ``fees_owed`` (CPMM): protocol_0, protocol_1, fund_0, fund_1 held in the
    vaults on top of the reserves.
    """
    address = pool_address_of(pool)
    if isinstance(pool, ConstantProductPool):
        return address, _cpmm_accounts(address, pool, decimals, open_time, fees_owed)
    return address, _dlmm_accounts(address, pool, open_time)


def _cpmm_accounts(
    address: Pubkey,
    pool: ConstantProductPool,
    decimals: tuple[int, int],
    open_time: int,
    fees_owed: tuple[int, int, int, int],
) -> dict[Pubkey, Account]:
    config_key, config = cpmm_config(pool.fee_numerator)
    if config.protocol_fee_rate + config.fund_fee_rate != pool.withheld_share_ppm:
        raise ValueError("the pool's withheld fee share does not match its AmmConfig")
    mint_a, mint_b = Pubkey.from_string(pool.mint_a), Pubkey.from_string(pool.mint_b)
    token_0, token_1 = cpmm.sorted_mints(mint_a, mint_b)
    flipped = token_0 != mint_a
    reserve_0, reserve_1 = (pool.reserve_b, pool.reserve_a) if flipped else (pool.reserve_a, pool.reserve_b)
    decimals_0, decimals_1 = (decimals[1], decimals[0]) if flipped else decimals
    protocol_0, protocol_1, fund_0, fund_1 = fees_owed
    vault_0, vault_1 = cpmm.vault_address(address, token_0), cpmm.vault_address(address, token_1)
    authority = cpmm.authority_address()
    state = cpmm.CpmmPoolState(
        amm_config=config_key,
        token_0_vault=vault_0,
        token_1_vault=vault_1,
        token_0_mint=token_0,
        token_1_mint=token_1,
        observation_key=cpmm.observation_address(address),
        mint_0_decimals=decimals_0,
        mint_1_decimals=decimals_1,
        open_time=open_time,
        protocol_fees_token_0=protocol_0,
        protocol_fees_token_1=protocol_1,
        fund_fees_token_0=fund_0,
        fund_fees_token_1=fund_1,
        lp_mint=cpmm.lp_mint_address(address),
    )
    return {
        address: Account(RAYDIUM_CPMM_PROGRAM_ID, cpmm.encode_pool_state(state), 5_324_400),
        config_key: Account(RAYDIUM_CPMM_PROGRAM_ID, cpmm.encode_amm_config(config), 2_533_680),
        vault_0: token_account(token_0, authority, reserve_0 + protocol_0 + fund_0),
        vault_1: token_account(token_1, authority, reserve_1 + protocol_1 + fund_1),
        state.observation_key: Account(RAYDIUM_CPMM_PROGRAM_ID, cpmm.encode_observation_state(address), 29_250_000),
    }


def _dlmm_accounts(address: Pubkey, pool: DlmmPool, activation_point: int) -> dict[Pubkey, Account]:
    mint_x, mint_y = Pubkey.from_string(pool.mint_x), Pubkey.from_string(pool.mint_y)
    indexes = sorted({dlmm.bin_array_index(b) for b in pool.bins})
    pair = lb_pair_of(address, pool, activation_point, dlmm.bitmap_with(indexes))
    accounts = {
        address: Account(METEORA_DLMM_PROGRAM_ID, dlmm.encode_lb_pair(pair), 7_182_720),
        pair.reserve_x: token_account(mint_x, address, sum(x for x, _ in pool.bins.values())),
        pair.reserve_y: token_account(mint_y, address, sum(y for _, y in pool.bins.values())),
        pair.oracle: Account(METEORA_DLMM_PROGRAM_ID, dlmm.encode_oracle(), 1_113_600),
    }
    for index in indexes:
        accounts[dlmm.bin_array_address(address, index)] = bin_array_account(address, pool, index)
    return accounts


def lb_pair_of(address: Pubkey, pool: DlmmPool, activation_point: int, bitmap: tuple[int, ...]) -> dlmm.LbPair:
    mint_x, mint_y = Pubkey.from_string(pool.mint_x), Pubkey.from_string(pool.mint_y)
    p, v = pool.params, pool.volatility
    return dlmm.LbPair(
        base_factor=p.base_factor,
        filter_period=int(p.filter_period),
        decay_period=int(p.decay_period),
        reduction_factor=p.reduction_factor,
        variable_fee_control=p.variable_fee_control,
        max_volatility_accumulator=p.max_volatility_accumulator,
        volatility_accumulator=v.accumulator,
        volatility_reference=v.reference,
        index_reference=v.index_reference,
        last_update_timestamp=int(v.last_update),
        active_id=pool.active_id,
        bin_step=pool.bin_step,
        token_x_mint=mint_x,
        token_y_mint=mint_y,
        reserve_x=dlmm.reserve_address(address, mint_x),
        reserve_y=dlmm.reserve_address(address, mint_y),
        oracle=dlmm.oracle_address(address),
        bin_array_bitmap=bitmap,
        activation_point=activation_point,
    )


def bin_array_account(address: Pubkey, pool: DlmmPool, index: int) -> Account:
    lower = index * dlmm.MAX_BIN_PER_ARRAY
    ids = range(lower, lower + dlmm.MAX_BIN_PER_ARRAY)
    bins = {b: pool.bins[b] for b in ids if b in pool.bins}
    prices = {b: price_q64(b, pool.bin_step) for b in ids}
    return Account(METEORA_DLMM_PROGRAM_ID, dlmm.encode_bin_array(address, index, bins, prices), 71_437_440)


def token_account(mint: Pubkey, owner: Pubkey, amount: int) -> Account:
    """An SPL token account; wrapped SOL holds its amount in lamports too, as on chain."""
    if mint == NATIVE_MINT:
        data = encode_token_account(mint, owner, amount, native_rent=TOKEN_ACCOUNT_RENT)
        return Account(TOKEN_PROGRAM_ID, data, TOKEN_ACCOUNT_RENT + amount)
    return Account(TOKEN_PROGRAM_ID, encode_token_account(mint, owner, amount), TOKEN_ACCOUNT_RENT)


def mint_account(decimals: int, supply: int = 0, authority: Pubkey | None = None) -> Account:
    return Account(TOKEN_PROGRAM_ID, encode_mint(decimals, supply, authority), MINT_RENT)


# -- swap instructions ----------------------------------------------------------------


@dataclass(frozen=True)
class SwapCall:
    """A venue swap instruction, decoded: what the program is asked to do.

    ``named`` maps each IDL account name to the key passed for it;
    ``remaining`` are the accounts after the IDL's (DLMM bin arrays).
    """

    venue: str
    program_id: Pubkey
    pool: Pubkey
    user: Pubkey
    user_token_in: Pubkey
    user_token_out: Pubkey
    amount_in: int
    min_amount_out: int
    named: Mapping[str, Pubkey]
    remaining: tuple[Pubkey, ...] = ()


def swap_instruction(pool: SwapKeys, user: Pubkey, mint_in: Pubkey, amount_in: int, min_amount_out: int) -> Instruction:
    """The venue's exact-in swap, user token accounts being the user's ATAs."""
    if mint_in not in pool.mints:
        raise ValueError(f"pool {pool.address} does not trade {mint_in}")
    mint_out = pool.mints[1] if mint_in == pool.mints[0] else pool.mints[0]
    user_in = associated_token_address(user, mint_in)
    user_out = associated_token_address(user, mint_out)
    if pool.venue == RAYDIUM:
        zero_in = mint_in == pool.mints[0]
        vault_in = pool.keys["vault_0" if zero_in else "vault_1"]
        vault_out = pool.keys["vault_1" if zero_in else "vault_0"]
        keys = [
            user,
            cpmm.authority_address(),
            pool.keys["amm_config"],
            pool.address,
            user_in,
            user_out,
            vault_in,
            vault_out,
            TOKEN_PROGRAM_ID,
            TOKEN_PROGRAM_ID,
            mint_in,
            mint_out,
            pool.keys["observation"],
        ]
        metas = [AccountMeta(k, s, w) for k, (_, w, s) in zip(keys, cpmm.SWAP_BASE_INPUT_ACCOUNTS, strict=True)]
        return Instruction(RAYDIUM_CPMM_PROGRAM_ID, cpmm.encode_swap_base_input_args(amount_in, min_amount_out), metas)
    keys = [
        pool.address,
        METEORA_DLMM_PROGRAM_ID,  # no bin_array_bitmap_extension
        pool.keys["reserve_x"],
        pool.keys["reserve_y"],
        user_in,
        user_out,
        pool.mints[0],
        pool.mints[1],
        pool.keys["oracle"],
        METEORA_DLMM_PROGRAM_ID,  # no host_fee_in
        user,
        TOKEN_PROGRAM_ID,
        TOKEN_PROGRAM_ID,
        dlmm.event_authority_address(),
        METEORA_DLMM_PROGRAM_ID,
    ]
    metas = []
    for key, (name, writable, signer) in zip(keys, dlmm.SWAP_ACCOUNTS, strict=True):
        omitted = name in dlmm.OPTIONAL_SWAP_ACCOUNTS and key == METEORA_DLMM_PROGRAM_ID
        metas.append(AccountMeta(key, signer, writable and not omitted))
    metas += [AccountMeta(k, False, True) for k in _dlmm_swap_bin_arrays(pool, mint_in)]
    return Instruction(METEORA_DLMM_PROGRAM_ID, dlmm.encode_swap_args(amount_in, min_amount_out), metas)


MAX_SWAP_BIN_ARRAYS = 4


def _dlmm_swap_bin_arrays(pool: SwapKeys, mint_in: Pubkey) -> list[Pubkey]:
    """The bin arrays a swap may cross: from the active bin's array onwards in the swap's direction."""
    assert pool.active_id is not None
    active = dlmm.bin_array_index(pool.active_id)
    swap_for_y = mint_in == pool.mints[0]
    ordered = sorted(pool.bin_arrays, reverse=swap_for_y)
    ahead = [i for i in ordered if (i <= active if swap_for_y else i >= active)]
    return [pool.bin_arrays[i] for i in ahead[:MAX_SWAP_BIN_ARRAYS]]


def decode_swap_instruction(program_id: Pubkey, accounts: Sequence[Pubkey], data: bytes) -> SwapCall:
    """A CPMM ``swap_base_input`` or DLMM ``swap``; ``InstructionLayoutError`` (with Anchor's code) otherwise."""
    venue = PROGRAM_VENUES.get(program_id)
    if venue is None:
        raise InstructionLayoutError(f"{program_id} is not a venue program", ANCHOR_INVALID_PROGRAM_ID)
    if venue == RAYDIUM:
        layout, discriminator, decode_args = (
            cpmm.SWAP_BASE_INPUT_ACCOUNTS,
            cpmm.SWAP_BASE_INPUT_DISCRIMINATOR,
            cpmm.decode_swap_base_input_args,
        )
    else:
        layout, discriminator, decode_args = dlmm.SWAP_ACCOUNTS, dlmm.SWAP_DISCRIMINATOR, dlmm.decode_swap_args
    if data[:8] != discriminator:
        raise InstructionLayoutError(
            f"unknown {venue} instruction discriminator {data[:8].hex() or '(none)'}",
            ANCHOR_INSTRUCTION_FALLBACK_NOT_FOUND,
        )
    try:
        amount_in, min_amount_out = decode_args(data)
    except LayoutError as exc:
        raise InstructionLayoutError(str(exc), ANCHOR_INSTRUCTION_DID_NOT_DESERIALIZE) from exc
    if len(accounts) < len(layout):
        raise InstructionLayoutError(
            f"{venue} swap takes {len(layout)} accounts, got {len(accounts)}", ANCHOR_ACCOUNT_NOT_ENOUGH_KEYS
        )
    named = {name: accounts[i] for i, (name, _, _) in enumerate(layout)}
    remaining = tuple(accounts[len(layout) :])
    if venue == RAYDIUM:
        _expect(named, "authority", cpmm.authority_address(), ANCHOR_CONSTRAINT_SEEDS)
        return SwapCall(
            venue,
            program_id,
            named["pool_state"],
            named["payer"],
            named["input_token_account"],
            named["output_token_account"],
            amount_in,
            min_amount_out,
            named,
            remaining,
        )
    _expect(named, "event_authority", dlmm.event_authority_address(), ANCHOR_CONSTRAINT_SEEDS)
    _expect(named, "program", METEORA_DLMM_PROGRAM_ID, ANCHOR_CONSTRAINT_ADDRESS)
    return SwapCall(
        venue,
        program_id,
        named["lb_pair"],
        named["user"],
        named["user_token_in"],
        named["user_token_out"],
        amount_in,
        min_amount_out,
        named,
        remaining,
    )


def _expect(named: Mapping[str, Pubkey], name: str, key: Pubkey, code: int) -> None:
    if named[name] != key:
        raise InstructionLayoutError(f"account {name} must be {key}, got {named[name]}", code)
