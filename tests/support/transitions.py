"""Drive an order through its steps by calling orders.Transition directly."""

from __future__ import annotations

import asyncio
import itertools
from typing import TypedDict, Unpack

from dexengine.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from services.common import states

CHAIN = ["pending", "routing", "building", "submitted", "confirmed"]
SIGNATURE = "5" * 64


def routing(venue: str = "meteora", expected_price: str = "149.86") -> common_pb2.Routing:
    leg = common_pb2.RouteLeg(venue=venue, amount_in="1", amount_out=expected_price, min_amount_out="148", pool="P")
    return common_pb2.Routing(
        venue=venue,
        amount_out=expected_price,
        min_amount_out="148",
        expected_price=expected_price,
        legs=[leg],
        attempt=1,
    )


class Landed(TypedDict, total=False):
    """The fields of an execution that a landed transaction sets."""

    slot: int
    fee_lamports: int
    landed_ms: int
    executed_in: str
    executed_out: str
    improvement_bps: str
    landed_at_ms: int
    executor: str


def execution(**landed: Unpack[Landed]) -> common_pb2.Execution:
    return common_pb2.Execution(
        signature=SIGNATURE, attempt=1, venue="meteora", quoted_out="149.86", min_amount_out="148", **landed
    )


def submit() -> orders_pb2.Submit:
    signed = common_pb2.SignedTransaction(
        signature=SIGNATURE, attempt=1, transaction=b"\x01signed", last_valid_block_height=1000
    )
    return orders_pb2.Submit(signed=signed, execution=execution())


def request(order_id: str, current: str | int, new: str | int) -> orders_pb2.TransitionRequest:
    """A TransitionRequest from ``current`` whose step leads to ``new`` (statuses by name or proto value)."""
    if isinstance(current, int):
        current = states.from_proto(current)
    if isinstance(new, int):
        new = states.from_proto(new)
    req = orders_pb2.TransitionRequest(order_id=order_id, expected_status=states.to_proto(current))
    if new == states.FAILED:
        req.fail.CopyFrom(orders_pb2.Fail(attempt=1, code="NO_ROUTE", reason="no pool trades this pair"))
    elif new == states.EXPIRED:
        req.expire.expires_at = "2026-01-01T00:00:00.000000Z"
    elif new == states.ROUTING and current == states.WAITING:
        req.fire.triggered.CopyFrom(common_pb2.Trigger(kind="limit", venue="raydium", price="150", observed_at_ms=1))
    elif new == states.ROUTING and current == states.PENDING:
        req.begin.attempt = 1
    elif new == states.ROUTING:
        req.retry.CopyFrom(orders_pb2.Retry(attempt=2, code="SLIPPAGE_EXCEEDED", reason="moved", retry_in_ms=100))
    elif new == states.BUILDING:
        req.route.routing.CopyFrom(routing())
    elif new == states.SUBMITTED and current in (states.PENDING, states.ROUTING):
        req.route_submit.CopyFrom(orders_pb2.RouteSubmit(routing=routing(), submit=submit()))
    elif new == states.SUBMITTED:
        req.submit.CopyFrom(submit())
    elif new == states.CONFIRMED:
        landed = execution(slot=7, fee_lamports=5000, executed_in="1", executed_out="149.9", improvement_bps="2.67")
        req.confirm.CopyFrom(orders_pb2.Confirm(amount_out="149.9", executed_price="149.9", execution=landed))
    else:
        raise ValueError(f"no step leads to {new}")
    return req


async def advance(orders: orders_pb2_grpc.OrdersAsyncStub, order_id: str, pause: float) -> None:
    """pending → … → confirmed, one compare-and-set transition every ``pause`` seconds."""
    for current, new in itertools.pairwise(CHAIN):
        await asyncio.sleep(pause)
        await orders.Transition(request(order_id, current, new), timeout=5)
