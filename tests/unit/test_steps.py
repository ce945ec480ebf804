"""Orders/Transition steps: each names its new status, the columns it writes and its typed event."""

from __future__ import annotations

import pytest

from dexengine.v1 import orders_pb2
from services.common import codec, states
from services.common.errors import ValidationFailed
from services.orders import steps
from tests.support import transitions

EDGES = [
    ("pending", "routing"),
    ("waiting", "routing"),
    ("waiting", "expired"),
    ("routing", "building"),
    ("building", "submitted"),
    ("submitted", "confirmed"),
    ("submitted", "routing"),
    ("building", "failed"),
]


@pytest.mark.parametrize(("current", "new"), EDGES)
def test_each_step_leads_where_it_says(current: str, new: str) -> None:
    request = transitions.request("o", current, new)
    effect = steps.effect(request, current)
    assert effect.new == new
    # The event's data is its status's message: it parses back into it, and nothing is lost on the way.
    ((status, data),) = effect.events
    typed = codec.event_data(status, data)
    assert typed.WhichOneof("detail") == new
    assert codec.event_data_to_json(typed) == data


def test_route_submit_is_two_events_in_one_commit() -> None:
    both = steps.effect(transitions.request("o", "routing", "submitted"), "routing")
    assert [status for status, _ in both.events] == ["building", "submitted"]
    route = steps.effect(transitions.request("o", "routing", "building"), "routing")
    submit = steps.effect(transitions.request("o", "building", "submitted"), "building")
    assert both.events == route.events + submit.events
    assert both.columns.routing == route.columns.routing and both.columns.tx_hash == submit.columns.tx_hash
    assert both.columns.expected_price == "149.86" and both.columns.signed_tx == b"\x01signed"
    with pytest.raises(ValidationFailed) as info:
        steps.effect(transitions.request("o", "routing", "submitted"), "building")
    assert [v.field for v in info.value.violations] == ["route_submit"]


def test_route_submit_from_pending_commits_the_attempts_routing_event_first() -> None:
    three = steps.effect(transitions.request("o", "pending", "submitted"), "pending")
    assert [status for status, _ in three.events] == ["routing", "building", "submitted"]
    assert three.events[0][1] == {"attempt": 1}, "the attempt begins (as begin would write it)"
    assert three.events[1:] == steps.effect(transitions.request("o", "routing", "submitted"), "routing").events
    assert not three.new_attempt, "the first attempt: retry_count stays"
    no_attempt = transitions.request("o", "pending", "submitted")
    no_attempt.route_submit.routing.attempt = 0
    no_attempt.route_submit.routing.venue = ""
    with pytest.raises(ValidationFailed) as info:
        steps.effect(no_attempt, "pending")
    assert {v.field for v in info.value.violations} == {
        "route_submit.routing.attempt",
        "route_submit.routing.venue",
    }, "route_submit's fields are named under route_submit"


def test_a_retry_may_start_from_pending_and_counts_an_attempt() -> None:
    # A first attempt that failed before its route_submit (no route, say): the order is still pending.
    retry = transitions.request("o", "routing", "routing")
    effect = steps.effect(retry, "pending")
    ((status, data),) = effect.events
    assert status == "routing" and data["previousStatus"] == "pending" and data["attempt"] == 2
    assert effect.new_attempt
    assert not steps.effect(transitions.request("o", "pending", "routing"), "pending").new_attempt, "begin"


def test_columns_come_from_the_step_not_the_caller() -> None:
    submit = steps.effect(transitions.request("o", "building", "submitted"), "building")
    assert submit.columns.tx_hash == transitions.SIGNATURE
    assert submit.columns.signed_tx == b"\x01signed" and submit.columns.last_valid_block_height == 1000
    assert "transaction" not in str(submit.columns.execution) and "transaction" not in str(submit.events)
    route = steps.effect(transitions.request("o", "routing", "building"), "routing")
    assert (route.columns.dex_provider, route.columns.expected_price) == ("meteora", "149.86")
    assert route.events == (("building", route.columns.routing),), "the building event is the routing decision"
    retry = steps.effect(transitions.request("o", "submitted", "routing"), "submitted")
    ((_, retried),) = retry.events
    assert retried["previousStatus"] == "submitted" and retried["retryIn"] == "0.1s"
    assert retry.columns.error_message == "SLIPPAGE_EXCEEDED: moved"


@pytest.mark.parametrize(
    ("current", "step"),
    [
        ("routing", orders_pb2.TransitionRequest(begin=orders_pb2.Begin(attempt=1))),
        ("pending", orders_pb2.TransitionRequest(expire=orders_pb2.Expire(expires_at="x"))),
        ("confirmed", transitions.request("o", "submitted", "failed")),
        ("expired", transitions.request("o", "submitted", "routing")),
    ],
)
def test_a_step_from_the_wrong_status_names_the_step(current: str, step: orders_pb2.TransitionRequest) -> None:
    with pytest.raises(ValidationFailed) as info:
        steps.effect(step, current)
    assert [v.field for v in info.value.violations] == [step.WhichOneof("step")]


def test_missing_or_malformed_fields_are_named() -> None:
    with pytest.raises(ValidationFailed) as none:
        steps.effect(orders_pb2.TransitionRequest(), states.PENDING)
    assert [v.field for v in none.value.violations] == ["step"]
    bad = transitions.request("o", "submitted", "confirmed")
    bad.confirm.executed_price = "1e999999"
    bad.confirm.amount_out = "abc"
    with pytest.raises(ValidationFailed) as info:
        steps.effect(bad, "submitted")
    assert {v.field for v in info.value.violations} == {"confirm.amount_out", "confirm.executed_price"}
