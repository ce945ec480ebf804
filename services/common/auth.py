"""API-key authentication settings and the metadata every service speaks.

``AUTH=off`` (the default, ``make run`` and the dev overlay) leaves every door
open: no key is asked for and every order belongs to the one anonymous caller.
``AUTH=apikey`` asks each client for ``Authorization: Bearer <key>`` (HTTP and
WebSocket) or ``authorization`` metadata (gRPC); orders checks the key and owns
the rules (see services/orders/keys.py).

The services call each other with the internal token (``INTERNAL_TOKEN``, in
``x-dexengine-internal`` metadata, added to every call of a channel from
services.common.grpc_client). It is required when ``AUTH=apikey``: without it
the executor and the notifier could not read orders. Operators present the
same token to the admin methods (``dexctl keys …``).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from services.common.config import ConfigError

OFF = "off"
APIKEY = "apikey"
MODES = (OFF, APIKEY)
AUTHORIZATION = "authorization"  # gRPC metadata keys are lower case
INTERNAL = "x-dexengine-internal"
DEFAULT_QUOTA_PER_MIN = 600


@dataclass(frozen=True)
class AuthSettings:
    mode: str = OFF
    internal_token: str = ""
    # Orders a key may submit per minute unless the key says otherwise.
    quota_per_min: int = DEFAULT_QUOTA_PER_MIN

    @property
    def enabled(self) -> bool:
        return self.mode == APIKEY

    def is_internal(self, token: str | None) -> bool:
        """A constant-time comparison with the internal token (never true when there is none)."""
        return bool(self.internal_token and token) and hmac.compare_digest(
            self.internal_token.encode(), (token or "").encode()
        )


def load() -> AuthSettings:
    """AUTH, INTERNAL_TOKEN and API_KEY_QUOTA_PER_MIN from the environment; ConfigError names a bad one."""
    mode = os.environ.get("AUTH", OFF).strip().lower() or OFF
    if mode not in MODES:
        raise ConfigError(f"AUTH must be one of {', '.join(MODES)}, got {mode!r}")
    token = os.environ.get("INTERNAL_TOKEN", "").strip()
    if mode == APIKEY and len(token) < 16:
        raise ConfigError(
            "INTERNAL_TOKEN must be set (16+ characters) when AUTH=apikey: the services call each other with it"
        )
    raw = os.environ.get("API_KEY_QUOTA_PER_MIN", str(DEFAULT_QUOTA_PER_MIN)).strip()
    try:
        quota = int(raw)
    except ValueError as exc:
        raise ConfigError(f"API_KEY_QUOTA_PER_MIN must be an integer, got {raw!r}") from exc
    if quota < 1:
        raise ConfigError(f"API_KEY_QUOTA_PER_MIN must be >= 1, got {quota}")
    return AuthSettings(mode, token, quota)


def bearer(value: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` value; None when absent or another scheme."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def forwarded(authorization: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a client's own ``Authorization`` value, or nothing."""
    return ((AUTHORIZATION, authorization),) if authorization else ()


class _WithToken:
    """Adds the internal token to every call it intercepts."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(INTERNAL, self.token)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first kind it is, so each kind has its own class.
class _UnaryUnary(_WithToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_WithToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_WithToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_WithToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def internal_interceptors(token: str | None = None) -> list[Any]:
    """The interceptor that presents the internal token (INTERNAL_TOKEN unless given); none without a token."""
    token = os.environ.get("INTERNAL_TOKEN", "").strip() if token is None else token
    if not token:
        return []
    return [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
