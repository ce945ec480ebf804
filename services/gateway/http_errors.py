"""The one JSON error body of the HTTP API, and gRPC status -> HTTP status."""

from __future__ import annotations

import logging
import math

import grpc
import orjson
from aiohttp import web

from services.common.errors import FieldViolation, RpcErrorInfo

# Canonical (snake_case) field names -> the HTTP API's names.
HTTP_FIELD_NAMES = {
    "token_in": "tokenIn",
    "token_out": "tokenOut",
    "amount_in": "amountIn",
    "slippage": "slippage",
    "type": "type",
    "limit_price": "limitPrice",
    "min_liquidity": "minLiquidity",
    "expires_at": "expiresAt",
    "idempotency_key": "Idempotency-Key",
    "order_id": "orderId",
    "status": "status",
    "limit": "limit",
    "cursor": "cursor",
    "authorization": "Authorization",
}
AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="dexengine"'}

log = logging.getLogger(__name__)
_OUTCOME_UNKNOWN = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED})
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


def error_response(
    status: int,
    code: str,
    message: str,
    violations: list[FieldViolation] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    details = [{"field": HTTP_FIELD_NAMES.get(v.field, v.field), "issue": v.issue} for v in violations or []]
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def from_rpc(info: RpcErrorInfo) -> web.Response:
    if info.reason == "IDEMPOTENCY_KEY_REUSED":
        return error_response(422, info.reason, info.message, info.violations)
    if info.code in _OUTCOME_UNKNOWN:
        # The call broke off (a service died mid-request): it may or may not have taken
        # effect. Retrying with the same Idempotency-Key is safe and gives the one order.
        log.warning("upstream call broke off: %s %s", info.code.name, info.message)
        return error_response(
            503,
            "OUTCOME_UNKNOWN",
            "a dependency failed mid-request; retry (with the same Idempotency-Key for POST)",
            headers={"Retry-After": "1"},
        )
    status = _HTTP_STATUS.get(info.code, 500)
    if status == 500:
        log.error("unexpected upstream status: %s %s", info.code.name, info.message)
        return error_response(500, "INTERNAL", "internal error")
    code = info.reason or info.code.name
    message = info.message if status != 503 else f"a dependency is unavailable: {info.message}"
    headers: dict[str, str] | None = None
    if status in (429, 503):
        headers = {"Retry-After": str(max(1, math.ceil(info.retry_after_s or 1)))}
    elif status == 401:
        headers = AUTHENTICATE
    return error_response(status, code, message, info.violations, headers)
