from __future__ import annotations

import random
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import timestamp_pb2

from services.common import codec, config
from services.common.decimals import fmt, parse_decimal
from tests.support import transitions


def test_defaults_match_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("GATEWAY_PORT", "QUOTE_LATENCY_MS", "EXECUTION_LATENCY_MS", "EXECUTOR_PREFETCH", "RATE_LIMIT_PER_MIN"):
        monkeypatch.delenv(key, raising=False)
    s = config.load()
    assert (s.gateway_port, s.orders_port, s.router_port, s.executor_port, s.notifier_port) == (
        3000,
        50051,
        50052,
        50053,
        50054,
    )
    assert s.quote_latency_ms == (200, 300)
    assert (s.solana_rpc_url, s.solana_ws_url) == ("http://127.0.0.1:8899", "ws://127.0.0.1:8900")
    assert s.executor_prefetch == 10
    assert s.solana_rpc_batch_max == 20
    assert s.rate_limit_per_min == 100
    assert s.max_attempts == 3


@pytest.mark.parametrize(
    ("var", "value"),
    [("GATEWAY_PORT", "x"), ("QUOTE_LATENCY_MS", "9-1"), ("RETRY_BACKOFF_MS", ""), ("SOLANA_RPC_BATCH_MAX", "0")],
)
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(config.ConfigError, match=var):
        config.load()


def test_decimals_are_exact_strings() -> None:
    assert fmt(Decimal("1.500")) == "1.5"
    assert fmt(Decimal("1E+3")) == "1000"
    assert fmt(Decimal("0.000000001")) == "0.000000001"
    assert parse_decimal(0.1) is None
    assert parse_decimal("0.1") == Decimal("0.1")


def test_order_view_round_trips_through_protobuf() -> None:
    view: dict[str, Any] = {
        "orderId": "946d8f7c-2c63-4a29-81d1-792b67b2ed1b",
        "type": "market",
        "status": "confirmed",
        "tokenIn": "a",
        "tokenOut": "b",
        "amountIn": "1.5",
        "slippage": "0.01",
        "amountOut": "224.1",
        "expectedPrice": "149.5",
        "executedPrice": "149.4",
        "dexProvider": "meteora",
        "txHash": "sig",
        "errorMessage": None,
        "retryCount": 1,
        "seq": 5,
        "routing": codec.to_json(transitions.routing()),
        "execution": codec.to_json(transitions.execution(slot=9, landed_at_ms=1795578502630)),
        "createdAt": "2026-01-01T00:00:00.000001Z",
        "updatedAt": "2026-01-01T00:00:01.000000Z",
        "completedAt": "2026-01-01T00:00:01.000000Z",
        "limitPrice": None,
        "minLiquidity": None,
        "expiresAt": None,
    }
    assert codec.order_to_view(codec.order_from_view(view)) == view
    assert view["execution"]["slot"] == 9 and view["execution"]["landedAtMs"] == 1795578502630, "64-bit as numbers"
    assert "executedOut" not in view["execution"], "optional fields only when set"
    assert view["routing"]["excluded"] == {} and view["routing"]["quotes"] == [], "the rest always"
    limit = {**view, "type": "limit", "limitPrice": "151.2", "expiresAt": "2026-01-02T00:00:00.000000Z"}
    assert codec.order_to_view(codec.order_from_view(limit)) == limit


def test_timestamps_convert_as_protobufs_own_helpers_do() -> None:
    """The view's timestamps against protobuf's ToDatetime / FromDatetime (the oracle), over four centuries
    both sides of the epoch, the ends of the four-digit years, and an unset timestamp."""
    rng = random.Random(15)
    moments = [(rng.randint(-(10**10), 10**10), rng.randint(0, 999_999) * 1000) for _ in range(5000)]
    moments += [(-30_610_224_000, 0), (253_402_300_799, 999_999_000), (-62_135_596_800, 0), (-1, 500_000_000)]
    for seconds, nanos in moments:
        ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
        expected = ts.ToDatetime(tzinfo=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        text = codec._ts_to_view(ts)
        assert text == expected
        back = timestamp_pb2.Timestamp()
        codec._ts_from_view(text, back)
        assert back == ts
        oracle = timestamp_pb2.Timestamp()
        oracle.FromDatetime(codec.parse_iso(text))
        assert back == oracle
    assert codec._ts_to_view(timestamp_pb2.Timestamp()) is None
    naive = timestamp_pb2.Timestamp()
    codec._ts_from_view("2026-11-28T12:00:00.250000", naive)  # no offset: UTC, as FromDatetime reads it
    assert naive == timestamp_pb2.Timestamp(seconds=1_795_867_200, nanos=250_000_000)
