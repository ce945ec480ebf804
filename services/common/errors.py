"""Domain errors and how a call ends with them: one mapping for every servicer.

A handler raises what happened; :func:`status_of` is the one table that says
how the call ends: a status code, a message, and a rich ``google.rpc.Status``
in the ``grpc-status-details-bin`` trailer (written by grpcio-status) with an
``ErrorInfo`` (the reason), a ``BadRequest`` (field violations) and a
``RetryInfo`` (when a retry may succeed).

- The engine's own errors subclass :class:`DomainError`: each class declares
  its code and reason, each instance its message, violations and wait.
- Errors of other packages (the venues' math, the database driver) are mapped
  in :data:`FOREIGN`.
- Anything else is a bug: it is not mapped, and gRPC answers UNKNOWN.

Clients read the same shape back with :func:`parse_rpc_error`; the gateway
turns it into the JSON error body.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dexclient.errors import StatusDetails, details_of, status_details
from services.common.db import UNAVAILABLE_ERRORS
from venues.errors import AmmError, NoPoolError

DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "dexengine"

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class FieldViolation:
    field: str
    issue: str


@dataclass(frozen=True)
class RpcErrorInfo:
    """How a call ended: what a server answers (:func:`status_of`) and what a client reads (:func:`parse_rpc_error`)."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    violations: list[FieldViolation] = field(default_factory=list)
    # Seconds to wait before retrying (google.rpc.RetryInfo), when the server said.
    retry_after_s: float | None = None


class DomainError(Exception):
    """An outcome that ends a call with a status: the class declares its code and reason.

    An instance may set its own ``reason``, ``violations`` and ``retry_after_s``; the message is ``str(exc)``.
    """

    grpc_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = ""
    violations: Sequence[FieldViolation] = ()
    retry_after_s: float | None = None

    def error_info(self) -> RpcErrorInfo:
        return RpcErrorInfo(self.grpc_code, str(self), self.reason, list(self.violations), self.retry_after_s)


class ValidationFailed(DomainError):
    """Bad input; nothing was changed."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    violations: list[FieldViolation]

    def __init__(self, violations: list[FieldViolation], reason: str = "VALIDATION_FAILED") -> None:
        self.violations = violations
        self.reason = reason
        super().__init__("; ".join(f"{v.field}: {v.issue}" for v in violations))


class UpstreamError(DomainError):
    """Another service's answer, passed on as it came (code, reason, violations and wait)."""

    def __init__(self, info: RpcErrorInfo) -> None:
        self.info = info
        super().__init__(info.message)

    def error_info(self) -> RpcErrorInfo:
        return self.info


def _no_route(exc: NoPoolError) -> RpcErrorInfo:
    violation = FieldViolation("token_out", "no open pool trades this pair")
    return RpcErrorInfo(grpc.StatusCode.NOT_FOUND, str(exc), exc.code, [violation])


def _venue_refused(exc: AmmError) -> RpcErrorInfo:
    return RpcErrorInfo(grpc.StatusCode.FAILED_PRECONDITION, str(exc), exc.code)


def _database_unavailable(exc: BaseException) -> RpcErrorInfo:
    return RpcErrorInfo(grpc.StatusCode.UNAVAILABLE, "database unavailable", "DATABASE_UNAVAILABLE")


# Errors of other packages, most specific first: (types, their status). The engine's own are DomainErrors.
FOREIGN: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any], RpcErrorInfo]], ...] = (
    (NoPoolError, _no_route),
    (AmmError, _venue_refused),
    (UNAVAILABLE_ERRORS, _database_unavailable),
)


def status_of(exc: BaseException) -> RpcErrorInfo | None:
    """The status a call ends with when its handler raised ``exc``; None when ``exc`` is not an outcome (a bug)."""
    if isinstance(exc, DomainError):
        return exc.error_info()
    for types, status in FOREIGN:
        if isinstance(exc, types):
            return status(exc)
    return None


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(info: RpcErrorInfo) -> grpc.Status:
    """``info`` as a grpc.Status whose trailer carries the google.rpc.Status (ErrorInfo, RetryInfo, BadRequest)."""
    return rpc_status.to_status(status_message(info))


def status_message(info: RpcErrorInfo) -> status_pb2.Status:
    """``info`` as a google.rpc.Status: its code and message, and ErrorInfo, RetryInfo and BadRequest details."""
    status = status_pb2.Status(code=info.code.value[0], message=info.message)
    if info.reason:
        status.details.append(_pack(error_details_pb2.ErrorInfo(reason=info.reason, domain=DOMAIN)))
    if info.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(math.ceil(info.retry_after_s * 1000))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if info.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.issue) for v in info.violations
            ]
        )
        status.details.append(_pack(bad))
    return status


async def abort(context: grpc.aio.ServicerContext, info: RpcErrorInfo) -> NoReturn:
    """End the call with ``info`` as its rich status: ``abort_with_status`` raises, so this never returns."""
    await context.abort_with_status(rich_status(info))


async def abort_for(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """End the call with the status of ``exc`` (:func:`status_of`); re-raise ``exc`` when it is not an outcome."""
    info = status_of(exc)
    if info is None:
        raise exc
    if info.code == grpc.StatusCode.UNAVAILABLE and not isinstance(exc, DomainError):
        log.warning("%s: %s", info.message, exc)  # the infrastructure's failure, with its cause
    await abort(context, info)


@contextlib.asynccontextmanager
async def answering(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """``async with answering(context):`` ends the call with the status of what its body raises."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - mapped by the table, or re-raised as it was
        await abort_for(context, exc)


async def guarded(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, ending the call with the status of what it raises."""
    try:
        return await call()
    except Exception as exc:  # noqa: BLE001 - mapped by the table, or re-raised as it was
        await abort_for(context, exc)


def parse_rpc_error(err: grpc.aio.AioRpcError) -> RpcErrorInfo:
    """What a failed call's status says: its code and message, and the rich details when the server sent them
    (decoded by the Python client's one reader of them)."""
    return _info(err.code(), err.details() or "", status_details(err))


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def code_of(number: int) -> grpc.StatusCode:
    """The status code with this number (a google.rpc.Status's ``code``); UNKNOWN for a number gRPC does not define."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


def parse_status(status: status_pb2.Status) -> RpcErrorInfo:
    """What a google.rpc.Status carried in a message says (:func:`status_message` wrote it)."""
    return _info(code_of(status.code), status.message, details_of(status))


def _info(code: grpc.StatusCode, message: str, details: StatusDetails) -> RpcErrorInfo:
    violations = [FieldViolation(v.field, v.issue) for v in details.violations]
    return RpcErrorInfo(code, message, details.reason, violations, details.retry_after_s)
