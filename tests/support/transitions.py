"""Drive an order through the happy path by calling orders.Transition directly."""

from __future__ import annotations

import asyncio
import itertools

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import states

CHAIN = ["pending", "routing", "building", "submitted", "confirmed"]


async def advance(orders: orders_pb2_grpc.OrdersStub, order_id: str, pause: float) -> None:
    """pending → … → confirmed, one compare-and-set transition every ``pause`` seconds."""
    for current, new in itertools.pairwise(CHAIN):
        await asyncio.sleep(pause)
        await orders.Transition(
            orders_pb2.TransitionRequest(
                order_id=order_id, expected_status=states.to_proto(current), new_status=states.to_proto(new)
            ),
            timeout=5,
        )
