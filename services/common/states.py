"""The order state machine, shared by orders (enforcement) and its callers.

pending -> routing -> building -> submitted -> confirmed, and any live state
-> failed. A limit or sniper order waits armed in between: pending -> waiting
-> routing when its trigger fires, or waiting -> expired at its expiresAt.
pending and waiting may be cancelled. Terminal states are final. A retry (a later attempt of the same
order) re-enters ``routing`` from routing/building, and from submitted only
once the chain has said the transaction can never land (expired).
"""

from __future__ import annotations

from dexengine.v1 import common_pb2

PENDING = "pending"
ROUTING = "routing"
BUILDING = "building"
SUBMITTED = "submitted"
CONFIRMED = "confirmed"
FAILED = "failed"
WAITING = "waiting"
EXPIRED = "expired"
CANCELLED = "cancelled"

ORDERED = (PENDING, WAITING, ROUTING, BUILDING, SUBMITTED, CONFIRMED, FAILED, EXPIRED, CANCELLED)
TERMINAL = frozenset({CONFIRMED, FAILED, EXPIRED, CANCELLED})
CANCELLABLE = frozenset({PENDING, WAITING})

FORWARD: dict[str, frozenset[str]] = {
    PENDING: frozenset({ROUTING, WAITING, FAILED, CANCELLED}),
    WAITING: frozenset({ROUTING, EXPIRED, CANCELLED, FAILED}),
    ROUTING: frozenset({BUILDING, FAILED}),
    BUILDING: frozenset({SUBMITTED, FAILED}),
    SUBMITTED: frozenset({CONFIRMED, FAILED}),
    CONFIRMED: frozenset(),
    FAILED: frozenset(),
    EXPIRED: frozenset(),
    CANCELLED: frozenset(),
}
# Retry edges: back to routing for a new attempt (retry_count increases).
RETRY: dict[str, frozenset[str]] = {
    ROUTING: frozenset({ROUTING}),
    BUILDING: frozenset({ROUTING}),
    SUBMITTED: frozenset({ROUTING}),
}


def is_legal(current: str, new: str) -> bool:
    return new in FORWARD.get(current, frozenset()) or new in RETRY.get(current, frozenset())


# Both directions once, from the enum itself (every event and order on the wire passes through them).
_NAMES: dict[int, str] = {
    number: name.removeprefix("ORDER_STATUS_").lower()
    for name, number in common_pb2.OrderStatus.items()
    if number != common_pb2.ORDER_STATUS_UNSPECIFIED
}
_NUMBERS: dict[str, common_pb2.OrderStatus.ValueType] = {
    name: common_pb2.OrderStatus.Value(f"ORDER_STATUS_{name.upper()}") for name in _NAMES.values()
}


def to_proto(status: str) -> common_pb2.OrderStatus.ValueType:
    """The enum value of a status name; ValueError for a name the enum does not have (as OrderStatus.Value)."""
    try:
        return _NUMBERS[status]
    except KeyError:
        return common_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.upper()}")  # raises, naming it


def from_proto(value: int) -> str:
    """The lower-case status name; "" for UNSPECIFIED or an unknown number."""
    return _NAMES.get(value, "")
