"""Each validation rule, each field: one place for the rules (services.common.validation)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.common.errors import ValidationFailed
from services.common.validation import is_mint, validate_idempotency_key, validate_order, validate_order_id
from services.gateway.app import parse_order_body

SOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
GOOD = {"token_in": SOL, "token_out": USDC, "amount_in": "10", "slippage": "0.01"}


def fields_of(values: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as info:
        validate_order(values)
    return {v.field: v.issue for v in info.value.violations}


def test_a_good_order_parses_to_decimals() -> None:
    order = validate_order(GOOD)
    assert order.amount_in == Decimal(10)
    assert order.slippage == Decimal("0.01")
    assert order.type == "market"


@pytest.mark.parametrize(
    ("change", "field", "issue"),
    [
        ({"token_in": None}, "token_in", "is required"),
        ({"token_in": 5}, "token_in", "must be a string"),
        ({"token_in": "0OIl" * 10}, "token_in", "base58"),
        ({"token_in": "1" * 44}, "token_in", "32 bytes"),
        ({"token_out": ""}, "token_out", "is required"),
        ({"token_out": SOL}, "token_out", "must differ"),
        ({"amount_in": None}, "amount_in", "is required"),
        ({"amount_in": "ten"}, "amount_in", "decimal"),
        ({"amount_in": 1.5}, "amount_in", "decimal"),
        ({"amount_in": True}, "amount_in", "decimal"),
        ({"amount_in": "0"}, "amount_in", "greater than 0"),
        ({"amount_in": "-3"}, "amount_in", "greater than 0"),
        ({"amount_in": "NaN"}, "amount_in", "decimal"),
        ({"amount_in": "Infinity"}, "amount_in", "decimal"),
        ({"amount_in": "1e13"}, "amount_in", "at most"),
        ({"amount_in": "0." + "1" * 19}, "amount_in", "decimal places"),
        ({"slippage": None}, "slippage", "is required"),
        ({"slippage": "x"}, "slippage", "fraction"),
        ({"slippage": "0.00009"}, "slippage", "between"),
        ({"slippage": "0.51"}, "slippage", "between"),
        ({"type": "stop"}, "type", "must be one of"),
        ({"type": "limit"}, "limit_price", "is required"),
        ({"type": "limit", "limit_price": "0"}, "limit_price", "greater than 0"),
        ({"type": "sniper"}, "min_liquidity", "is required"),
        ({"type": "sniper", "min_liquidity": "-1"}, "min_liquidity", "at least 0"),
        ({"type": "limit", "limit_price": "1", "expires_at": "tomorrow"}, "expires_at", "RFC 3339"),
        ({"type": "limit", "limit_price": "1", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at", "future"),
        ({"type": "limit", "limit_price": "1", "expires_at": "2999-01-01T00:00:00Z"}, "expires_at", "at most"),
        ({"type": "limit", "limit_price": "1", "expires_at": "2999-01-01T00:00:00"}, "expires_at", "time zone"),
        ({"limit_price": "1"}, "limit_price", "only to limit"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, "expires_at", "only to limit or sniper"),
    ],
)
def test_each_rule_names_its_field(change: dict[str, object], field: str, issue: str) -> None:
    found = fields_of({**GOOD, **change})
    assert field in found
    assert issue in found[field]


def test_every_violation_is_reported_at_once() -> None:
    assert set(fields_of({})) == {"token_in", "token_out", "amount_in", "slippage"}


def test_slippage_bounds_are_inclusive() -> None:
    assert validate_order({**GOOD, "slippage": "0.0001"}).slippage == Decimal("0.0001")
    assert validate_order({**GOOD, "slippage": "0.5"}).slippage == Decimal("0.5")


def test_mints() -> None:
    assert is_mint(SOL) and is_mint(USDC)
    assert not is_mint("So1111111111111111111111111111111111111111")  # 31 bytes
    assert not is_mint("")
    assert not is_mint("z" * 44)  # 44 characters that decode to 33 bytes
    assert not is_mint("0" * 40) and not is_mint("l" * 40) and not is_mint("é" * 40)  # not base58
    assert is_mint("1" * 32)  # 32 zero bytes: the system program


def test_json_numbers_become_exact_decimals_never_floats() -> None:
    values = parse_order_body(b'{"tokenIn": "a", "tokenOut": "b", "amountIn": 0.1, "slippage": 1e-2}')
    assert values["amount_in"] == "0.1"
    assert Decimal(str(values["slippage"])) == Decimal("0.01")


@pytest.mark.parametrize(
    ("raw", "field"), [(b"{", "body"), (b"[]", "body"), (b"", "body"), (b'{"tokenIN": 1}', "tokenIN")]
)
def test_body_shape_errors(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_order_body(raw)
    assert info.value.violations[0].field == field


def test_order_id_and_idempotency_key() -> None:
    assert str(validate_order_id("946d8f7c-2c63-4a29-81d1-792b67b2ed1b")) == "946d8f7c-2c63-4a29-81d1-792b67b2ed1b"
    with pytest.raises(ValidationFailed):
        validate_order_id("nope")
    assert validate_idempotency_key("abc-123") == "abc-123"
    with pytest.raises(ValidationFailed):
        validate_idempotency_key("x" * 256)
    with pytest.raises(ValidationFailed):
        validate_idempotency_key("naïve")
