"""How an execution step can fail, and what happens next.

- RetryableError: this attempt failed but a later one may succeed (quote
  timeout, venue unavailable, slippage exceeded, transaction expired): a new
  attempt after the backoff, with a fresh quote, until MAX_ATTEMPTS.
- FinalError: retrying cannot help (no route, insufficient liquidity): the
  order fails now.
- InfraError: a service of ours is unreachable (orders UNAVAILABLE): the job
  waits and runs again without spending an attempt.
- Superseded: the order moved under this job (a compare-and-set lost, e.g.
  another delivery of the same job, or a holder that died right after its
  commit): the job reloads the order from PostgreSQL and carries on.
"""

from __future__ import annotations

import grpc

from services.common.errors import parse_rpc_error


class StepError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class RetryableError(StepError):
    pass


class FinalError(StepError):
    pass


class InfraError(StepError):
    pass


class Superseded(Exception):
    pass


# A call cut off by a restarting server (its stream cancelled, or an unknown outcome) is the
# infrastructure's, not the order's: the job runs again later without spending an attempt.
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)


def from_router_error(err: grpc.aio.AioRpcError) -> Exception:
    info = parse_rpc_error(err)
    if info.code == grpc.StatusCode.NOT_FOUND:
        return FinalError(info.reason or "NO_ROUTE", info.message)
    if info.code == grpc.StatusCode.FAILED_PRECONDITION:
        if info.reason == "INSUFFICIENT_LIQUIDITY":
            return FinalError(info.reason, info.message)
        return RetryableError(info.reason or "SWAP_REJECTED", info.message)
    if info.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RetryableError("QUOTE_TIMEOUT", info.message or "router deadline exceeded")
    if info.code == grpc.StatusCode.UNAVAILABLE and info.reason == "NO_VENUE_AVAILABLE":
        return RetryableError(info.reason, info.message)  # the venues did not answer: this attempt's quote failed
    if info.code in RETRYABLE_CODES:
        # The router itself is down, restarting (a call cut off: CANCELLED/UNKNOWN) or has not loaded the pools
        # yet: ours, not the order's. The job waits and runs again without spending an attempt.
        return InfraError(info.reason or "ROUTER_UNAVAILABLE", info.message)
    return FinalError(info.reason or info.code.name, info.message)


def from_orders_error(err: grpc.aio.AioRpcError) -> Exception:
    info = parse_rpc_error(err)
    if info.code == grpc.StatusCode.FAILED_PRECONDITION:
        return Superseded(info.message)
    if info.code in RETRYABLE_CODES:
        return InfraError("ORDERS_UNAVAILABLE", info.message)
    return FinalError(info.reason or info.code.name, info.message)


# Instruction order of every swap transaction (services.executor.transactions):
# compute-unit limit, compute-unit price, create the output account, the legs, the memo.
FIRST_LEG_INSTRUCTION = 3
PROGRAM_ERRORS = {
    ("raydium", 6005): "RAYDIUM_CPMM_EXCEEDED_SLIPPAGE_0x1775",
    ("meteora", 6003): "METEORA_EXCEEDED_AMOUNT_SLIPPAGE_TOLERANCE_0x1773",
}


def from_program_error(err: object, leg_venues: list[str]) -> StepError:
    """A transaction that landed with an error: the venue program's own code when there is one.

    Every such failure is retryable: the next attempt re-quotes and builds a new
    transaction (the failed one spent only its fee).
    """
    if isinstance(err, dict) and isinstance(err.get("InstructionError"), list):
        index, detail = err["InstructionError"]
        leg = index - FIRST_LEG_INSTRUCTION
        venue = leg_venues[leg] if 0 <= leg < len(leg_venues) else "program"
        if isinstance(detail, dict) and "Custom" in detail:
            code = int(detail["Custom"])
            name = PROGRAM_ERRORS.get((venue, code), f"{venue.upper()}_PROGRAM_ERROR_{hex(code)}")
            return RetryableError(
                name, f"instruction {index} ({venue}) failed on chain: custom program error {hex(code)}"
            )
        return RetryableError("TRANSACTION_FAILED", f"instruction {index} ({venue}) failed on chain: {detail}")
    return RetryableError("TRANSACTION_FAILED", f"transaction failed on chain: {err}")
