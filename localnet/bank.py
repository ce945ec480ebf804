"""Executing transactions: fees, the emulated programs, logs and balances.

``Bank.execute`` runs one sanitized, signature-checked transaction against a
``View`` (the accounts as they are at that point of the batch) the way the
Solana runtime does: the fee payer is charged ``5000 * signatures`` plus the
compute-budget priority fee first; then every instruction runs in order and if
one fails, everything but the fee is undone (all instructions or none). The
programs are emulated in Python (``localnet.programs``); their logs, error codes
and compute units mimic the real ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from venues.onchain import COMPUTE_BUDGET_PROGRAM_ID, TOKEN_PROGRAM_ID, Account
from venues.token_layout import MINT_LEN, TOKEN_ACCOUNT_LEN

LAMPORTS_PER_SIGNATURE = 5_000
DEFAULT_UNITS_PER_INSTRUCTION = 200_000
MAX_COMPUTE_UNITS = 1_400_000
MICRO_LAMPORTS = 1_000_000

TRANSACTION_ERROR_TEXT = {
    "AccountInUse": "Account in use",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "SignatureFailure": "Transaction did not pass signature verification",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "AddressLookupTableNotFound": "Transaction loads an address table account that doesn't exist",
    "DuplicateInstruction": "Transaction contains a duplicate instruction that is not allowed",
}
INSTRUCTION_ERROR_TEXT = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "IncorrectProgramId": "incorrect program id for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "NotEnoughAccountKeys": "insufficient account keys for instruction",
    "ReadonlyLamportChange": "instruction changed the balance of a read-only account",
    "ReadonlyDataModified": "instruction modified data of a read-only account",
    "ExternalAccountDataModified": "instruction modified data of an account it does not own",
    "InvalidSeeds": "Provided seeds do not result in a valid address",
    "IllegalOwner": "Provided owner is not allowed",
    "ComputationalBudgetExceeded": "Computational budget exceeded",
    "InvalidAccountOwner": "Invalid account owner",
}


class TxError(Exception):
    """A ``TransactionError``: ``json`` as the RPC shows it, ``str()`` as the node prints it."""

    def __init__(self, json: Any, text: str) -> None:
        super().__init__(text)
        self.json = json

    @classmethod
    def of(cls, name: str) -> TxError:
        return cls(name, TRANSACTION_ERROR_TEXT[name])

    @classmethod
    def instruction(cls, index: int, err: int | str) -> TxError:
        if isinstance(err, int):
            return cls(
                {"InstructionError": [index, {"Custom": err}]},
                f"Error processing Instruction {index}: custom program error: {err:#x}",
            )
        return cls(
            {"InstructionError": [index, err]}, f"Error processing Instruction {index}: {INSTRUCTION_ERROR_TEXT[err]}"
        )


class ProgramError(Exception):
    """Raised by an emulated program: a custom code (int) or an ``InstructionError`` name."""

    def __init__(self, err: int | str, log: str | None = None) -> None:
        super().__init__(str(err))
        self.err = err
        self.log = log


class View:
    """Accounts as one step sees them: its own writes over its parent's."""

    def __init__(self, parent: View | Callable[[Pubkey], Account | None]) -> None:
        self.parent = parent
        self.writes: dict[Pubkey, Account | None] = {}

    def get(self, key: Pubkey) -> Account | None:
        if key in self.writes:
            return self.writes[key]
        parent = self.parent
        return parent.get(key) if isinstance(parent, View) else parent(key)

    def set(self, key: Pubkey, account: Account | None) -> None:
        self.writes[key] = account

    def merge_into_parent(self) -> None:
        assert isinstance(self.parent, View)
        self.parent.writes.update(self.writes)


@dataclass(frozen=True)
class Meta:
    key: Pubkey
    signer: bool
    writable: bool


@dataclass
class Invocation:
    """What a program sees: its instruction's accounts and data, and where to log."""

    index: int
    program_id: Pubkey
    accounts: list[Meta]
    data: bytes
    view: View
    block_time: int
    slot: int
    logs: list[str]
    units: int = 0
    depth: int = 1

    def log(self, text: str) -> None:
        self.logs.append(f"Program log: {text}")

    def account(self, position: int) -> Meta:
        if position >= len(self.accounts):
            raise ProgramError("NotEnoughAccountKeys")
        return self.accounts[position]

    def invoke(self, program_id: Pubkey) -> None:
        self.logs.append(f"Program {program_id} invoke [{self.depth + 1}]")

    def success(self, program_id: Pubkey, units: int, budget: int) -> None:
        self.units += units
        self.logs.append(f"Program {program_id} consumed {units} of {budget} compute units")
        self.logs.append(f"Program {program_id} success")


Program = Callable[[Invocation], int]  # returns the compute units it used


@dataclass
class Outcome:
    """What executing a transaction did."""

    err: TxError | None
    fee: int
    logs: list[str]
    units: int
    view: View | None  # the fee-charged view with the instructions' writes merged on success
    pre_balances: list[int] = field(default_factory=list)
    post_balances: list[int] = field(default_factory=list)
    token_balances: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])


@dataclass(frozen=True)
class Budget:
    unit_limit: int
    unit_price: int  # micro-lamports per compute unit

    @property
    def priority_fee(self) -> int:
        return math.ceil(self.unit_price * self.unit_limit / MICRO_LAMPORTS)


def header_flags(tx: VersionedTransaction) -> tuple[list[Pubkey], list[bool], list[bool]]:
    message = tx.message
    keys = list(message.account_keys)
    header = message.header
    signed = header.num_required_signatures
    ro_signed = header.num_readonly_signed_accounts
    ro_unsigned = header.num_readonly_unsigned_accounts
    n = len(keys)
    signers = [i < signed for i in range(n)]
    writable = [(i < signed - ro_signed) if i < signed else (i < n - ro_unsigned) for i in range(n)]
    return keys, signers, writable


def sanitize(tx: VersionedTransaction) -> None:
    """The message is well formed (solders' sanitize) and needs no address lookup table."""
    try:
        tx.sanitize()
    except Exception as exc:
        raise TxError("SanitizeFailure", f"{TRANSACTION_ERROR_TEXT['SanitizeFailure']}: {exc}") from exc
    if isinstance(tx.message, MessageV0) and tx.message.address_table_lookups:
        raise TxError.of("AddressLookupTableNotFound")


def compute_budget(message: Message | MessageV0 | MessageV1) -> Budget:
    keys = message.account_keys
    limit: int | None = None
    price = 0
    others = 0
    for ix in message.instructions:
        if keys[ix.program_id_index] != COMPUTE_BUDGET_PROGRAM_ID:
            others += 1
            continue
        data = bytes(ix.data)
        if data[:1] == b"\x02" and len(data) == 5:
            limit = int.from_bytes(data[1:5], "little")
        elif data[:1] == b"\x03" and len(data) == 9:
            price = int.from_bytes(data[1:9], "little")
    if limit is None:
        limit = DEFAULT_UNITS_PER_INSTRUCTION * others
    return Budget(min(limit, MAX_COMPUTE_UNITS), price)


def fee_of(message: Message | MessageV0 | MessageV1) -> int:
    return LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures + compute_budget(message).priority_fee


class Bank:
    def __init__(self, programs: dict[Pubkey, Program], decimals_of: Callable[[View, Pubkey], int | None]) -> None:
        self.programs = programs
        self.decimals_of = decimals_of

    def execute(self, tx: VersionedTransaction, base: View, slot: int, block_time: int) -> Outcome:
        """Run ``tx`` over ``base``; ``Outcome.view`` holds its writes (fee only when it failed)."""
        keys, signers, writable = header_flags(tx)
        budget = compute_budget(tx.message)
        fee = LAMPORTS_PER_SIGNATURE * tx.message.header.num_required_signatures + budget.priority_fee
        payer_key = keys[0]
        payer = base.get(payer_key)
        if payer is None:
            return Outcome(TxError.of("AccountNotFound"), 0, [], 0, None)
        if not writable[0]:
            return Outcome(TxError.of("InvalidAccountForFee"), 0, [], 0, None)
        if payer.lamports < fee:
            return Outcome(TxError.of("InsufficientFundsForFee"), 0, [], 0, None)
        for ix in tx.message.instructions:
            program_id = keys[ix.program_id_index]
            if program_id not in self.programs:
                return Outcome(TxError.of("ProgramAccountNotFound"), 0, [], 0, None)
        pre_balances = [(a.lamports if (a := base.get(k)) is not None else 0) for k in keys]
        pre_tokens = self._token_balances(base, keys)
        fee_view = View(base)
        fee_view.set(payer_key, Account(payer.owner, payer.data, payer.lamports - fee))
        run_view = View(fee_view)
        logs: list[str] = []
        units = 0
        err: TxError | None = None
        for index, ix in enumerate(tx.message.instructions):
            program_id = keys[ix.program_id_index]
            metas = [Meta(keys[i], signers[i], writable[i]) for i in bytes(ix.accounts)]
            data = bytes(ix.data)
            logs.append(f"Program {program_id} invoke [1]")
            inv = Invocation(index, program_id, metas, data, View(run_view), block_time, slot, logs)
            try:
                used = self.programs[program_id](inv)
                self._check_writes(inv, writable, keys)
            except ProgramError as exc:
                if exc.log:
                    logs.append(f"Program log: {exc.log}")
                spent = max(inv.units, 1_000)
                units += spent
                logs.append(
                    f"Program {program_id} consumed {spent} of {budget.unit_limit - units + spent} compute units"
                )
                err = TxError.instruction(index, exc.err)
                logs.append(f"Program {program_id} failed: {_failure_text(exc.err)}")
                break
            units += used + inv.units
            if program_id != COMPUTE_BUDGET_PROGRAM_ID:
                logs.append(
                    f"Program {program_id} consumed {used + inv.units} of "
                    f"{budget.unit_limit - units + used + inv.units} compute units"
                )
            logs.append(f"Program {program_id} success")
            if units > budget.unit_limit:
                err = TxError.instruction(index, "ComputationalBudgetExceeded")
                logs.append(f"Program {program_id} failed: exceeded CUs meter at BPF instruction")
                break
            inv.view.merge_into_parent()
        if err is None:
            run_view.merge_into_parent()
        final = fee_view
        post_balances = [(a.lamports if (a := final.get(k)) is not None else 0) for k in keys]
        post_tokens = self._token_balances(final, keys)
        return Outcome(err, fee, logs, units, final, pre_balances, post_balances, (pre_tokens, post_tokens))

    def _check_writes(self, inv: Invocation, writable: list[bool], keys: list[Pubkey]) -> None:
        index_of = {k: i for i, k in enumerate(keys)}
        for key, account in inv.view.writes.items():
            i = index_of.get(key)
            if i is None or writable[i]:
                continue
            before = inv.view.parent.get(key) if isinstance(inv.view.parent, View) else None
            if before is not None and account is not None and before.data == account.data:
                raise ProgramError("ReadonlyLamportChange")
            raise ProgramError("ReadonlyDataModified")

    def _token_balances(self, view: View, keys: list[Pubkey]) -> list[dict[str, Any]]:
        out = []
        for i, key in enumerate(keys):
            account = view.get(key)
            if account is None or account.owner != TOKEN_PROGRAM_ID or len(account.data) != TOKEN_ACCOUNT_LEN:
                continue
            mint = Pubkey(account.data[0:32])
            decimals = self.decimals_of(view, mint)
            if decimals is None:
                continue
            amount = int.from_bytes(account.data[64:72], "little")
            out.append(
                {
                    "accountIndex": i,
                    "mint": str(mint),
                    "uiTokenAmount": ui_token_amount(amount, decimals),
                    "owner": str(Pubkey(account.data[32:64])),
                    "programId": str(TOKEN_PROGRAM_ID),
                }
            )
        return out


def _failure_text(err: int | str) -> str:
    if isinstance(err, int):
        return f"custom program error: {err:#x}"
    return INSTRUCTION_ERROR_TEXT[err]


def ui_token_amount(amount: int, decimals: int) -> dict[str, Any]:
    """``UiTokenAmount`` as the node renders it."""
    if decimals:
        whole, frac = divmod(amount, 10**decimals)
        text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".")
    else:
        text = str(amount)
    return {
        "uiAmount": float(text) if amount else None,
        "decimals": decimals,
        "amount": str(amount),
        "uiAmountString": text,
    }


def mint_decimals(view: View, mint: Pubkey) -> int | None:
    account = view.get(mint)
    if account is None or account.owner != TOKEN_PROGRAM_ID or len(account.data) != MINT_LEN:
        return None
    return account.data[44]
