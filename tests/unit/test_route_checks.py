"""The gateway remembers a router's yes for a pair briefly, and nothing else."""

from __future__ import annotations

import time
from decimal import Decimal

from services.gateway.route_checks import RouteChecks


def test_a_yes_is_remembered_for_amounts_of_at_least_one_base_unit() -> None:
    checks = RouteChecks()
    assert not checks.known_open("SOL", "USDC", Decimal(1)), "never asked: ask the router"
    checks.remember("SOL", "USDC", decimals_in=9)
    assert checks.known_open("SOL", "USDC", Decimal(1))
    assert checks.known_open("SOL", "USDC", Decimal("0.000000001"))
    assert not checks.known_open("SOL", "USDC", Decimal("0.0000000001")), "below one base unit: the router refuses it"
    assert not checks.known_open("USDC", "SOL", Decimal(1)), "a pair is directed"


def test_a_yes_expires() -> None:
    checks = RouteChecks(ttl_s=0.05)
    checks.remember("SOL", "USDC", decimals_in=9)
    time.sleep(0.06)
    assert not checks.known_open("SOL", "USDC", Decimal(1))
    assert checks.open == {}, "an expired entry is dropped"
