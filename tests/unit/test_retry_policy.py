"""Which calls a channel may resend by itself: reads always, CreateOrder only when keyed, a CAS never."""

from __future__ import annotations

import json

from services.common.grpc_client import service_config


def retried(config: str) -> set[tuple[str, str]]:
    (method_config,) = json.loads(config)["methodConfig"]
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    return {(n["service"], n.get("method", "*")) for n in method_config["name"]}


def test_reads_are_retried_and_writes_are_not() -> None:
    names = retried(service_config())
    assert ("dexengine.v1.Orders", "GetOrder") in names
    assert ("dexengine.v1.Router", "GetQuotes") in names
    for write in ("CreateOrder", "Transition", "CancelOrder", "CreateApiKey", "RevokeApiKey"):
        assert ("dexengine.v1.Orders", write) not in names


def test_create_order_is_retried_only_on_a_keyed_channel() -> None:
    names = retried(service_config(create_order_keyed=True))
    assert ("dexengine.v1.Orders", "CreateOrder") in names
    assert ("dexengine.v1.Orders", "Transition") not in names
