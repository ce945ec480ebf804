"""gRPC client channels with deadlines, retries on UNAVAILABLE and keepalive."""

from __future__ import annotations

import json

import grpc

from services.common import auth, telemetry

# gRFC A6 retry policy, per method: only calls that are safe to repeat are
# retried on UNAVAILABLE (the call never reached a handler, or the server is
# restarting). Reads are; a compare-and-set Transition or a CancelOrder is not
# retried blindly (its effect may have committed before the connection broke:
# the caller decides); CreateOrder only on a channel whose every CreateOrder
# carries an idempotency key (the gateway gives each request one), so a resend
# after an ambiguous failure replays the order instead of creating a second.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
SAFE_TO_RETRY = [
    {"service": "dexengine.v1.Orders", "method": "GetOrder"},
    {"service": "dexengine.v1.Orders", "method": "ListOrders"},
    {"service": "dexengine.v1.Orders", "method": "WhoAmI"},
    {"service": "dexengine.v1.Orders", "method": "ListApiKeys"},
    {"service": "dexengine.v1.Router", "method": "GetQuotes"},
    {"service": "dexengine.v1.Notifier", "method": "Watch"},
    {"service": "grpc.health.v1.Health"},
]
CREATE_ORDER = {"service": "dexengine.v1.Orders", "method": "CreateOrder"}


def service_config(*, create_order_keyed: bool = False) -> str:
    names = [*SAFE_TO_RETRY, *([CREATE_ORDER] if create_order_keyed else [])]
    return json.dumps(
        {
            "methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}],
            "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
        }
    )


SERVICE_CONFIG = service_config()

CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def channel(target: str, internal_token: str | None = None, *, create_order_keyed: bool = False) -> grpc.aio.Channel:
    """A channel to another service of the mesh; its calls carry the internal token (INTERNAL_TOKEN unless given).

    ``create_order_keyed``: every CreateOrder on this channel carries an idempotency key, so it may be retried.
    """
    interceptors = [*telemetry.client_interceptors(), *auth.internal_interceptors(internal_token)]
    options = [("grpc.service_config", service_config(create_order_keyed=create_order_keyed)), *CHANNEL_OPTIONS]
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors or None)
