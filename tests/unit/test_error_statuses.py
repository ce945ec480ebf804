"""The one error mapping: each domain error -> its status code, reason, message, violations and wait,
and the rich status on the wire (grpc-status-details-bin) read back as it was sent."""

from __future__ import annotations

from typing import NoReturn

import grpc
import pytest
from asyncpg import exceptions as pgerr

from services.common.errors import (
    DETAILS_KEY,
    FieldViolation,
    RpcErrorInfo,
    UpstreamError,
    ValidationFailed,
    guarded,
    parse_rpc_error,
    rich_status,
    status_of,
)
from services.notifier.servicer import ApiKeyMissing
from services.orders.admission import BacklogFull
from services.orders.keys import KeyNameTaken, KeyNotFound, PermissionDenied, Unauthenticated
from services.orders.quota import QuotaExceeded
from services.orders.servicer import NotCancellable
from services.orders.store import IdempotencyConflict, NotFound, StaleTransition
from services.router.servicer import FeedNotReady, NothingFills, NoVenueAvailable
from venues.errors import InsufficientLiquidityError, NoPoolError, VenueUnavailableError

C = grpc.StatusCode
V = FieldViolation
CASES = [
    (
        ValidationFailed([V("amount_in", "must be positive")]),
        C.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        "amount_in: must be positive",
        [V("amount_in", "must be positive")],
        None,
    ),
    (
        ValidationFailed([V("amount_in", "is below one base unit")], reason="AMOUNT_TOO_SMALL"),
        C.INVALID_ARGUMENT,
        "AMOUNT_TOO_SMALL",
        "amount_in: is below one base unit",
        [V("amount_in", "is below one base unit")],
        None,
    ),
    (NotFound("b1c4"), C.NOT_FOUND, "ORDER_NOT_FOUND", "order not found", [], None),
    (
        StaleTransition("confirmed"),
        C.FAILED_PRECONDITION,
        "STALE_TRANSITION",
        "stale transition: order is confirmed",
        [],
        None,
    ),
    (
        IdempotencyConflict("key-1"),
        C.INVALID_ARGUMENT,
        "IDEMPOTENCY_KEY_REUSED",
        "idempotency key was already used with a different request",
        [V("idempotency_key", "was already used with a different request body")],
        None,
    ),
    (
        BacklogFull(10, 10),
        C.RESOURCE_EXHAUSTED,
        "BACKLOG_FULL",
        "10 orders are live, the limit is 10; retry later",
        [],
        None,
    ),
    (
        QuotaExceeded(60, 0.25),
        C.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
        "submit quota of 60 orders per minute exceeded; retry in 1 s",
        [],
        0.25,
    ),
    (
        Unauthenticated("API_KEY_REVOKED", "this API key was revoked", "was revoked"),
        C.UNAUTHENTICATED,
        "API_KEY_REVOKED",
        "this API key was revoked",
        [V("authorization", "was revoked")],
        None,
    ),
    (
        PermissionDenied("this method is for the services of the mesh"),
        C.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        "this method is for the services of the mesh",
        [],
        None,
    ),
    (
        NotCancellable("confirmed"),
        C.FAILED_PRECONDITION,
        "NOT_CANCELLABLE",
        "order is confirmed; only pending or waiting orders can be cancelled",
        [V("status", "confirmed")],
        None,
    ),
    (
        KeyNameTaken("ci"),
        C.ALREADY_EXISTS,
        "API_KEY_NAME_TAKEN",
        "an active key is already named ci",
        [V("name", "is already the name of an active key")],
        None,
    ),
    (
        KeyNotFound("ci"),
        C.NOT_FOUND,
        "API_KEY_NOT_FOUND",
        "no key with id or active name ci",
        [V("key", "is neither the id of a key nor the name of an active key")],
        None,
    ),
    (
        ApiKeyMissing(),
        C.UNAUTHENTICATED,
        "API_KEY_MISSING",
        "an API key is required: send 'authorization: Bearer <key>'",
        [V("authorization", "an API key is required: send 'authorization: Bearer <key>'")],
        None,
    ),
    (FeedNotReady(), C.UNAVAILABLE, "NO_POOL_STATE", "pool accounts not loaded from the cluster yet", [], None),
    (
        NoVenueAvailable({"raydium": "timed out after 1500 ms", "meteora": "down"}),
        C.UNAVAILABLE,
        "NO_VENUE_AVAILABLE",
        "no venue answered: raydium: timed out after 1500 ms; meteora: down",
        [],
        None,
    ),
    # Every venue refused the size: retryable for a pool not open yet, so not NOT_FOUND even for NO_ROUTE.
    (NothingFills(NoPoolError("no pool open yet")), C.FAILED_PRECONDITION, "NO_ROUTE", "no pool open yet", [], None),
    (
        NothingFills(InsufficientLiquidityError("ran dry")),
        C.FAILED_PRECONDITION,
        "INSUFFICIENT_LIQUIDITY",
        "ran dry",
        [],
        None,
    ),
    # Errors of other packages: the venues' math and the database driver.
    (
        NoPoolError("no route: no open pool trades a -> b"),
        C.NOT_FOUND,
        "NO_ROUTE",
        "no route: no open pool trades a -> b",
        [V("token_out", "no open pool trades this pair")],
        None,
    ),
    (InsufficientLiquidityError("ran dry"), C.FAILED_PRECONDITION, "INSUFFICIENT_LIQUIDITY", "ran dry", [], None),
    (VenueUnavailableError("raydium down"), C.FAILED_PRECONDITION, "VENUE_UNAVAILABLE", "raydium down", [], None),
    (ConnectionRefusedError("refused"), C.UNAVAILABLE, "DATABASE_UNAVAILABLE", "database unavailable", [], None),
    (TimeoutError(), C.UNAVAILABLE, "DATABASE_UNAVAILABLE", "database unavailable", [], None),
    (
        pgerr.ConnectionDoesNotExistError("gone"),
        C.UNAVAILABLE,
        "DATABASE_UNAVAILABLE",
        "database unavailable",
        [],
        None,
    ),
    (
        pgerr.TooManyConnectionsError("too many"),
        C.UNAVAILABLE,
        "DATABASE_UNAVAILABLE",
        "database unavailable",
        [],
        None,
    ),
]


@pytest.mark.parametrize(("exc", "code", "reason", "message", "violations", "retry_after_s"), CASES)
def test_each_error_has_its_status(
    exc: BaseException,
    code: grpc.StatusCode,
    reason: str,
    message: str,
    violations: list[FieldViolation],
    retry_after_s: float | None,
) -> None:
    assert status_of(exc) == RpcErrorInfo(code, message, reason, violations, retry_after_s)


@pytest.mark.parametrize("exc", [ValueError("a bug"), KeyError("k"), AssertionError()])
def test_a_bug_is_not_an_outcome(exc: BaseException) -> None:
    assert status_of(exc) is None


def test_an_upstream_answer_passes_on_as_it_came() -> None:
    info = RpcErrorInfo(C.NOT_FOUND, "order not found", "ORDER_NOT_FOUND", [V("order_id", "unknown")], 2.5)
    assert status_of(UpstreamError(info)) == info


def _failed_call(status: grpc.Status) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), status.details
    )


@pytest.mark.parametrize(("exc", "code", "reason", "message", "violations", "retry_after_s"), CASES)
def test_the_wire_shape_reads_back_as_sent(
    exc: BaseException,
    code: grpc.StatusCode,
    reason: str,
    message: str,
    violations: list[FieldViolation],
    retry_after_s: float | None,
) -> None:
    info = status_of(exc)
    assert info is not None
    status = rich_status(info)
    assert (status.code, status.details) == (code, message)
    assert [key for key, _ in status.trailing_metadata] == [DETAILS_KEY]
    assert parse_rpc_error(_failed_call(status)) == info


def test_a_call_without_details_reads_as_its_code_and_message() -> None:
    err = grpc.aio.AioRpcError(C.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "Deadline Exceeded")
    assert parse_rpc_error(err) == RpcErrorInfo(C.DEADLINE_EXCEEDED, "Deadline Exceeded")


def test_details_that_contradict_the_call_are_ignored() -> None:
    status = rich_status(RpcErrorInfo(C.NOT_FOUND, "order not found", "ORDER_NOT_FOUND"))
    err = grpc.aio.AioRpcError(
        C.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), "something else"
    )
    assert parse_rpc_error(err) == RpcErrorInfo(C.INTERNAL, "something else")


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.status: grpc.Status | None = None

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self.status = status
        raise Aborted


async def test_guarded_aborts_with_the_table_and_lets_bugs_through() -> None:
    context = FakeContext()

    async def refused() -> int:
        raise StaleTransition("failed")

    with pytest.raises(Aborted):
        await guarded(context, refused)  # type: ignore[arg-type]
    assert context.status is not None
    assert (context.status.code, context.status.details) == (C.FAILED_PRECONDITION, "stale transition: order is failed")

    async def buggy() -> int:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await guarded(FakeContext(), buggy)  # type: ignore[arg-type]

    async def fine() -> int:
        return 7

    assert await guarded(FakeContext(), fine) == 7  # type: ignore[arg-type]
