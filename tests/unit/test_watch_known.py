"""When a notifier may start a watch from the order its caller holds, and how long a gateway keeps one.

The rule (services.notifier.hub.Hub.nothing_newer): only when no event of the order later than the caller's
copy can have reached the hub before now, so that every later one is still to come.
"""

from __future__ import annotations

import time

import pytest

from dexengine.v1 import common_pb2
from services.gateway import order_feeds
from services.gateway.order_feeds import OrderFeeds
from services.notifier import hub as hubmod
from services.notifier.hub import CLOCK_MARGIN_S, Hub

ORDER = "6f1c1d2e-0000-4000-8000-000000000001"


def event(order_id: str, seq: int) -> dict[str, object]:
    return {"orderId": order_id, "seq": seq, "status": "pending"}


def live_hub(started_s_ago: float = 60.0) -> Hub:
    hub = Hub()
    hub.intake_since = time.time() - started_s_ago
    return hub


def test_an_order_created_after_the_intake_began_with_nothing_newer_seen_is_current() -> None:
    hub = live_hub()
    now = time.time()
    assert hub.nothing_newer(ORDER, 1, now)  # nothing seen of it yet: every event is still to come
    hub.publish(event(ORDER, 1))
    assert hub.nothing_newer(ORDER, 1, now)  # seen up to the caller's copy
    hub.publish(event(ORDER, 2))
    assert not hub.nothing_newer(ORDER, 1, now)  # seq 2 went by before the watcher subscribed
    assert hub.nothing_newer(ORDER, 2, now)
    hub.publish(event(ORDER, 1))  # a redelivery of an older message does not make the order older
    assert not hub.nothing_newer(ORDER, 1, now)


def test_without_an_unbroken_intake_since_the_order_was_created_nothing_is_trusted() -> None:
    hub = Hub()
    now = time.time()
    assert not hub.nothing_newer(ORDER, 1, now)  # never started
    hub.intake_up()
    assert not hub.nothing_newer(ORDER, 1, now)  # created before (or within the clocks' margin of) the start
    assert hub.nothing_newer(ORDER, 1, now + CLOCK_MARGIN_S + 0.5)
    hub.intake_down()
    assert not hub.nothing_newer(ORDER, 1, now + CLOCK_MARGIN_S + 0.5)  # events may be lost right now


def test_an_order_the_hub_may_have_forgotten_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hubmod, "SEEN_ORDERS", 3)
    hub = live_hub()
    created = time.time()
    hub.publish(event(ORDER, 5))
    for n in range(3):  # three other orders push it out
        hub.publish(event(f"other-{n}", 1))
    assert ORDER not in hub.seen
    # It was seen after its creation and forgotten: the hub cannot tell whether seq 5 went by.
    assert not hub.nothing_newer(ORDER, 1, created)
    # An order created after everything forgotten was last seen is still judged by what the hub remembers.
    assert hub.nothing_newer("new", 1, time.time() + CLOCK_MARGIN_S + 0.5)


def order(order_id: str) -> common_pb2.Order:
    return common_pb2.Order(id=order_id, seq=1)


def test_a_gateway_hands_a_created_order_to_its_first_feed_once_and_not_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feeds = OrderFeeds(stub=None)  # type: ignore[arg-type] # remember/take never call the notifier
    feeds.remember(order("a"))
    assert feeds._take_known("a") == order("a")
    assert feeds._take_known("a") is None  # the first feed only: a later one starts from a read
    clock = [1000.0]
    monkeypatch.setattr(order_feeds.time, "monotonic", lambda: clock[0])
    feeds.remember(order("b"))
    clock[0] += order_feeds.KNOWN_FOR_S
    assert feeds._take_known("b") is None  # too old to be worth sending


def test_a_gateway_keeps_a_bounded_number_of_created_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(order_feeds, "KNOWN_MAX", 2)
    feeds = OrderFeeds(stub=None)  # type: ignore[arg-type]
    for name in "abc":
        feeds.remember(order(name))
    assert list(feeds._known) == ["b", "c"]
