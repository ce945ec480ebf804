"""The state machine: forward only, retries re-enter routing, terminal is final."""

from __future__ import annotations

import pytest

from services.common import states


@pytest.mark.parametrize(
    ("current", "new"),
    [("pending", "routing"), ("routing", "building"), ("building", "submitted"), ("submitted", "confirmed")]
    + [(s, "failed") for s in ("pending", "routing", "building", "submitted")],
)
def test_forward_edges_are_legal(current: str, new: str) -> None:
    assert states.is_legal(current, new)
    assert new not in states.RETRY.get(current, frozenset())


@pytest.mark.parametrize("current", ["routing", "building", "submitted"])
def test_retry_reenters_routing(current: str) -> None:
    assert states.is_legal(current, "routing")
    assert "routing" in states.RETRY[current]


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("pending", "building"),
        ("pending", "confirmed"),
        ("routing", "submitted"),
        ("building", "pending"),
        ("confirmed", "failed"),
        ("failed", "routing"),
        ("confirmed", "routing"),
        ("pending", "pending"),
    ],
)
def test_everything_else_is_illegal(current: str, new: str) -> None:
    assert not states.is_legal(current, new)


def test_proto_names_round_trip() -> None:
    for name in states.ORDERED:
        assert states.from_proto(states.to_proto(name)) == name
    assert states.from_proto(0) == ""
    assert states.from_proto(99) == ""
