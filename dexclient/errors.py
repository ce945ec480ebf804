"""What a failed call means, as exceptions: one class per kind of answer.

Every error carries the gRPC code, the server's message, the ErrorInfo
reason (``VALIDATION_FAILED``, ``QUOTA_EXCEEDED`` …), the fields it names and,
when the server said, how long to wait before retrying.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class Violation:
    field: str
    issue: str


@dataclass
class DexError(Exception):
    """A call the engine refused or could not answer."""

    code: str  # the gRPC status code's name, e.g. "INVALID_ARGUMENT"
    message: str
    reason: str = ""  # ErrorInfo reason, e.g. "QUOTA_EXCEEDED"
    violations: list[Violation] = field(default_factory=list)
    retry_after_s: float | None = None
    http_status: int | None = None  # set when the answer came over HTTP

    def __str__(self) -> str:
        fields = "; ".join(f"{v.field}: {v.issue}" for v in self.violations)
        head = f"{self.reason or self.code}: {self.message}"
        return f"{head} ({fields})" if fields and fields not in self.message else head


class InvalidArgument(DexError):
    """Bad input; nothing was changed. ``violations`` names every field."""


class Unauthenticated(DexError):
    """No API key, a malformed one, an unknown one or a revoked one."""


class PermissionDenied(DexError):
    """The caller may not call this (an API key on an admin method)."""


class NotFound(DexError):
    """No such order (another key's order does not exist for you), key or route."""


class Conflict(DexError):
    """The order is not in a state that allows this (e.g. cancel once routing), or a name is taken."""


class RateLimited(DexError):
    """Too many orders: the key's quota or the engine's backlog; wait ``retry_after_s``."""


class Unavailable(DexError):
    """The engine could not be reached or did not answer in time; safe calls were already retried."""


class Unimplemented(DexError):
    """The engine does not do this yet."""


_BY_CODE: dict[grpc.StatusCode, type[DexError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}
_BY_HTTP: dict[int, tuple[grpc.StatusCode, type[DexError]]] = {
    400: (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    401: (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
    403: (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
    404: (grpc.StatusCode.NOT_FOUND, NotFound),
    409: (grpc.StatusCode.FAILED_PRECONDITION, Conflict),
    415: (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    422: (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    429: (grpc.StatusCode.RESOURCE_EXHAUSTED, RateLimited),
    501: (grpc.StatusCode.UNIMPLEMENTED, Unimplemented),
    503: (grpc.StatusCode.UNAVAILABLE, Unavailable),
}


@dataclass(frozen=True)
class StatusDetails:
    """The rich details of a failed call's google.rpc.Status (grpc-status-details-bin)."""

    reason: str = ""
    violations: list[Violation] = field(default_factory=list)
    retry_after_s: float | None = None


def status_details(err: grpc.RpcError) -> StatusDetails:
    """ErrorInfo reason, BadRequest field violations and RetryInfo wait of a failed call (sync or aio)."""
    try:
        # Sync and aio errors answer code(), details() and trailing_metadata() as a grpc.Call does.
        status = rpc_status.from_call(cast(grpc.Call, err))
    except ValueError:  # a trailer that does not match the call's own status: not this call's details
        status = None
    return details_of(status)


def details_of(status: status_pb2.Status | None) -> StatusDetails:
    """ErrorInfo reason, BadRequest field violations and RetryInfo wait of a google.rpc.Status."""
    details = StatusDetails()
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            details = replace(details, reason=info.reason)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            details.violations.extend(Violation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            details = replace(details, retry_after_s=retry.retry_delay.ToMilliseconds() / 1000)
    return details


def from_rpc_error(err: grpc.RpcError) -> DexError:
    """The exception for a failed gRPC call (sync or async), with its rich status details."""
    call = cast(Any, err)  # sync and aio errors are both Calls, which grpc.RpcError does not declare
    code: grpc.StatusCode = call.code()
    details = status_details(err)
    kind = _BY_CODE.get(code, DexError)
    return kind(code.name, call.details() or "", details.reason, details.violations, details.retry_after_s)


def from_http(status: int, body: Any, retry_after: str | None = None) -> DexError:
    """The exception for an HTTP error answer (the API's ``{"error": {...}}`` body)."""
    code, kind = _BY_HTTP.get(status, (grpc.StatusCode.UNKNOWN, DexError))
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return kind(code.name, f"HTTP {status}", http_status=status)
    violations = [Violation(str(d.get("field", "")), str(d.get("issue", ""))) for d in error.get("details") or []]
    wait = float(retry_after) if retry_after and retry_after.isdigit() else None
    return kind(code.name, str(error.get("message", "")), str(error.get("code", "")), violations, wait, status)
