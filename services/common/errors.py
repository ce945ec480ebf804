"""Field-level validation errors and their gRPC form (google.rpc.BadRequest).

One error model for every surface: a list of (field, issue) pairs. Over gRPC
it travels as INVALID_ARGUMENT with a ``google.rpc.BadRequest`` detail (and an
``ErrorInfo`` with a reason); the gateway turns it into the JSON error body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    issue: str


class ValidationFailed(Exception):
    """Bad input; nothing was changed."""

    def __init__(self, violations: list[FieldViolation], reason: str = "VALIDATION_FAILED") -> None:
        self.violations = violations
        self.reason = reason
        super().__init__("; ".join(f"{v.field}: {v.issue}" for v in violations))


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_with_details(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str = "",
    violations: list[FieldViolation] | None = None,
    domain: str = "dexengine",
    retry_after_s: float | None = None,
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """(code, message, trailing metadata) carrying a rich google.rpc.Status (RetryInfo when a wait is known)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    if reason:
        status.details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain)))
    if retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(math.ceil(retry_after_s * 1000))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.issue) for v in violations
            ]
        )
        status.details.append(_pack(bad))
    return code, message, ((DETAILS_KEY, status.SerializeToString()),)


async def abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str = "",
    violations: list[FieldViolation] | None = None,
    retry_after_s: float | None = None,
) -> NoReturn:
    """Abort the RPC with a rich status: ``context.abort`` raises, so this never returns."""
    code, message, trailers = status_with_details(
        code, message, reason=reason, violations=violations, retry_after_s=retry_after_s
    )
    context.set_trailing_metadata(trailers)
    await context.abort(code, message)


@dataclass(frozen=True)
class RpcErrorInfo:
    """What a client learns from a failed call's rich status."""

    code: grpc.StatusCode
    message: str
    reason: str
    violations: list[FieldViolation]
    # Seconds to wait before retrying (google.rpc.RetryInfo), when the server said.
    retry_after_s: float | None = None


def parse_rpc_error(err: grpc.aio.AioRpcError) -> RpcErrorInfo:
    reason = ""
    violations: list[FieldViolation] = []
    retry_after_s: float | None = None
    for key, value in err.trailing_metadata() or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(FieldViolation(fv.field, fv.description) for fv in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after_s = retry.retry_delay.ToMilliseconds() / 1000
    return RpcErrorInfo(err.code(), err.details() or "", reason, violations, retry_after_s)
