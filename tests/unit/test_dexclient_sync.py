"""The sync client against a grpc_testing channel: the test plays the server, call by call."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from decimal import Decimal
from typing import Any

import grpc
import grpc_testing  # type: ignore[import-untyped]
import pytest

from dexclient import Client, Conflict, InvalidArgument, RateLimited, RetryPolicy, Unavailable
from dexengine.v1 import common_pb2, notifier_pb2, orders_pb2, router_pb2
from services.common.errors import FieldViolation, RpcErrorInfo, rich_status

ORDERS = orders_pb2.DESCRIPTOR.services_by_name["Orders"]
NOTIFIER = notifier_pb2.DESCRIPTOR.services_by_name["Notifier"]
ROUTER = router_pb2.DESCRIPTOR.services_by_name["Router"]
SOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"


@pytest.fixture
def channel() -> grpc_testing.Channel:
    return grpc_testing.channel([ORDERS, NOTIFIER, ROUTER], grpc_testing.strict_real_time())


class Caller:
    """Runs the client's blocking call on a daemon thread while the test plays the server."""

    def submit(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(call(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the test through the future
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True).start()  # a failed test never waits for it
        return future


@pytest.fixture
def pool() -> Caller:
    return Caller()


def client(channel: grpc_testing.Channel, **options: Any) -> Client:
    options.setdefault("retry", RetryPolicy(attempts=3, initial_backoff_s=0.001))
    return Client(channel, channel, channel, api_key="dex_secret", **options)


def order(
    order_id: str, status: common_pb2.OrderStatus.ValueType = common_pb2.ORDER_STATUS_PENDING
) -> common_pb2.Order:
    return common_pb2.Order(
        id=order_id, type="market", status=status, token_in=SOL, token_out=USDC, amount_in="1.5", slippage="0.01", seq=1
    )


def fail(rpc: Any, code: grpc.StatusCode, message: str, **details: Any) -> None:
    status = rich_status(RpcErrorInfo(code, message, **details))
    rpc.terminate(orders_pb2.CreateOrderResponse(), status.trailing_metadata, status.code, status.details)


def metadata_dict(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in metadata}


def test_create_order_sends_the_key_mints_and_an_idempotency_key(channel: grpc_testing.Channel, pool: Caller) -> None:
    placed: Future[Any] = pool.submit(client(channel, timeout=3).create_order, "sol", "USDC", Decimal("1.5"))
    metadata, request, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CreateOrder"])
    assert metadata_dict(metadata)["authorization"] == "Bearer dex_secret"
    assert (request.token_in, request.token_out, request.amount_in, request.slippage) == (SOL, USDC, "1.5", "0.01")
    assert uuid.UUID(request.idempotency_key)
    rpc.terminate(orders_pb2.CreateOrderResponse(order=order("o-1"), created=True), (), grpc.StatusCode.OK, "")
    result = placed.result(timeout=5)
    assert result.created and result.idempotency_key == request.idempotency_key
    assert (result.order.id, result.order.status, result.order.amount_in) == ("o-1", "pending", Decimal("1.5"))


def test_create_order_is_retried_on_unavailable_with_the_same_idempotency_key(
    channel: grpc_testing.Channel, pool: Caller
) -> None:
    placed: Future[Any] = pool.submit(client(channel).create_order, SOL, USDC, "2", idempotency_key="mine-1")
    keys = []
    for _ in range(2):
        _, request, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CreateOrder"])
        keys.append(request.idempotency_key)
        fail(rpc, grpc.StatusCode.UNAVAILABLE, "connection reset")
    _, request, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CreateOrder"])
    keys.append(request.idempotency_key)
    rpc.terminate(orders_pb2.CreateOrderResponse(order=order("o-2"), created=False), (), grpc.StatusCode.OK, "")
    assert keys == ["mine-1"] * 3
    assert placed.result(timeout=5).order.id == "o-2"


def test_retries_stop_at_the_policy_and_errors_keep_their_details(channel: grpc_testing.Channel, pool: Caller) -> None:
    placed: Future[Any] = pool.submit(client(channel).create_order, SOL, USDC, "1")
    for _ in range(3):
        _, _, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CreateOrder"])
        fail(rpc, grpc.StatusCode.UNAVAILABLE, "down")
    with pytest.raises(Unavailable):
        placed.result(timeout=5)

    placed = pool.submit(client(channel).create_order, SOL, USDC, "1")
    _, _, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CreateOrder"])
    fail(
        rpc,
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount_in: is below one base unit of SOL",
        reason="AMOUNT_TOO_SMALL",
        violations=[FieldViolation("amount_in", "is below one base unit of SOL (0.000000001)")],
    )
    with pytest.raises(InvalidArgument) as info:
        placed.result(timeout=5)
    assert info.value.reason == "AMOUNT_TOO_SMALL"
    assert [v.field for v in info.value.violations] == ["amount_in"]

    placed = pool.submit(client(channel).create_order, SOL, USDC, "1")
    _, _, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CreateOrder"])
    fail(rpc, grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", reason="QUOTA_EXCEEDED", retry_after_s=12.5)
    with pytest.raises(RateLimited) as limited:
        placed.result(timeout=5)
    assert (limited.value.reason, limited.value.retry_after_s) == ("QUOTA_EXCEEDED", 12.5)


def test_retries_stay_within_the_deadline(channel: grpc_testing.Channel, pool: Caller) -> None:
    slow = client(channel, timeout=0.05, retry=RetryPolicy(attempts=5, initial_backoff_s=0.001))
    placed: Future[Any] = pool.submit(slow.get_order, "o-5")
    _, _, rpc = channel.take_unary_unary(ORDERS.methods_by_name["GetOrder"])
    time.sleep(0.1)  # the whole deadline goes by in the first attempt
    fail(rpc, grpc.StatusCode.UNAVAILABLE, "down")
    with pytest.raises(Unavailable):
        placed.result(timeout=5)


def test_cancel_is_never_retried(channel: grpc_testing.Channel, pool: Caller) -> None:
    cancelled: Future[Any] = pool.submit(client(channel).cancel_order, "o-3")
    _, request, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CancelOrder"])
    assert request.order_id == "o-3"
    fail(rpc, grpc.StatusCode.UNAVAILABLE, "down")
    with pytest.raises(Unavailable):
        cancelled.result(timeout=5)

    cancelled = pool.submit(client(channel).cancel_order, "o-3")
    _, _, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CancelOrder"])
    fail(rpc, grpc.StatusCode.FAILED_PRECONDITION, "order is confirmed", reason="NOT_CANCELLABLE")
    with pytest.raises(Conflict) as info:
        cancelled.result(timeout=5)
    assert info.value.reason == "NOT_CANCELLABLE"


def test_money_is_never_a_float(channel: grpc_testing.Channel) -> None:
    with pytest.raises(TypeError, match="never a float"):
        client(channel).create_order(SOL, USDC, 1.5)  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(InvalidArgument, match="unknown token"):
        client(channel).create_order("DOGE", USDC, "1")


def test_watch_reopens_a_broken_stream_without_duplicates(channel: grpc_testing.Channel) -> None:
    received: queue.Queue[Any] = queue.Queue()

    def consume() -> None:
        try:
            for event in client(channel).watch("o-4"):
                received.put(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            received.put(exc)
        received.put(None)

    threading.Thread(target=consume, daemon=True).start()

    def event(seq: int, status: common_pb2.OrderStatus.ValueType, snapshot: bool = False) -> common_pb2.OrderEvent:
        data = common_pb2.EventData()
        if snapshot:
            order = common_pb2.Order(id="o-4", status=status)
            data.snapshot.CopyFrom(common_pb2.SnapshotEvent(snapshot=True, order=order))
        else:
            data.routing.attempt = 1
        return common_pb2.OrderEvent(order_id="o-4", status=status, seq=seq, data=data)

    def seen(count: int) -> list[Any]:
        return [received.get(timeout=5) for _ in range(count)]

    metadata, request, rpc = channel.take_unary_stream(NOTIFIER.methods_by_name["Watch"])
    assert request.order_id == "o-4" and metadata_dict(metadata)["authorization"] == "Bearer dex_secret"
    rpc.send_response(event(1, common_pb2.ORDER_STATUS_PENDING, snapshot=True))
    rpc.send_response(event(2, common_pb2.ORDER_STATUS_ROUTING))
    events = seen(2)
    rpc.terminate((), grpc.StatusCode.UNAVAILABLE, "notifier restarting")
    _, _, rpc = channel.take_unary_stream(NOTIFIER.methods_by_name["Watch"])
    rpc.send_response(event(2, common_pb2.ORDER_STATUS_ROUTING, snapshot=True))  # already yielded: skipped
    rpc.send_response(event(3, common_pb2.ORDER_STATUS_BUILDING))
    rpc.send_response(event(4, common_pb2.ORDER_STATUS_SUBMITTED))
    rpc.send_response(event(5, common_pb2.ORDER_STATUS_CONFIRMED))
    events += seen(4)
    rpc.terminate((), grpc.StatusCode.OK, "")
    assert events[-1] is None, "the stream ends after the terminal event"
    assert [(e.seq, e.status) for e in events[:-1]] == [
        (1, "pending"),
        (2, "routing"),
        (3, "building"),
        (4, "submitted"),
        (5, "confirmed"),
    ]
    assert events[0].snapshot and events[-2].terminal


def test_quote_maps_every_venue_and_the_decision(channel: grpc_testing.Channel, pool: Caller) -> None:
    quoted: Future[Any] = pool.submit(client(channel).quote, "SOL", "USDC", "300", "0.01")
    _, request, rpc = channel.take_unary_unary(ROUTER.methods_by_name["GetQuotes"])
    assert (request.token_in, request.amount_in) == (SOL, "300")
    response = router_pb2.GetQuotesResponse(
        quotes=[
            common_pb2.Quote(venue="raydium", amount_in="300", amount_out="44725.38", price="149.08", fee="0.75"),
            common_pb2.Quote(venue="meteora", amount_in="300", amount_out="44588.66", price="148.62", fee="0.40"),
        ],
        decision=router_pb2.Decision(
            venue="split",
            legs=[
                common_pb2.RouteLeg(venue="raydium", amount_in="180", amount_out="26867.28", min_amount_out="26598.6"),
                common_pb2.RouteLeg(venue="meteora", amount_in="120", amount_out="17924.36", min_amount_out="17745.1"),
            ],
            amount_out="44791.64",
            min_amount_out="44343.73",
            expected_price="149.30",
            reason="split 60 % raydium / 40 % meteora",
        ),
        simulated_ms=5,
    )
    rpc.terminate(response, (), grpc.StatusCode.OK, "")
    quotes = quoted.result(timeout=5)
    assert [q.venue for q in quotes.quotes] == ["raydium", "meteora"]
    assert quotes.venue == "split" and sum(leg.amount_in for leg in quotes.legs) == Decimal(300)
    assert quotes.to_json()["legs"][0]["amountOut"] == "26867.28"


def test_admin_calls_carry_the_internal_token_not_the_key(channel: grpc_testing.Channel, pool: Caller) -> None:
    admin = client(channel, admin_token="ops-token")
    created: Future[Any] = pool.submit(admin.create_key, "trading-bot", quota_per_min=120)
    metadata, request, rpc = channel.take_unary_unary(ORDERS.methods_by_name["CreateApiKey"])
    assert metadata_dict(metadata).get("x-dexengine-internal") == "ops-token"
    assert "authorization" not in metadata_dict(metadata)
    assert (request.name, request.quota_per_min) == ("trading-bot", 120)
    key = orders_pb2.ApiKey(id="k-1", name="trading-bot", prefix="dex_AbCd1234", quota_per_min=120)
    rpc.terminate(orders_pb2.CreateApiKeyResponse(key=key, secret="dex_AbCd1234rest"), (), grpc.StatusCode.OK, "")
    new = created.result(timeout=5)
    assert new.secret == "dex_AbCd1234rest" and new.key.active and new.key.quota_per_min == 120
