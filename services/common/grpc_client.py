"""gRPC client channels with deadlines, retries on UNAVAILABLE and keepalive."""

from __future__ import annotations

import json

import grpc

from services.common import auth, telemetry

# gRFC A6 retry policy: only UNAVAILABLE (the call never reached a handler or
# the server is restarting) is retried automatically; other codes are answers.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
    }
)

CHANNEL_OPTIONS = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def channel(target: str, internal_token: str | None = None) -> grpc.aio.Channel:
    """A channel to another service of the mesh; its calls carry the internal token (INTERNAL_TOKEN unless given)."""
    interceptors = [*telemetry.client_interceptors(), *auth.internal_interceptors(internal_token)]
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors or None)
